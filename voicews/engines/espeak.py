"""eSpeak NG text to speech: the ``espeak-ng`` binary (Debian package ``espeak-ng``), as a child.

One synthesis is one process: ``espeak-ng --stdout --stdin -b 1 -v VOICE [options]`` spawned
with Twisted (never a shell), the text written to its stdin (so text starting with "-" is
spoken, never parsed as an option) and a 22050 Hz WAV read from its stdout.  The WAV is decoded
with libsndfile and resampled with libsoxr (voicews.audio.files.resample) in the reactor's
thread pool, since that costs ~1 ms a second of speech, too long for the reactor on a long text.

Bounds, because the text comes from callers' apps and 100 calls may speak at once:
- text length (``max_chars``, after white space is collapsed), audio length (``max_seconds``:
  the process is killed past it), and run time (``timeout``: the process is killed and the
  Deferred fails with SpeechError);
- at most ``max_processes`` children at a time (a DeferredSemaphore), at most ``max_waiting``
  texts queued behind them (more fail at once with SpeechError: the engine is busy);
- results are cached by (text, voice, rate, options) in a SpeechCache of ``cache_bytes``, and
  callers asking for a text already being synthesized share that one process.

eSpeak reads ``[[...]]`` in text as phoneme mnemonics (its documented input feature); SSML is
off (no ``-m``), so markup is read out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
from twisted.internet import defer, error, protocol
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicews.engines.tts import (
    EngineUnavailable,
    SpeechCache,
    SpeechError,
    check_rate,
    clean_text,
    decode_audio,
    no_speech,
)

log = Logger()

MISSING = "espeak-ng not found: install the Debian package espeak-ng"
OPTIONS = {
    # name: (flag, lowest, highest) -- espeak-ng's own ranges
    "speed": ("-s", 80, 450),  # words per minute (default 175)
    "pitch": ("-p", 0, 99),  # default 50
    "amplitude": ("-a", 0, 200),  # default 100
    "word_gap": ("-g", 0, 100),  # extra pause between words, in 10 ms units
}
_VOICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_()./ -]{0,63}")
_VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_STDERR_KEPT = 2000


@dataclass(frozen=True)
class EspeakParams:
    """How the engine runs: config.yaml parameters of the ``say`` step's engine."""

    binary: str = "espeak-ng"
    voice: str = "en-us"
    """The default voice: a language (en-us, fr), a voice file (gmw/en-US), + a variant (+f3)."""
    max_chars: int = 1000
    max_seconds: float = 300.0
    timeout: float = 10.0
    max_processes: int = 2
    max_waiting: int = 1000
    cache_bytes: int = 32 * 2**20

    def check(self) -> None:
        """Raise ValueError with a one-line reason when a number is out of range."""
        for name, low, high in (("max_chars", 1, 100_000), ("max_processes", 1, 64),
                                ("max_waiting", 0, 1_000_000), ("cache_bytes", 0, 2**34)):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} must be a whole number from {low} to {high}, "
                                 f"got {value!r}")
        for name in ("max_seconds", "timeout"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 < value <= 3600:
                raise ValueError(f"{name} must be seconds above 0, at most 3600, got {value!r}")


def option_args(options: dict[str, object]) -> list[str]:
    """espeak-ng flags for `options`, or ValueError naming the bad one."""
    args = []
    for name, value in sorted(options.items()):
        if name not in OPTIONS:
            raise ValueError(f"unknown espeak-ng option {name!r} "
                             f"(known: {', '.join(sorted(OPTIONS))})")
        flag, low, high = OPTIONS[name]
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, "
                             f"got {value!r}")
        args += [flag, str(value)]
    return args


def check_voice_name(voice: object) -> str:
    """`voice` if it is shaped like an eSpeak voice (so never an option), else ValueError."""
    if isinstance(voice, str):
        base, _, variant = voice.partition("+")
        if _VOICE.fullmatch(base) and (not variant or _VARIANT.fullmatch(variant)):
            return voice
    raise ValueError(f"not an espeak-ng voice name: {voice!r}")


