"""config.yaml's ``tts:`` section: which text-to-speech engine speaks, its voice, its settings.

Engines come from plugins (the ``register_tts`` hook; the builtin one is eSpeak NG).  The
section is resolved when config.yaml loads: an unknown engine or bad settings are config
errors, and when the section is given or a pipeline uses ``say``, the engine is asked
whether it can speak (a missing espeak-ng binary is an error naming its Debian package;
for a pipeline the daemon does not route calls to, it leaves that pipeline out instead:
voicews.config.settings).
Without the section and without ``say``, nothing is checked: a plugin calling
``session.say`` then finds out at its first call.

The Runtime holds the one :class:`ConfiguredTts` every call shares (``CallServices.tts``)
and closes its engine when the daemon stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from voicews.config import typed
from voicews.config.engines import engine_settings, same_class

DEFAULT_ENGINE = "espeak-ng"


@dataclass(frozen=True)
class Tts:
    """Text to speech for ``say`` steps and ``session.say``: which engine speaks (engines
    register through the ``register_tts`` hook), its default voice and its settings.  See
    [Voice AI](voice-ai.md)."""

    engine: str = DEFAULT_ENGINE
    """A registered engine: espeak-ng (builtin), or a plugin's (``register_tts``)."""
    voice: str | None = None
    """The voice used when a step or ``session.say`` names none; unset: the engine's own
    default (espeak-ng: ``options.voice``, en-us)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The engine's settings (its ``Params``); espeak-ng: binary, voice, max_chars,
    max_seconds, timeout, max_processes, max_waiting, cache_bytes."""


class ConfiguredTts:
    """The configured engine, made on first use; a TextToSpeech applying the default voice."""

    def __init__(self, name: str, cls: type, params: Any, voice: str | None) -> None:
        self.name = name
        self.cls = cls
        self.params = params
        self.voice = voice
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The engine instance (ValueError when its settings are refused)."""
        if self._engine is None:
            self._engine = self.cls(self.params) if self.params is not None else self.cls()
        return self._engine

    def check(self, voice: str | None = None, **options: object) -> None:
        self.engine.check(voice or self.voice, **options)

    def synthesize(self, text: str, rate: int, voice: str | None = None,
                   **options: object) -> defer.Deferred[Any]:
        try:
            engine = self.engine
        except ValueError as exc:
            return defer.fail(exc)
        return engine.synthesize(text, rate, voice or self.voice, **options)

    def same_as(self, other: ConfiguredTts) -> bool:
        """Configured alike, by the same class of the same file: a reload that leaves the
        engine, and its cache, as they are."""
        return (self.name, self.params, self.voice) == (
            other.name, other.params, other.voice) and same_class(self.cls, other.cls)

    def close(self) -> defer.Deferred[Any]:
        """Stop the engine, if it was made and can be stopped."""
        engine, self._engine = self._engine, None
        close = getattr(engine, "close", None)
        if close is None:
            return defer.succeed(None)
        return defer.maybeDeferred(close)


def resolve(config: Tts, engines: dict[str, type]) -> ConfiguredTts:
    """The engine `config` names, with its settings loaded (not yet asked to speak)."""
    cls, params = engine_settings("tts", config.engine, config.options, engines)
    tts = ConfiguredTts(config.engine, cls, params, config.voice)
    try:
        tts.engine  # noqa: B018 - made now so that its settings are checked at load
    except ValueError as exc:
        raise typed.DataError("tts.options", str(exc)) from None
    return tts


def check(tts: ConfiguredTts, key: str, voice: str | None = None, **options: object) -> None:
    """Can `tts` speak (in `voice`, with `options`)?  A DataError at `key` if not."""
    try:
        tts.check(voice, **options)
    except ValueError as exc:
        raise typed.DataError(key, str(exc)) from None
