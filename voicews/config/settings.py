"""config.yaml, read with PyYAML and validated into typed objects at start.

Every mistake is a :class:`ConfigError` whose message names the file, the key
and the problem, on one line, so that the daemon can stop with exactly that.
``${VAR}`` (or ``${VAR:-default}``) in any string value is replaced from the
environment, so secrets stay out of the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pluggy
import yaml

from voicews.audio.samples import parse_content_type
from voicews.config import plugins, typed
from voicews.config.transcribe import ConfiguredTranscriber, TranscribeConfig, resolve
from voicews.pipeline.processor import PrepareContext
from voicews.pipeline.steps import PipelineSpec, Step

ContentType = Literal["audio/l16;rate=8000", "audio/l16;rate=16000", "audio/l16;rate=24000"]


class ConfigError(Exception):
    """config.yaml cannot be used; the message is the one line a user needs."""


@dataclass(frozen=True)
class Security:
    """Who may talk to us: signed webhooks and socket handshake authorization."""

    signature_secret: str | None = None
    websocket_auth: Literal["none", "vonage", "custom"] = "none"
    websocket_token: str | None = None
    metrics_token: str | None = None
    control_token: str | None = None
    """Bearer token for the application's side: the control API (/calls), the event
    stream (/events) and the console.  Unset: those are off (refused)."""
    max_token_age: float = 300.0


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one caller or stray client from hurting the others."""

    max_calls: int = 1000
    first_message_bytes: int = 4096
    max_message_bytes: int = 8 * 960
    max_body_bytes: int = 64 * 1024
    handshake_timeout: float = 5.0
    first_message_timeout: float = 5.0
    idle_timeout: float = 30.0
    max_call_seconds: float = 7200.0
    max_lead_seconds: float = 1.0
    max_buffer_seconds: float = 60.0
    close_timeout: float = 5.0
    """Seconds a call's steps get to finish closing (flush a transcript, write a file)."""
    worker_threads: int = 4
    """Threads for ``session.run_in_thread`` work, shared by every call."""
    max_unsent_bytes: int = 512 * 1024
    """Output a call socket may have waiting for a peer that does not read (beyond
    Twisted's own 64 KB buffer and the kernel's); past it the connection is dropped."""
    max_burst_seconds: float = 10.0
    """How far a caller's audio may run ahead of real time (a burst after a network
    hiccup); a call sustaining more is closed (1008)."""
    text_per_second: float = 10.0
    """Text messages (DTMF, notify...) a call may send per second, sustained."""
    text_burst: int = 50
    """Text messages a call may send at once before ``text_per_second`` applies."""
    stall_seconds: float = 0.25
    """A reactor turn longer than this (a processor blocking every call) is logged,
    naming the call and step that ran, and counted."""


@dataclass(frozen=True)
class RawConfig:
    """config.yaml as written, type-checked; pipelines not yet resolved."""

    listen: str = "tcp:8080:interface=127.0.0.1"
    public_url: str | None = None
    trusted_proxies: list[str] = field(default_factory=list)
    content_type: ContentType = "audio/l16;rate=16000"
    greeting: str | None = None
    pipeline_header: str = "pipeline"
    default_pipeline: str = "echo"
    numbers: dict[str, str] = field(default_factory=dict)
    pipelines: dict[str, list[Any]] = field(default_factory=lambda: {"echo": ["echo"]})
    plugins: list[str] = field(default_factory=list)
    drain_timeout: float = 10.0
    log_format: Literal["text", "json"] = "text"
    fast_path: bool = True
    """Read and send call frames on voicews's fast path (see voicews/call/fastpath.py);
    false: autobahn's and Twisted's public path for every call."""
    security: Security = field(default_factory=Security)
    limits: Limits = field(default_factory=Limits)
    transcribe: TranscribeConfig | None = None
    """Speech to text for ``transcribe`` steps; unset: pocketsphinx with its defaults."""