class Espeak:
    """The eSpeak NG engine (a TextToSpeech).  One per daemon: calls share its cache and limit."""

    name = "espeak-ng"

    def __init__(self, params: EspeakParams | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.params = params if params is not None else EspeakParams()
        self.params.check()
        self.cache = SpeechCache(self.params.cache_bytes)
        self.processes_started = 0
        self._reactor = reactor
        self._limit = DeferredSemaphore(self.params.max_processes)
        self._jobs: dict[tuple, _Job] = {}
        self._children: set[_Synthesis] = set()
        self._closed = False
        self._path: str | None = None
        self._voices_checked: set[str] = set()

    def path(self) -> str:
        """The binary's full path, or EngineUnavailable naming the Debian package."""
        if self._path is None:
            found = shutil.which(self.params.binary)
            if found is None:
                if self.params.binary == EspeakParams.binary:
                    raise EngineUnavailable(MISSING)
                raise EngineUnavailable(f"{self.params.binary} not found: install the Debian "
                                        "package espeak-ng, or set binary to its path")
            self._path = found
        return self._path

    def check(self, voice: str | None = None, **options: object) -> None:
        """The binary runs, `voice` (default: params.voice) exists, `options` are valid.

        Runs espeak-ng synchronously (~20 ms, once per voice): it is meant for config load,
        before the reactor runs.  An unknown variant (``en-us+nosuch``) is refused here
        because espeak-ng itself ignores it silently.
        """
        option_args(options)
        voice = check_voice_name(voice or self.params.voice)
        path = self.path()
        if voice in self._voices_checked:
            return
        base, _, variant = voice.partition("+")
        try:
            probe = subprocess.run([path, "-q", "--stdin", "-v", base], input=b"",
                                   capture_output=True, timeout=10, env=_child_env())
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError(f"{path} does not run: {exc}") from None
        if _no_such_voice(probe.returncode != 0, probe.stderr.decode(errors="replace")):
            raise ValueError(f"espeak-ng has no voice {base!r} (espeak-ng --voices lists them)")
        if probe.returncode:
            raise ValueError(f"{path} failed (exit {probe.returncode}): "
                             f"{_last_line(probe.stderr)}")
        if variant and variant not in _variants(path):
            raise ValueError(f"espeak-ng has no voice variant {variant!r} "
                             "(espeak-ng --voices=variant lists them)")
        self._voices_checked.add(voice)

    def synthesize(self, text: str, rate: int, voice: str | None = None,
                   **options: object) -> Deferred[np.ndarray]:
        try:
            text = clean_text(text, self.params.max_chars)
            check_rate(rate)
            voice = check_voice_name(voice or self.params.voice)
            args = option_args(options)
            path = self.path()
        except ValueError as exc:
            return defer.fail(exc)
        if self._closed:
            return defer.fail(SpeechError("espeak-ng engine closed"))
        if not text:
            return defer.succeed(no_speech())
        key = (text, voice, rate, tuple(sorted(options.items())))
        cached = self.cache.get(key)
        if cached is not None:
            return defer.succeed(cached)
        job = self._jobs.get(key)
        if job is None:
            if len(self._limit.waiting) >= self.params.max_waiting:
                return defer.fail(SpeechError(
                    f"espeak-ng is busy: {len(self._limit.waiting)} texts waiting"))
            argv = [path, "--stdout", "--stdin", "-b", "1", "-v", voice, *args]
            job = self._jobs[key] = _Job(self, key, argv, text, voice, rate)
            job.start()
        return job.waiter()

    def close(self) -> Deferred[None]:
        """Stop speaking: fail every caller still waiting, kill the running children.

        Fires when every child has ended (for a service's stopService, and for tests).
        """
        self._closed = True
        for job in list(self._jobs.values()):
            job.stop(SpeechError("espeak-ng engine closed"))
        ended = [child.ended for child in self._children]
        return defer.DeferredList(ended).addCallback(lambda _: None)

    def _finished(self, job: _Job) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]


