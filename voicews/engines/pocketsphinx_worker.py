"""A PocketSphinx worker process: decodes the streams the daemon pins to it.

PocketSphinx holds the GIL while it decodes (four decoding threads delayed a sleeping
reactor by up to 315 ms), so the daemon runs decoders here, in a bounded pool of these
processes (voicews.engines.pocketsphinx), and talks to each over its stdin and stdout with
small frames: a header ``<IBI`` (payload length, kind, stream id) and a payload.

The daemon starts this file as ``python -P <this file> <settings JSON>`` rather than with
``-m``: ``-m voicews.engines...`` would import the daemon's whole package (Twisted, the
pipeline: +27 MB and 0.18 s per worker) for nothing, and ``-P`` keeps this folder (which
holds our own ``pocketsphinx.py``) off sys.path.  So this module imports only the
standard library at the top; numpy, soxr and pocketsphinx come in `main`.

One process holds one language model and a decoder per open stream (each decoder shares
the model: 58 MB a decoder instead of 91, see bench/asr.py), plus ``spare`` decoders made
ahead, when idle, so a new call does not wait 0.2 s for one.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

HEADER = struct.Struct("<IBI")
MAX_PAYLOAD = 1 << 20
"""A frame larger than this is a broken peer, not audio (a 20 ms frame is under 1 kB)."""

MODEL_RATE = 16000
"""The bundled en-US model's rate: 8 and 24 kHz calls are resampled to it."""

FRAME = MODEL_RATE // 50
"""Samples in the 20 ms frames the endpointer takes."""

BAND_FILL_RMS = 40.0
"""Noise put where a narrowband call has no audio (4-8 kHz), about -58 dBFS.

The model's filters reach 6.8 kHz; upsampled 8 kHz audio leaves the top ones at digital
silence, which the model never heard.  A faint noise floor there instead took the reading's
word error rate from 0.75 to 0.64 (and with the reading 12 dB quieter, from 0.80 to 0.68)."""


class Kind(IntEnum):
    # daemon -> worker
    OPEN = 1  # JSON {rate, endpointing, grammar, keywords}
    AUDIO = 2  # int16 little-endian samples at the stream's rate
    CUT = 3  # end the utterance now
    CLOSE = 4  # flush, then CLOSED
    GAP = 5  # u64: this many samples were dropped by the daemon
    STATS = 6
    # worker -> daemon
    READY = 10  # JSON: pid, load seconds
    RESULT = 11  # JSON {text, final, start, end}
    ACK = 12  # u64: samples of the stream consumed so far
    CLOSED = 13
    FAILED = 14  # UTF-8 one-line reason; the stream is gone
    STATS_REPLY = 15  # JSON


U64 = struct.Struct("<Q")


def pack(kind: Kind, stream: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, stream) + payload


