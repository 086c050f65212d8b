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
from voicews.config import tts as speech
from voicews.config.sections import Cluster, Control, Events, Limits, Security
from voicews.config.transcribe import ConfiguredTranscriber, TranscribeConfig, resolve
from voicews.config.tts import ConfiguredTts, Tts
from voicews.config.yamlfile import DuplicateKey, UniqueKeyLoader, expand_env
from voicews.engines.tts import EngineUnavailable
from voicews.pipeline.processor import PrepareContext, Processor
from voicews.pipeline.steps import PipelineSpec, Step

ContentType = Literal["audio/l16;rate=8000", "audio/l16;rate=16000", "audio/l16;rate=24000"]


class ConfigError(Exception):
    """config.yaml cannot be used; the message is the one line a user needs."""


@dataclass(frozen=True)
class RawConfig:
    """config.yaml as written, type-checked; pipelines not yet resolved."""

    listen: str = "tcp:8080:interface=127.0.0.1"
    """Where to listen: a Twisted endpoint string (``tcp:8080:interface=127.0.0.1``,
    ``tcp:8080``, ``ssl:8443:privateKey=key.pem:certKey=cert.pem``,
    ``systemd:domain=INET:index=0``); ``twistd voicews --listen`` overrides it."""
    public_url: str | None = None
    """The public base URL Vonage reaches us at (``https://voice.example.com``); the answer
    NCCO then points Vonage at ``wss://<host>/socket``.  Unset: the socket URL is built
    from the answer request's Host (``wss://`` over TLS, or with X-Forwarded-Proto: https
    from a trusted proxy)."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses or networks (CIDR) of proxies whose X-Forwarded-Host / -Proto headers are
    believed; empty: none are."""
    content_type: ContentType = "audio/l16;rate=16000"
    """The audio format the answer NCCO asks Vonage to stream."""
    greeting: str | None = None
    """Spoken to the caller by Vonage's text-to-speech before the socket connects."""
    pipeline_header: str = "pipeline"
    """The key, in the NCCO's websocket headers and so in the socket's first message, whose
    value names the call's pipeline."""
    default_pipeline: str = "echo"
    """The pipeline used when no number-specific one applies and when a socket's first
    message has no pipeline key."""
    numbers: dict[str, str] = field(default_factory=dict)
    """Called number (the answer webhook's ``to``) to pipeline name; a leading + is ignored."""
    pipelines: dict[str, list[Any]] = field(default_factory=lambda: {"echo": ["echo"]})
    """Pipeline name to its steps, run in order on every 20 ms frame.  A step is a processor
    name (``- echo``) or a one-key mapping with its parameters (``- gain: {db: 6}``)."""
    plugins: list[str] = field(default_factory=list)
    """Extra processor plugins: module names, or ``.py`` files relative to config.yaml."""
    drain_timeout: float = 10.0
    """Seconds live calls get to end after SIGTERM before they are dropped."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as text, or json (one JSON object per line, for log shippers)."""
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    """The least important log lines shown: ``debug`` adds one line per notify / cleared
    event Vonage sends back (a bot marking every chunk makes 50 a second per call)."""
    fast_path: bool = True
    """Read and send call frames on voicews's fast path (see voicews/call/fastpath.py);
    false: autobahn's and Twisted's public path for every call."""
    security: Security = field(default_factory=Security)
    """Who may talk to the daemon (see below)."""
    limits: Limits = field(default_factory=Limits)
    """Bounds on calls, messages and time (see below)."""
    events: Events = field(default_factory=Events)
    """Call events to the application: HTTP callbacks and the /events stream (see below)."""
    control: Control = field(default_factory=Control)
    """The control API (see below)."""
    cluster: Cluster = field(default_factory=Cluster)
    """Several workers acting as one through Redis (see below)."""
    transcribe: TranscribeConfig | None = None
    """Speech to text for ``transcribe`` steps; unset: pocketsphinx with its defaults."""
    tts: Tts = field(default_factory=Tts)
    """Text to speech for ``say`` steps and ``session.say`` (see below).  Checked at start
    (the engine can speak, in that voice) when this section is given or a pipeline uses
    ``say``."""