class _Job:
    """One synthesis, and every caller waiting for it."""

    def __init__(self, engine: Espeak, key: tuple, argv: list[str], text: str, voice: str,
                 rate: int) -> None:
        self.engine = engine
        self.key = key
        self.argv = argv
        self.text = text
        self.voice = voice
        self.rate = rate
        self.waiters: list[Deferred[np.ndarray]] = []
        self.acquiring: Deferred[Any] | None = None
        self.child: _Synthesis | None = None

    def waiter(self) -> Deferred[np.ndarray]:
        waiter: Deferred[np.ndarray] = Deferred(self._cancelled)
        self.waiters.append(waiter)
        return waiter

    def start(self) -> None:
        # Fires at once when a process slot is free: _run then clears self.acquiring.
        acquiring = self.acquiring = self.engine._limit.acquire()
        acquiring.addCallback(self._run).addErrback(self._failed)

    def _run(self, _: object) -> Deferred[None]:
        from twisted.internet.threads import deferToThreadPool

        self.acquiring = None
        engine = self.engine
        reactor = engine._reactor
        output: Deferred[bytes] = Deferred()
        self.child = _Synthesis(self.text.encode(), self.voice, engine.params, output, reactor)
        engine.processes_started += 1
        try:
            reactor.spawnProcess(self.child, self.argv[0], self.argv, env=_child_env())
        except OSError as exc:  # fork failed: out of processes or memory
            self._release(None)
            raise SpeechError(f"cannot start {self.argv[0]}: {exc}") from None
        engine._children.add(self.child)
        self.child.ended.addCallback(engine._children.discard)
        output.addBoth(self._release)
        output.addCallback(lambda wav: deferToThreadPool(
            reactor, reactor.getThreadPool(), decode_wav, wav, self.rate))
        return output.addCallbacks(self._succeeded, self._failed)

    def _release(self, result: object) -> object:
        self.child = None
        self.engine._limit.release()
        return result

    def _succeeded(self, samples: np.ndarray) -> None:
        self.engine._finished(self)
        self.engine.cache.put(self.key, samples)
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(samples)

    def _failed(self, failure: Failure) -> None:
        self.engine._finished(self)
        waiters, self.waiters = self.waiters, []
        if not waiters:
            return  # every caller went away: nothing to tell
        if not failure.check(SpeechError, ValueError):
            log.failure("espeak-ng synthesis failed", failure)
            failure = Failure(SpeechError(f"espeak-ng failed: {failure.getErrorMessage()}"))
        for waiter in waiters:
            waiter.errback(failure)

    def _cancelled(self, waiter: Deferred[np.ndarray]) -> None:
        """A caller gave up; the last one to leave stops the work (queued or running)."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        if not self.waiters:
            self.stop(defer.CancelledError())

    def stop(self, error: Exception) -> None:
        """Fail the callers still waiting with `error`, and stop the work, queued or running."""
        self.engine._finished(self)
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.errback(error)
        if self.acquiring is not None:
            self.acquiring.cancel()
        elif self.child is not None:
            self.child.kill("stopped")


class _Synthesis(protocol.ProcessProtocol):
    """One espeak-ng child: text in, WAV out, killed on timeout or too much output."""

    def __init__(self, text: bytes, voice: str, params: EspeakParams, done: Deferred[bytes],
                 reactor: Any) -> None:
        self.text = text
        self.voice = voice
        self.done = done
        self.reactor = reactor
        self.max_bytes = 44 + int(params.max_seconds * 22050) * 2
        self.timeout = params.timeout
        self.chunks: list[bytes] = []
        self.received = 0
        self.stderr = b""
        self.why_killed: str | None = None
        self.timer: Any = None
        self.ended: Deferred[_Synthesis] = Deferred()

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.timer = self.reactor.callLater(self.timeout, self.kill,
                                            f"gave no result within {self.timeout:g} s")
        process: Any = self.transport  # an IProcessTransport (zope interfaces defeat mypy)
        process.write(self.text)
        process.closeStdin()

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += len(data)
        if self.received > self.max_bytes:
            self.kill(f"spoke for more than max_seconds ({self.max_bytes // 44100} s)")
            return
        self.chunks.append(data)

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self.stderr = (self.stderr + data)[-_STDERR_KEPT:]

    def kill(self, why: str) -> None:
        if self.why_killed is not None:
            return
        self.why_killed = why
        self.chunks = []
        with contextlib.suppress(error.ProcessExitedAlready):
            process: Any = self.transport
            process.signalProcess("KILL")

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.ended.callback(self)
        stderr = self.stderr.decode(errors="replace")
        if self.why_killed is not None:
            self.done.errback(SpeechError(f"espeak-ng {self.why_killed}: killed"))
        elif _no_such_voice(not reason.check(error.ProcessDone), stderr):
            self.done.errback(ValueError(
                f"espeak-ng has no voice {self.voice.partition('+')[0]!r} "
                "(espeak-ng --voices lists them)"))
        elif not reason.check(error.ProcessDone):
            self.done.errback(SpeechError(
                f"espeak-ng failed ({reason.getErrorMessage()}): {_last_line(stderr)}"))
        else:
            self.done.callback(b"".join(self.chunks))


def decode_wav(wav: bytes, rate: int) -> np.ndarray:
    """espeak-ng's WAV (its sizes left at 0x7fff_f000 on a pipe) as read-only int16 at `rate`."""
    try:
        return decode_audio(wav, rate)
    except ValueError as exc:
        raise SpeechError(f"espeak-ng wrote no usable WAV ({len(wav)} bytes): {exc}") from None


def _variants(path: str) -> set[str]:
    listing = subprocess.run([path, "--voices=variant"], capture_output=True, timeout=10,
                             env=_child_env()).stdout.decode(errors="replace")
    # Lines like " 5  variant  --/F  Alicia  !v/Alicia": the file name is what -v takes.
    return {word[3:] for line in listing.splitlines() for word in line.split()
            if word.startswith("!v/")}


def _child_env() -> dict[str, str]:
    """A small environment: the PATH to find espeak-ng's helpers, its data path if set."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    if "ESPEAK_DATA_PATH" in os.environ:
        env["ESPEAK_DATA_PATH"] = os.environ["ESPEAK_DATA_PATH"]
    return env


def _last_line(text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing on stderr)"


def _no_such_voice(failed: bool, stderr: str) -> bool:
    """espeak-ng refused -v: "Error: The specified espeak-ng voice does not exist." (1.51)."""
    return failed and "voice" in stderr.lower()
