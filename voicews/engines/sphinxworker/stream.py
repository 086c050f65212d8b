"""One call's stream in a worker: its audio resampled to the model's rate, endpointed,
decoded, and its transcripts sent back."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Protocol

from .models import MODEL_RATE, Models
from .wire import U64, Kind, Settings

FRAME = MODEL_RATE // 50
"""Samples in the 20 ms frames the endpointer takes."""


def jsgf(phrases: list[str]) -> str:
    """A JSGF grammar whose one public rule is any of the phrases (words already checked)."""
    choices = " | ".join(f"( {phrase} )" for phrase in phrases)
    return f"#JSGF V1.0;\ngrammar voicews;\npublic <choice> = {choices};\n"


class Host(Protocol):
    """What a stream uses of its worker (worker.Worker; named here, so no import cycle)."""

    settings: Settings
    models: Models

    def send(self, kind: Kind, sid: int, payload: bytes = b"") -> None: ...


class Stream:
    """One call's audio: resampled to 16 kHz, endpointed, decoded, reported."""

    def __init__(self, worker: Host, sid: int, rate: int, endpointing: bool,
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