class FrameReader:
    """Splits a byte stream into (kind, stream id, payload), whatever the read sizes."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        self._buffer += data
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            length, kind, stream = HEADER.unpack_from(buffer, offset)
            if length > MAX_PAYLOAD:
                raise ValueError(f"frame of {length} bytes (kind {kind})")
            end = offset + HEADER.size + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + HEADER.size:end])
            offset = end
            yield kind, stream, payload
        del buffer[:offset]

    def __len__(self) -> int:
        return len(self._buffer)


@dataclass(frozen=True)
class Settings:
    """What the daemon's options set in each worker (passed as JSON on the command line)."""

    max_streams: int = 6
    spare_decoders: int = 1
    partial_interval: float = 0.3
    ack_interval: float = 0.2
    vad_mode: int = 0
    window: float = 0.3
    ratio: float = 0.9
    keyword_threshold: float = 1e-10
    nice: int = 5


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Models:
    """The language model, loaded once, and decoders that share it."""

    def __init__(self, settings: Settings) -> None:
        import pocketsphinx as ps

        self.ps = ps
        self.settings = settings
        started = time.monotonic()
        # The first decoder lends its config and log tables to the language model, which
        # every decoder then searches with (add_lm shares it: same words out, 33 MB less).
        self.first = ps.Decoder(lm=None, loglevel="FATAL")
        self.lm = ps.NGramModel(self.first.config, self.first.logmath,
                                ps.get_model_path("en-us/en-us.lm.bin"))
        self.cmn = self.first.get_cmn()
        self.band_fill = band_fill()
        self.first.add_lm("lm", self.lm)
        self.first.activate_search("lm")
        self.free: list[Any] = [self.first]
        self.in_use = 0
        self.load_seconds = time.monotonic() - started
        self.decoder_seconds = 0.0

    def make(self) -> Any:
        started = time.monotonic()
        decoder = self.ps.Decoder(lm=None, loglevel="FATAL")
        decoder.add_lm("lm", self.lm)
        decoder.activate_search("lm")
        self.decoder_seconds = time.monotonic() - started
        return decoder

    def take(self) -> Any:
        decoder = self.free.pop() if self.free else self.make()
        self.in_use += 1
        return decoder

    def give_back(self, decoder: Any, search: str | None) -> None:
        """A decoder as a new stream expects it: the language model searched, no grammar
        left, the channel estimate (CMN) back at the model's, so one caller's line does not
        colour the next caller's first words."""
        self.in_use -= 1
        try:
            decoder.activate_search("lm")
            if search:
                decoder.remove_search(search)
            decoder.set_cmn(self.cmn)
        except (RuntimeError, KeyError):
            return  # not reusable: dropped
        if len(self.free) < self.settings.spare_decoders:
            self.free.append(decoder)

    def top_up(self) -> None:
        """Make spare decoders while nothing waits (called when stdin is idle)."""
        if len(self.free) < self.settings.spare_decoders \
                and self.in_use + len(self.free) < self.settings.max_streams:
            self.free.append(self.make())


def band_fill(seconds: int = 1) -> Any:
    """`seconds` of white noise above 4 kHz at BAND_FILL_RMS, as int16, repeated per stream
    (made once, seeded: the same audio decodes the same)."""
    import numpy as np

    n = seconds * MODEL_RATE
    spectrum = np.fft.rfft(np.random.default_rng(8000).normal(0.0, 1.0, n))
    spectrum[np.fft.rfftfreq(n, 1 / MODEL_RATE) < 4000] = 0
    noise = np.fft.irfft(spectrum, n)
    return np.rint(noise * (BAND_FILL_RMS / noise.std())).astype(np.int16)


def jsgf(phrases: list[str]) -> str:
    """A JSGF grammar whose one public rule is any of the phrases (words already checked)."""
    choices = " | ".join(f"( {phrase} )" for phrase in phrases)
    return f"#JSGF V1.0;\ngrammar voicews;\npublic <choice> = {choices};\n"