@dataclass(frozen=True)
class Settings:
    """A loaded, validated config: what the running daemon uses."""

    path: Path
    raw: RawConfig
    pipelines: dict[str, PipelineSpec]
    tts: ConfiguredTts
    """The text-to-speech engine (``tts``), resolved: the Runtime owns it."""
    prompts: Path | None = None
    """``control.prompts`` resolved: an existing folder, or None (no /play)."""
    transcriber: ConfiguredTranscriber | None = None
    """The speech recognizer, when a pipeline step needs one (the daemon starts it)."""
    disabled: dict[str, str] = field(default_factory=dict)
    """Pipelines left out because a step needs an engine this machine does not have (e.g.
    espeak-ng not installed): name -> why, a config key and the reason.  Not in
    ``pipelines``; the daemon logs a warning for each at start and reload."""

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
            engines = plugins.collect_engines(pm, "register_tts", "text-to-speech engine",
                                              ("check", "synthesize"), only=used)
            recognizers = plugins.collect_engines(
                pm, "register_transcribers", "speech recognizer",
                ("check", "start", "stop", "open"), only=used)
        except plugins.PluginError as exc:
            raise typed.DataError("plugins", str(exc)) from None
        tts = speech.resolve(raw.tts, engines)
        if isinstance(data, dict) and "tts" in data:  # configured: it must be able to speak
            speech.check(tts, "tts")
        transcriber = resolve(raw.transcribe, recognizers)
        pipelines: dict[str, PipelineSpec] = {}
        disabled: dict[str, str] = {}
        routed = {raw.default_pipeline, *raw.numbers.values()}
        for name, steps in raw.pipelines.items():
            required = transcriber.required
            try:
                pipelines[name] = _resolve_pipeline(name, steps, processors, base_dir,
                                                    transcriber, tts)
            except _Unavailable as exc:
                if name in routed:  # the daemon itself sends calls there: it must run
                    raise typed.DataError(exc.key, exc.reason) from None
                disabled[name] = f"{exc.key}: {exc.reason}"
                transcriber.required = required  # its steps will never run
        _check_references(raw)
        _check_cluster(raw.cluster)
        prompts = _prompts_folder(raw.control, base_dir)
    except typed.DataError as exc:
        raise ConfigError(f"{shown}: {exc}") from None
    return Settings(path=path, raw=raw, pipelines=pipelines, tts=tts, prompts=prompts,
                    transcriber=transcriber if transcriber.required else None,
                    disabled=disabled)


def _prompts_folder(control: Control, base_dir: Path) -> Path | None:
    if control.prompts is None:
        return None
    folder = Path(control.prompts).expanduser()
    folder = (folder if folder.is_absolute() else base_dir / folder).resolve()
    if not folder.is_dir():
        raise typed.DataError("control.prompts", f"no such folder: {folder}")
    return folder


def _check_cluster(cluster: Cluster) -> None:
    """A bad Redis URL or timing stops the start; voicews.cluster is imported only when used
    (it brings txredisapi, which binds the installed reactor)."""
    if cluster.redis is None:
        return
    from voicews.cluster import ClusterOptions, parse_redis_url

    try:
        parse_redis_url(cluster.redis)
    except ValueError as exc:
        raise typed.DataError("cluster.redis", str(exc)) from None
    try:
        ClusterOptions(prefix=cluster.prefix, refresh=cluster.refresh, ttl=cluster.ttl,
                       request_timeout=cluster.request_timeout)
    except ValueError as exc:
        raise typed.DataError("cluster", str(exc).removeprefix("cluster: ")) from None


def _resolve_pipeline(
    name: str, steps: list[Any], processors: dict[str, type[Processor]], base_dir: Path,
    transcriber: ConfiguredTranscriber, tts: ConfiguredTts,
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
        loaded: Any = typed.load(cls.Params, params, param_key)
        try:
            context = PrepareContext(config_dir=base_dir, key=param_key, transcriber=transcriber,
                                     steps=tuple(_step_name(s) for s in steps), tts=tts)
            prepared = cls.prepare(loaded, context)
        except typed.DataError:
            raise
        except EngineUnavailable as exc:
            raise _Unavailable(param_key, str(exc)) from None
        except (ValueError, OSError) as exc:
            raise typed.DataError(param_key, str(exc)) from None
        resolved.append(Step(name=proc_name, processor=cls, params=prepared))
    return PipelineSpec(name=name, steps=tuple(resolved))


class _Unavailable(Exception):
    """A step needs an engine this machine does not have (voicews.engines.tts.EngineUnavailable):
    its pipeline is left out, unless the daemon routes calls to it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


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
    _check_events(raw.events)
    for name in ("max_calls", "first_message_bytes", "max_message_bytes", "max_body_bytes",
                 "worker_threads", "max_unsent_bytes", "max_burst_seconds", "text_per_second",
                 "text_burst", "stall_seconds"):
        if getattr(raw.limits, name) <= 0:
            raise typed.DataError(f"limits.{name}", "must be greater than 0")


def _check_events(events: Events) -> None:
    if events.url is not None and not re.match(r"^https?://[^/\s]+", events.url):
        raise typed.DataError("events.url", f"expected http(s)://host[:port][/path], got "
                              f"{events.url!r}")
    for name in ("batch_size", "connections", "max_queue", "max_queue_bytes", "stream_queue",
                 "stream_queue_bytes", "timeout", "backoff", "max_backoff", "stream_timeout",
                 "keepalive"):
        if getattr(events, name) <= 0:
            raise typed.DataError(f"events.{name}", "must be greater than 0")
    for name in ("retries", "batch_delay"):
        if getattr(events, name) < 0:
            raise typed.DataError(f"events.{name}", "must not be negative")
    if events.max_queue < events.connections:
        raise typed.DataError("events.max_queue", "must be at least events.connections")