@dataclass(frozen=True)
class Settings:
    """A loaded, validated config: what the running daemon uses."""

    path: Path
    raw: RawConfig
    pipelines: dict[str, PipelineSpec]
    transcriber: ConfiguredTranscriber | None = None
    """The speech recognizer, when a pipeline step needs one (the daemon starts it)."""

    @property
    def rate(self) -> int:
        rate = parse_content_type(self.raw.content_type)
        assert rate is not None
        return rate

    def pipeline_for_number(self, to: str | None) -> str:
        """The pipeline the answer NCCO asks for, by the called number."""
        if to:
            digits = to.lstrip("+")
            for number, pipeline in self.raw.numbers.items():
                if number.lstrip("+") == digits:
                    return pipeline
        return self.raw.default_pipeline


class DuplicateKey(Exception):
    """A mapping in config.yaml names the same key twice; `key` is its dotted path."""

    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(f"{key}: duplicate key (line {line}; first given on line {first})")


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping.

    Plain PyYAML keeps the last value silently, so a snippet pasted below a key
    the file already has would replace it without a word.  The check walks the
    composed node tree (which still knows lines) before constructing anything.
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, "")
        return self.construct_document(node)


def _check_unique_keys(node: yaml.Node, key: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, Any], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges, it does not repeat a key
                ident = (key_node.tag, key_node.value)
                path = typed._join(key, key_node.value)
                line = key_node.start_mark.line + 1
                if ident in seen:
                    raise DuplicateKey(path, line, seen[ident])
                seen[ident] = line
                _check_unique_keys(value_node, path)
            else:
                _check_unique_keys(value_node, key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, typed._join(key, i))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, key: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string value.

    A value that is nothing but one reference and comes out empty becomes null,
    so ``secret: ${SECRET:-}`` leaves the secret unset rather than empty.
    """
    if isinstance(data, dict):
        return {k: expand_env(v, typed._join(key, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, typed._join(key, i)) for i, v in enumerate(data)]
    if isinstance(data, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise typed.DataError(key, f"environment variable {name} is not set")

        expanded = _ENV.sub(replace, data)
        if expanded == "" and _ENV.fullmatch(data):
            return None  # `key: ${UNSET:-}` means the key is not set
        return expanded
    return data


def load_settings(path: str | os.PathLike[str], pm: pluggy.PluginManager | None = None) -> Settings:
    """Read, expand, type-check and resolve config.yaml; raise ConfigError on any problem."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKey as exc:
        raise ConfigError(f"{shown}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{shown}: YAML error{where}: {problem}") from None
    try:
        raw = typed.load(RawConfig, expand_env(data or {}))
        base_dir = path.resolve().parent
        if pm is None:
            pm = plugins.make_plugin_manager()
        # The plugins this config uses, as a restart would find them: the builtins, every
        # installed entry-point package (on SIGHUP too) and the modules and files listed.
        try:
            used = [*plugins.BUILTIN_PLUGINS, *plugins.register_entry_points(pm)]
        except plugins.PluginError as exc:
            raise ConfigError(str(exc)) from None
        for i, spec in enumerate(raw.plugins):
            try:
                name = plugins.load_plugin(pm, spec, base_dir)
            except plugins.PluginError as exc:
                raise typed.DataError(f"plugins[{i}]", str(exc)) from None
            if name not in used:
                used.append(name)
        try:
            processors = plugins.collect_processors(pm, only=used)
            recognizers = plugins.collect_engines(
                pm, "register_transcribers", "speech recognizer",
                ("check", "start", "stop", "open"), only=used)
        except plugins.PluginError as exc:
            raise typed.DataError("plugins", str(exc)) from None
        transcriber = resolve(raw.transcribe, recognizers)
        pipelines = {
            name: _resolve_pipeline(name, steps, processors, base_dir, transcriber)
            for name, steps in raw.pipelines.items()
        }
        _check_references(raw)
    except typed.DataError as exc:
        raise ConfigError(f"{shown}: {exc}") from None
    return Settings(path=path, raw=raw, pipelines=pipelines,
                    transcriber=transcriber if transcriber.required else None)


