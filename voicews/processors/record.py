"""record: write the call's audio to a WAV file per call, off the reactor thread.

Processors run in the reactor thread, where a slow disk would delay every
call's audio.  So ``process`` only keeps the frame (a reference to the caller's
immutable frame, and to the output when it is that same frame, as with echo: a
copy otherwise) and, every 200 ms, hands the batch to one shared writer thread
through a queue; the writer interleaves the channels and writes.  A recording
call holds about 8 KB of audio this way (16 kHz, both channels), not the
interleaved bytes of half a second.  The writer uses the standard library's
``wave`` on an unbuffered file (no 8 KB buffer per recording), which rewrites
the RIFF header after every write: a file is a valid WAV at every moment, even
if the process is killed.  The ``stop`` hook makes the daemon wait, on SIGTERM, until
the writer has written and closed everything the drained calls handed it.
"""

from __future__ import annotations

import contextlib
import queue
import re
import string
import threading
import uuid as uuidlib
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from voicews import Processor, hookimpl
from voicews.audio.samples import SAMPLE_DTYPE, saturate

log = Logger(namespace="voicews.processors.record")

FIELDS = ("uuid", "conversation_uuid", "pipeline", "started")
BATCH_FRAMES = 10  # hand the writer 200 ms at a time
MAX_OUTBOUND_BACKLOG_FRAMES = 50 * 60  # output running ahead of the caller, kept for alignment
MAX_WRITER_BACKLOG_BYTES = 64 * 1024 * 1024
"""Audio handed to the writer thread but not yet written, all recordings together (about
17 minutes of one stereo 16 kHz call).  Beyond it a stalled disk costs recordings audio
(logged once per recording), never the daemon its memory."""


@dataclass(frozen=True)
class RecordParams:
    path: str = "recordings/{started}-{uuid}.wav"
    """Where to write, relative to config.yaml's folder; fields: {uuid},
    {conversation_uuid}, {pipeline}, {started} (UTC, e.g. 20260102T030405Z)."""
    what: Literal["inbound", "outbound", "both"] = "both"
    """inbound: the caller; outbound: what the steps before this one produced
    (put record last to capture what the caller hears, played audio included);
    both: stereo, caller left."""


@dataclass(frozen=True)
class Prepared:
    template: str
    what: str


