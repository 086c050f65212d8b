"""One worker process: its streams, its end of the pipes, and `main` (run by `__main__`)."""

from __future__ import annotations

import json
import os
import resource
from typing import Any

from .models import Models
from .stream import Stream
from .wire import U64, FrameReader, Kind, Settings, pack


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Worker:
    """The streams of one process, and its end of the pipes."""

    def __init__(self, settings: Settings, out: int) -> None:
        self.settings = settings
        self.out = out
        self.models = Models(settings)
        self.streams: dict[int, Stream] = {}

    def send(self, kind: Kind, sid: int, payload: bytes = b"") -> None:
        view = memoryview(pack(kind, sid, payload))
        while view:
            view = view[os.write(self.out, view):]

    def handle(self, kind: int, sid: int, payload: bytes) -> None:
        stream = self.streams.get(sid)
        if kind == Kind.AUDIO:
            if stream is not None:  # else it failed: the daemon knows, and drops its audio
                self._guarded(stream, stream.audio, payload)
        elif kind == Kind.OPEN:
            self.open(sid, json.loads(payload))
        elif kind == Kind.CUT:
            if stream is not None:
                self._guarded(stream, stream.cut)
        elif kind == Kind.GAP:
            if stream is not None:
                self._guarded(stream, stream.gap, U64.unpack(payload)[0])
        elif kind == Kind.CLOSE:
            if stream is not None:
                del self.streams[sid]
                self._guarded(stream, stream.close)
            self.send(Kind.CLOSED, sid)
        elif kind == Kind.STATS:
            self.send(Kind.STATS_REPLY, sid, json.dumps(self.stats()).encode())
        else:
            raise ValueError(f"unknown frame kind {kind}")

    def open(self, sid: int, options: dict[str, Any]) -> None:
        if len(self.streams) >= self.settings.max_streams:
            self.send(Kind.FAILED, sid, b"worker full")
            return
        try:
            self.streams[sid] = Stream(self, sid, int(options["rate"]),
                                       bool(options.get("endpointing", True)),
                                       options.get("grammar"), options.get("keywords"))
        except (RuntimeError, ValueError, KeyError) as exc:
            self.send(Kind.FAILED, sid, _reason(exc))

    def _guarded(self, stream: Stream, action: Any, *args: Any) -> None:
        """A decoder error ends its stream alone (reported), not the process."""
        try:
            action(*args)
        except (RuntimeError, ValueError, IndexError) as exc:
            self.streams.pop(stream.sid, None)
            if stream.decoder is not None:  # in an unknown state: not given back
                stream.decoder = None
                self.models.in_use -= 1
            self.send(Kind.FAILED, stream.sid, _reason(exc))

    def idle(self) -> None:
        self.models.top_up()

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"pid": os.getpid(), "rss_kb": rss_kb(), "streams": len(self.streams),
                "decoders_in_use": self.models.in_use, "decoders_free": len(self.models.free),
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "load_seconds": self.models.load_seconds,
                "decoder_seconds": self.models.decoder_seconds}

    def shutdown(self) -> None:
        """stdin closed (the daemon is stopping): finals of open streams go out first."""
        for sid, stream in list(self.streams.items()):
            del self.streams[sid]
            self._guarded(stream, stream.close)
            self.send(Kind.CLOSED, sid)


def _reason(exc: BaseException) -> bytes:
    return " ".join(str(exc).split())[:300].encode() or type(exc).__name__.encode()


def main(argv: list[str]) -> int:
    import select
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the daemon stops us (stdin).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings(**json.loads(argv[1])) if len(argv) > 1 else Settings()
    # When the cores are busy the daemon's reactor (every call's audio) goes first; a
    # worker that falls behind only delays transcripts, up to the daemon's backlog bound.
    os.nice(settings.nice)
    # Our frames own stdout; anything else printed (a library's stray line) goes to stderr.
    out = os.dup(1)
    os.dup2(2, 1)
    worker = Worker(settings, out)
    worker.send(Kind.READY, 0, json.dumps(worker.stats()).encode())
    reader = FrameReader()
    while True:
        if not select.select([0], [], [], 0)[0]:
            worker.idle()
        data = os.read(0, 1 << 16)
        if not data:
            break
        for kind, sid, payload in reader.feed(data):
            worker.handle(kind, sid, payload)
    worker.shutdown()
    return 0
