"""config.yaml's ``transcribe:`` section: which speech recognizer runs, and its settings.

Engines come from plugins (the ``register_transcribers`` hook; the builtin one is
PocketSphinx).  The section is resolved when config.yaml loads: an unknown engine or bad
settings are config errors.  The engine is only *needed* when a pipeline step says so at
load (``context.transcriber.require(...)`` in its ``prepare``, as ``transcribe`` does):
then the engine is asked whether it can run here and serve the step's grammar or
keywords, and the daemon starts it (voicews.runtime.transcription).  A config without
such a step starts no recognizer and loads none of its libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicews.config import typed
from voicews.config.engines import engine_settings, same_class

DEFAULT_ENGINE = "pocketsphinx"


@dataclass(frozen=True)
class TranscribeConfig:
    """Speech to text for ``transcribe`` steps."""

    engine: str = DEFAULT_ENGINE
    """A registered engine: pocketsphinx (builtin), or a plugin's (``register_transcribers``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The engine's settings (its ``Params``); pocketsphinx: workers, streams_per_worker,
    spare_decoders, partial_interval, max_backlog, vad_mode, window, ratio,
    keyword_threshold, stop_timeout, nice (voicews.engines.pocketsphinx_options)."""


class ConfiguredTranscriber:
    """The configured engine (made, not started) and whether any step needs it."""

    def __init__(self, config: TranscribeConfig, cls: type, params: Any) -> None:
        self.config = config
        self.name = config.engine
        self.cls = cls
        self.params = params
        self.engine: Any = cls(params) if params is not None else cls()
        """A ``voicews.engines.asr.Transcriber``; started by the runtime, if required."""
        self.required = False

    def require(self, *, grammar: list[str] | None = None,
                keywords: list[str] | None = None) -> None:
        """A step will open streams (with this grammar or these keywords): the engine must
        be able to run here (ValueError with its reason if not), and the daemon starts it."""
        self.engine.check(grammar=grammar, keywords=keywords)
        self.required = True

    def same_as(self, other: ConfiguredTranscriber | None) -> bool:
        """Configured alike, by the same class of the same file: a reload that leaves the
        running engine as it is.  (A plugin file is imported anew at each reload, so its
        classes are new objects: its code edited without a change to ``transcribe:``
        takes a restart.)"""
        return other is not None and self.config == other.config and same_class(
            self.cls, other.cls)


def resolve(config: TranscribeConfig | None, engines: dict[str, type]) -> ConfiguredTranscriber:
    """The engine `config` names (default: pocketsphinx), its settings loaded and checked."""
    config = config if config is not None else TranscribeConfig()
    cls, params = engine_settings("transcribe", config.engine, config.options, engines)
    try:
        return ConfiguredTranscriber(config, cls, params)
    except (TypeError, ValueError) as exc:
        raise typed.DataError("transcribe.options", str(exc)) from None