def _resolve_pipeline(
    name: str, steps: list[Any], processors: dict[str, type], base_dir: Path,
    transcriber: ConfiguredTranscriber,
) -> PipelineSpec:
    key = f"pipelines.{name}"
    if not steps:
        raise typed.DataError(key, "a pipeline needs at least one step")
    resolved = []
    for i, step in enumerate(steps):
        step_key = f"{key}[{i}]"
        if isinstance(step, str):
            proc_name, params = step, None
        elif isinstance(step, dict) and len(step) == 1:
            ((proc_name, params),) = step.items()
        else:
            raise typed.DataError(
                step_key, "a step is a processor name or a one-key mapping {name: {params}}"
            )
        if proc_name not in processors:
            known = ", ".join(sorted(processors))
            raise typed.DataError(
                step_key, f"unknown processor {proc_name!r} (known processors: {known})"
            )
        cls = processors[proc_name]
        param_key = f"{step_key}.{proc_name}"
        loaded = typed.load(cls.Params, params, param_key)
        try:
            context = PrepareContext(config_dir=base_dir, key=param_key, transcriber=transcriber,
                                     steps=tuple(_step_name(s) for s in steps))
            prepared = cls.prepare(loaded, context)
        except typed.DataError:
            raise
        except (ValueError, OSError) as exc:
            raise typed.DataError(param_key, str(exc)) from None
        resolved.append(Step(name=proc_name, processor=cls, params=prepared))
    return PipelineSpec(name=name, steps=tuple(resolved))


def _step_name(step: Any) -> str:
    """The processor name of a step as written (checked when the step itself is resolved)."""
    if isinstance(step, dict) and len(step) == 1:
        return str(next(iter(step)))
    return str(step)


def _check_references(raw: RawConfig) -> None:
    if raw.default_pipeline not in raw.pipelines:
        raise typed.DataError(
            "default_pipeline", f"no pipeline named {raw.default_pipeline!r} in pipelines"
        )
    for number, name in raw.numbers.items():
        if name not in raw.pipelines:
            raise typed.DataError(f"numbers.{number}", f"no pipeline named {name!r} in pipelines")
    if not raw.pipeline_header:
        raise typed.DataError("pipeline_header", "must not be empty")
    if raw.public_url is not None and not re.match(r"^(https?|wss?)://[^/\s]+", raw.public_url):
        raise typed.DataError(
            "public_url", f"expected http(s)://host[:port][/path], got {raw.public_url!r}"
        )
    for i, entry in enumerate(raw.trusted_proxies):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise typed.DataError(
                f"trusted_proxies[{i}]", f"expected an IP address or network, got {entry!r}"
            ) from None
    sec = raw.security
    if sec.websocket_auth == "custom" and not sec.websocket_token:
        raise typed.DataError("security.websocket_token", "required when websocket_auth is custom")
    if sec.websocket_auth == "vonage" and not sec.signature_secret:
        raise typed.DataError("security.signature_secret", "required when websocket_auth is vonage")
    if sec.websocket_auth == "custom" and not sec.signature_secret:
        # The token goes out in the answer NCCO: unsigned, anyone could ask for it.
        raise typed.DataError(
            "security.signature_secret",
            "required when websocket_auth is custom (the answer NCCO carries websocket_token, "
            "so unsigned answer webhooks would give it to anyone)",
        )
    for name in ("max_calls", "first_message_bytes", "max_message_bytes", "max_body_bytes",
                 "worker_threads", "max_unsent_bytes", "max_burst_seconds", "text_per_second",
                 "text_burst", "stall_seconds"):
        if getattr(raw.limits, name) <= 0:
            raise typed.DataError(f"limits.{name}", "must be greater than 0")