def _check_template(template: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad path template {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            known = ", ".join("{" + f + "}" for f in FIELDS)
            raise ValueError(f"unknown field {{{field}}} in path (known fields: {known})")
        if spec or conversion:
            raise ValueError(f"field {{{field}}} takes no format spec or conversion")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(value: object, fallback: str) -> str:
    """A value from the call's headers made safe as one path component (no ``/``, no ``..``)."""
    text = _UNSAFE.sub("_", str(value)) if value is not None else ""
    text = text.lstrip(".")[:100]
    return text or fallback


class Record(Processor):
    name = "record"
    Params = RecordParams

    @classmethod
    def prepare(cls, params: RecordParams, context) -> Prepared:
        _check_template(params.path)
        if not params.path.strip():
            raise ValueError("path must not be empty")
        return Prepared(template=str(context.resolve(params.path)), what=params.what)

    def __init__(self, session, params: Prepared) -> None:
        super().__init__(session, params)
        info = session.info
        path = params.template.format(
            uuid=_safe(info.uuid, uuidlib.uuid4().hex),
            conversation_uuid=_safe(info.conversation_uuid, "none"),
            pipeline=_safe(info.pipeline, "pipeline"),
            started=info.started.strftime("%Y%m%dT%H%M%SZ"),
        )
        self.frame = info.frame_samples
        self.channels = 2 if params.what == "both" else 1
        self.left: list[np.ndarray] = []  # the batch: the only (or left) channel's frames
        self.right: list[np.ndarray] = []  # with "both": the output's
        self.backlog = np.empty(0, dtype=SAMPLE_DTYPE)  # outbound not yet paired with inbound
        self.file_id = WRITER.open(Path(path), self.channels, info.rate, info.uuid)

    def _outbound_frame(self, outbound: np.ndarray | None) -> np.ndarray:
        """Exactly one frame of the output, so the right channel stays in step with the left."""
        if outbound is not None and len(outbound):
            out = outbound if (  # the same object when it is one already: kept without a copy
                type(outbound) is np.ndarray and outbound.ndim == 1
            ) else np.asarray(outbound).reshape(-1)
            if out.dtype != SAMPLE_DTYPE:
                out = saturate(out)
            if not len(self.backlog) and len(out) == self.frame:
                return out
            self.backlog = np.concatenate((self.backlog, out))
            limit = MAX_OUTBOUND_BACKLOG_FRAMES * self.frame
            if len(self.backlog) > limit:
                self.backlog = self.backlog[:limit]
        frame = self.backlog[: self.frame]
        self.backlog = self.backlog[self.frame :]
        if len(frame) < self.frame:
            frame = np.concatenate((frame, np.zeros(self.frame - len(frame), SAMPLE_DTYPE)))
        return frame

    def _kept(self, out: np.ndarray, inbound: np.ndarray) -> np.ndarray:
        """The output frame as it is now: the caller's own frame is immutable (read from
        bytes) and kept as is; anything else a later step might reuse is copied."""
        return out if out is inbound else out.copy()

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        what = self.params.what
        if what == "inbound":
            self.left.append(inbound)  # read-only: a view of the caller's bytes
        elif what == "outbound":
            self.left.append(self._kept(self._outbound_frame(outbound), inbound))
        else:
            self.left.append(inbound)
            self.right.append(self._kept(self._outbound_frame(outbound), inbound))
        if len(self.left) >= BATCH_FRAMES:
            self._hand_over()
        return outbound

    def _hand_over(self) -> None:
        if self.left:
            WRITER.write(self.file_id, Batch(self.left, self.right))
            self.left, self.right = [], []

    def close(self) -> defer.Deferred[None]:
        """The call's end waits until its WAV file is written and closed."""
        self._hand_over()
        return WRITER.close(self.file_id)


class Writer(service.Service):
    """One thread that owns every open recording; calls talk to it through a queue.

    A Twisted service (the ``services`` hook hands it to the daemon): it starts
    with the daemon, and stopping it waits until everything handed to it is on
    disk.  Used without a daemon (a benchmark), it starts its thread on first use.

    Errors (a folder that cannot be made, a full disk) are logged once per file
    and the file is dropped; the call itself goes on.  A disk that stalls instead
    of failing makes the queue grow: past ``max_backlog`` bytes new audio is
    dropped and each recording that loses audio says so once.
    """

    def __init__(self, max_backlog: int = MAX_WRITER_BACKLOG_BYTES) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.max_backlog = max_backlog
        self._handed = 0  # bytes put on the queue: reactor thread only
        self._done = 0  # bytes taken off it: writer thread only
        self._uuids: dict[int, str | None] = {}  # open recordings: reactor thread only
        self._losing: set[int] = set()
        self.dropped_bytes = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._next_id = 0
        self.files: dict[int, _OpenFile | None] = {}  # writer thread only

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="voicews-record-writer", daemon=True
                )
                self._thread.start()

    def open(self, path: Path, channels: int, rate: int, uuid: str | None) -> int:
        self._ensure_thread()
        self._next_id += 1
        self._uuids[self._next_id] = uuid
        self.queue.put(("open", self._next_id, (path, channels, rate, uuid)))
        return self._next_id

    def backlog(self) -> int:
        """Bytes of audio waiting for the writer thread."""
        return self._handed - self._done

    def write(self, file_id: int, data: bytes | Batch) -> None:
        if self.backlog() + len(data) > self.max_backlog:
            self.dropped_bytes += len(data)
            if file_id not in self._losing:
                self._losing.add(file_id)
                log.warn(
                    "recording uuid={uuid} is losing audio: {backlog} bytes wait for a disk "
                    "that is not keeping up", uuid=self._uuids.get(file_id),
                    backlog=self.backlog(),
                )
            return
        self._handed += len(data)
        self.queue.put(("write", file_id, data))

    def close(self, file_id: int) -> defer.Deferred[None]:
        """Close a recording; the Deferred fires once its file is complete on disk."""
        self._uuids.pop(file_id, None)
        self._losing.discard(file_id)
        done: defer.Deferred[None] = defer.Deferred()
        self.queue.put(("close", file_id, done))
        return done

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._ensure_thread()

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        super().stopService()
        return self.idle()

    def idle(self) -> defer.Deferred | None:
        """A Deferred that fires once everything queued so far is on disk and closed.

        A marker in the queue rather than a thread waiting on ``queue.join``: a
        writer stuck on a dead disk must not leave a thread that twistd would
        wait for forever at exit (the service gives up after drain_timeout).
        """
        if self._thread is None:
            return None
        done: defer.Deferred = defer.Deferred()
        self.queue.put(("barrier", 0, done))
        return done

    def _barrier(self, _file_id: int, done: defer.Deferred) -> None:
        from twisted.internet import reactor

        IReactorFromThreads(reactor).callFromThread(done.callback, None)

    def _run(self) -> None:
        while True:
            op, file_id, arg = self.queue.get()
            try:
                getattr(self, "_" + op)(file_id, arg)
            except Exception as exc:  # never let one bad file stop every recording
                self._fail(file_id, f"{type(exc).__name__}: {exc}")
            finally:
                self.queue.task_done()

    def _report(self, level: str, fmt: str, **fields) -> None:
        from twisted.internet import reactor

        IReactorFromThreads(reactor).callFromThread(getattr(log, level), fmt, **fields)

    def _fail(self, file_id: int, reason: str) -> None:
        handle = self.files.get(file_id)
        self.files[file_id] = None
        name = handle.path if handle is not None else "?"
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.wav.close()
            with contextlib.suppress(Exception):
                handle.raw.close()
        self._report("error", "recording {path} failed: {reason}", path=str(name), reason=reason)

    def _open(self, file_id: int, arg) -> None:
        path, channels, rate, uuid = arg
        self.files[file_id] = None  # stays None if opening fails: writes are then dropped
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            target = _unused(path)
            # Unbuffered: wave writes a batch at a time, and a buffer would be 8 KB a call.
            raw = open(target, "wb", buffering=0)  # noqa: SIM115 - closed in _close_file
            handle = wave.open(raw, "wb")  # noqa: SIM115
        except (OSError, wave.Error) as exc:
            self._report(
                "error", "cannot record uuid={uuid} to {path}: {reason}", uuid=uuid,
                path=str(path), reason=exc.strerror if isinstance(exc, OSError) else str(exc),
            )
            return
        handle.setnchannels(channels)
        handle.setsampwidth(SAMPLE_DTYPE.itemsize)
        handle.setframerate(rate)
        handle.writeframes(b"")  # header now, so even an empty call leaves a valid WAV
        self.files[file_id] = _OpenFile(handle, raw, target, uuid)
        self._report(
            "info", "recording uuid={uuid} to {path}", uuid=uuid, path=str(target),
            event="recording_started",
        )

    def _write(self, file_id: int, data: bytes | Batch) -> None:
        try:
            handle = self.files.get(file_id)
            if handle is not None:
                audio = data if isinstance(data, bytes) else data.render()
                handle.wav.writeframes(audio)  # writeframes (not ...raw) patches the header too
        finally:
            self._done += len(data)

    def _close(self, file_id: int, done: defer.Deferred[None]) -> None:
        from twisted.internet import reactor

        try:
            self._close_file(file_id)
        finally:
            IReactorFromThreads(reactor).callFromThread(done.callback, None)

    def _close_file(self, file_id: int) -> None:
        handle = self.files.pop(file_id, None)
        if handle is None:
            return
        frames = handle.wav.getnframes()
        rate = handle.wav.getframerate()
        try:
            handle.wav.close()  # the header's final sizes
        finally:
            handle.raw.close()  # wave closes only files it opened itself
        self._report(
            "info", "recording finished uuid={uuid} {path} ({seconds:.2f} s)",
            uuid=handle.uuid, path=str(handle.path), seconds=frames / rate,
            event="recording_finished",
        )


@dataclass
class _OpenFile:
    """A recording the writer thread holds open, and what its log lines name."""

    wav: wave.Wave_write
    raw: Any  # the unbuffered file under it
    path: Path
    uuid: str | None


class Batch:
    """A recording's frames handed to the writer thread, interleaved there, not per frame."""

    __slots__ = ("left", "right", "nbytes")

    def __init__(self, left: list[np.ndarray], right: list[np.ndarray]) -> None:
        self.left = left
        self.right = right
        self.nbytes = sum(a.nbytes for a in left) + sum(a.nbytes for a in right)

    def __len__(self) -> int:
        """Bytes of audio, as the writer's backlog counts them."""
        return self.nbytes

    def render(self) -> bytes:
        if not self.right:
            return np.concatenate(self.left).tobytes()
        stereo = np.empty((len(self.left) * len(self.left[0]), 2), dtype=SAMPLE_DTYPE)
        stereo[:, 0] = np.concatenate(self.left)
        stereo[:, 1] = np.concatenate(self.right)
        return stereo.tobytes()


def _unused(path: Path) -> Path:
    """`path`, or `name-2.wav`, `name-3.wav`... when a file of that name exists already."""
    if not path.exists():
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


WRITER = Writer()


@hookimpl
def register_processors(register):
    register(Record)


@hookimpl
def services():
    return WRITER
