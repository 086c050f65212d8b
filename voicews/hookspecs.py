"""The hooks a voicews plugin may implement, and the markers for them.

Builtin processors and users' plugins implement these the same way; there is no
other door into the daemon.  pluggy calls hooks with keyword arguments, and an
implementation may take any subset of a hook's arguments.  Mark implementations
with ``@voicews.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from voicews.pipeline.session import Session

hookspec = pluggy.HookspecMarker("voicews")
hookimpl = pluggy.HookimplMarker("voicews")


@hookspec
def register_processors(register: Callable[[type], None]) -> None:
    """Register processor classes by calling ``register(cls)`` once per class.

    ``cls`` subclasses :class:`voicews.Processor`; its ``name`` attribute is the
    name config.yaml uses in a pipeline step.
    """


@hookspec
def register_transcribers(register: Callable[[type], None]) -> None:
    """Register speech recognizer classes by calling ``register(cls)`` once per class.

    ``cls.name`` is the name config.yaml's ``transcribe.engine`` uses; ``cls.Params``, if
    any, is a dataclass of the engine's settings, loaded (type-checked) from
    ``transcribe.options``.  The daemon makes one engine, ``cls(params)`` (``cls()``
    without Params), when a pipeline needs one, starts it with the daemon and lends it
    to every call (``session.transcriber``).  An engine satisfies
    ``voicews.engines.asr.Transcriber``: ``check`` (at config load), ``start``/``stop``
    (Deferreds), ``open(rate, on_result, ...)`` a stream per call that never blocks the
    reactor.  The builtin engine is PocketSphinx (voicews.processors.pocketsphinx).
    """


@hookspec
def register_tts(register: Callable[[type], None]) -> None:
    """Register text-to-speech engine classes by calling ``register(cls)`` once per class.

    ``cls.name`` is the name config.yaml's ``tts.engine`` uses; ``cls.Params``, if any, is a
    dataclass of the engine's settings, loaded (type-checked) from ``tts.options``; the
    daemon makes one engine, ``cls(params)`` (``cls()`` without Params), and every call
    shares it.  An engine satisfies ``voicews.engines.tts.TextToSpeech``: ``check(voice,
    **options)`` raises ValueError at config load when it cannot speak (missing binary,
    no credentials), ``synthesize(text, rate, voice, **options)`` returns a Deferred of
    int16 samples at the call's rate and must never block the reactor.  An optional
    ``close()`` (may return a Deferred) runs when the daemon stops.
    """


@hookspec
def services(runtime: Any) -> Any:
    """Process-wide services this plugin needs: an ``IService``, a list of them, or None.

    Called once when the daemon starts, with the daemon's Runtime (its ``clock``,
    ``settings``, live ``calls``).  The services start with the daemon and are
    stopped, and their ``stopService`` Deferreds awaited (up to ``drain_timeout``),
    after every call has ended: a writer thread flushing files, a connection pool,
    a model loaded once for every call.
    """


@hookspec
def call_started(session: Session) -> None:
    """A call's pipeline has started; ``session`` is the call's own (not a step's).

    Runs once per call, on the reactor, after every step's ``start()`` was called.
    ``session.info`` says which call; ``session.emit``, ``session.play``, ``session.say``
    act on it (the head of the mix bus).
    """


@hookspec
def call_ended(session: Session, outcome: str) -> None:
    """A call has ended and every step's ``close()`` has finished (or timed out).

    ``outcome`` is the reason, as in ``voicews_calls_total``: ``hangup``, ``idle``,
    ``error``, ``drained``, ``hangup_api``, ...  Runs once per call whose pipeline started.
    """


@hookspec
def stop() -> object:
    """The daemon is stopping and its calls have ended (every processor's ``close`` ran).

    Return a Deferred to make the daemon wait for it before exiting (e.g. files
    still being written by a thread), or None.  Waited for at most ``drain_timeout``.
    Prefer the ``services`` hook for anything that also needs starting.
    """