class Stream:
    """One call's audio: resampled to 16 kHz, endpointed, decoded, reported."""

    def __init__(self, worker: Worker, sid: int, rate: int, endpointing: bool,
                 grammar: list[str] | None, keywords: list[list[Any]] | None) -> None:
        import numpy as np
        import soxr

        self.np = np
        self.worker = worker
        self.sid = sid
        self.rate = rate
        self.endpointing = endpointing
        self.keywords = bool(keywords)
        settings = worker.settings
        self.resampler: Any = None if rate == MODEL_RATE else soxr.ResampleStream(
            rate, MODEL_RATE, 1, dtype="int16", quality="HQ")
        self.pending = np.zeros(0, np.int16)
        self.fill = worker.models.band_fill if rate < MODEL_RATE else None
        self.fill_at = 0
        self.decoder = worker.models.take()
        self.search: str | None = None
        self.in_utt = False
        try:
            self._check_words(grammar or [phrase for phrase, _ in keywords or []])
            if grammar:
                self.search = f"g{sid}"
                self.decoder.add_jsgf_string(self.search, jsgf(grammar))
            elif keywords:
                self.search = f"k{sid}"
                self._add_keywords(keywords, settings.keyword_threshold)
            if self.search:
                self.decoder.activate_search(self.search)
        except (RuntimeError, ValueError, KeyError):
            self.release()
            raise
        self.clock = 0  # 16 kHz samples of stream time passed through the endpointer/decoder
        self.consumed = 0  # samples at the call's rate taken from AUDIO frames
        self.acked = 0
        self.ack_every = max(1, int(settings.ack_interval * rate))
        self.partial_every = int(settings.partial_interval * MODEL_RATE)
        self.utt_origin = 0  # stream time (16 kHz samples) of the decoder's frame 0
        self.next_partial = 0
        self.last_partial = ""
        self.partials = 0
        self.endpointer: Any = None
        self.ep_origin = 0
        if endpointing:
            self._new_endpointer()
        else:
            self._start_utt()

    def _add_keywords(self, keywords: list[list[Any]], default: float) -> None:
        lines = "".join(f"{phrase} /{threshold or default:g}/\n" for phrase, threshold in keywords)
        with tempfile.NamedTemporaryFile("w", suffix=".kws", delete=False) as file:
            file.write(lines)
        try:
            self.decoder.add_kws(self.search, file.name)
        finally:
            os.unlink(file.name)

    def _check_words(self, phrases: list[str]) -> None:
        unknown = sorted({w for p in phrases for w in p.split()
                          if self.decoder.lookup_word(w) is None})
        if unknown:
            raise ValueError(f"words not in the dictionary: {', '.join(unknown)}")

    def _new_endpointer(self) -> None:
        s = self.worker.settings
        self.endpointer = self.worker.models.ps.Endpointer(
            window=s.window, ratio=s.ratio, vad_mode=s.vad_mode, sample_rate=MODEL_RATE,
            frame_length=FRAME / MODEL_RATE)
        self.ep_origin = self.clock

    def _start_utt(self, origin: int | None = None) -> None:
        self.decoder.start_utt()
        self.in_utt = True
        self.utt_origin = self.clock if origin is None else origin
        self.next_partial = self.utt_origin + self.partial_every
        self.last_partial = ""
        self.partials = 0

    # -- input ---------------------------------------------------------------------------

    def audio(self, payload: bytes) -> None:
        np = self.np
        samples = np.frombuffer(payload, "<i2")
        self.consumed += len(samples)
        if self.resampler is not None:
            samples = self._upsampled(samples)
        self._decode(samples)
        if self.consumed - self.acked >= self.ack_every:
            self.ack()

    def _upsampled(self, samples: Any, last: bool = False) -> Any:
        np = self.np
        samples = self.resampler.resample_chunk(samples, last=last)
        if self.fill is None or not len(samples):
            return samples
        at = np.arange(self.fill_at, self.fill_at + len(samples))
        self.fill_at = (self.fill_at + len(samples)) % len(self.fill)
        mixed = samples.astype(np.int32) + self.fill.take(at, mode="wrap")
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def ack(self) -> None:
        self.acked = self.consumed
        self.worker.send(Kind.ACK, self.sid, U64.pack(self.consumed))

    def _decode(self, samples: Any) -> None:
        if not self.endpointing:
            if len(samples):
                self.decoder.process_raw(samples.tobytes())
                self.clock += len(samples)
                self._after_process()
            return
        if len(self.pending):
            samples = self.np.concatenate((self.pending, samples))
        whole = len(samples) - len(samples) % FRAME
        for i in range(0, whole, FRAME):
            self._endpoint(samples[i:i + FRAME].tobytes())
        self.pending = samples[whole:].copy()

    def _endpoint(self, frame: bytes) -> None:
        ep = self.endpointer
        speech = ep.process(frame)
        self.clock += FRAME
        if speech is None:
            return
        if not self.in_utt:
            self._start_utt(self.ep_origin + round(ep.speech_start * MODEL_RATE))
        self.decoder.process_raw(speech)
        self._after_process()
        if not ep.in_speech:
            self._finish()

    def _after_process(self) -> None:
        if not self.in_utt:
            return
        if self.keywords:
            if self.decoder.hyp() is not None:
                self._spotted()
            return
        now = self.utt_origin + self.decoder.n_frames() * (MODEL_RATE // 100)
        if now >= self.next_partial:
            self.next_partial = now + self.partial_every
            hyp = self.decoder.hyp()
            text = hyp.hypstr if hyp is not None else ""
            if text and text != self.last_partial:
                self.last_partial = text
                self.partials += 1
                self._result(text, False, *self._span(now))

    def _span(self, now: int) -> tuple[int, int]:
        """Stream times (16 kHz samples) of the first and last words decoded, or of the
        utterance when it holds none."""
        words = [s for s in (self.decoder.seg() or ()) if not _filler(s.word)]
        if not words:
            return self.utt_origin, now
        per_frame = MODEL_RATE // 100
        return (self.utt_origin + words[0].start_frame * per_frame,
                self.utt_origin + (words[-1].end_frame + 1) * per_frame)

    def _spotted(self) -> None:
        """Each keyphrase found is a final of its own; the search starts again after it."""
        per_frame = MODEL_RATE // 100
        now = self.utt_origin + self.decoder.n_frames() * per_frame
        for seg in self.decoder.seg() or ():
            if not _filler(seg.word):
                self._result(seg.word, True, self.utt_origin + seg.start_frame * per_frame,
                             self.utt_origin + (seg.end_frame + 1) * per_frame)
        self.decoder.end_utt()
        self._start_utt(now)

    def _finish(self) -> None:
        """End the decoder's utterance and report its final (unless nothing was said
        and no partial needs superseding)."""
        if not self.in_utt:
            return
        now = self.utt_origin + self.decoder.n_frames() * (MODEL_RATE // 100)
        self.decoder.end_utt()
        self.in_utt = False
        if not self.keywords:
            hyp = self.decoder.hyp()
            text = hyp.hypstr if hyp is not None else ""
            if text or self.partials:
                self._result(text, True, *self._span(now))

    def _result(self, text: str, final: bool, start: int, end: int) -> None:
        body = {"text": " ".join(text.split()), "final": final,
                "start": start / MODEL_RATE, "end": end / MODEL_RATE}
        self.worker.send(Kind.RESULT, self.sid, json.dumps(body).encode())

    # -- control -------------------------------------------------------------------------

    def _end(self) -> None:
        """End the utterance with what the endpointer still holds."""
        if self.endpointing:
            if self.in_utt:
                # end_stream takes up to a frame, and not nothing: one silent sample then.
                rest = self.endpointer.end_stream(self.pending.tobytes() or b"\0\0")
                if rest:
                    self.decoder.process_raw(rest)
            self.clock += len(self.pending)
            self.pending = self.pending[:0]
        self._finish()

    def _restart(self) -> None:
        if self.endpointing:
            self._new_endpointer()
        else:
            self._start_utt()

    def cut(self) -> None:
        """A VAD says the caller stopped: the utterance ends now, and a new one (or a new
        endpointer) starts from here."""
        self._end()
        self._restart()

    def gap(self, samples: int) -> None:
        """The daemon dropped audio: the utterance it broke ends as it stands and the
        stream's clock jumps, so later times stay true to the call's time."""
        self._end()
        self.clock += samples * MODEL_RATE // self.rate
        self.consumed += samples
        self._restart()

    def close(self) -> None:
        if self.resampler is not None:
            self._decode(self._upsampled(self.np.zeros(0, self.np.int16), last=True))
        self._end()
        self.ack()
        self.release()

    def release(self) -> None:
        if self.decoder is not None:
            if self.in_utt:
                self.decoder.end_utt()
                self.in_utt = False
            self.worker.models.give_back(self.decoder, self.search)
            self.decoder = None


def _filler(word: str) -> bool:
    return word.startswith(("<", "[", "+")) or word == "</s>"


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


if __name__ == "__main__":
    sys.exit(main(sys.argv))
