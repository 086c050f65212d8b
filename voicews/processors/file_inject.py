"""file-inject: play an audio file into the call, replacing or mixed with what earlier steps made.

The file is decoded and resampled when config.yaml loads (see
:mod:`voicews.audio.files`), so every call shares one read-only buffer and the
per-frame work is a slice.  One 20 ms frame of the file goes out per frame the
caller sends, which keeps the file in step with the call's own clock.

With ``interruptible: true`` the file is played through the mix bus instead
(``session.play``: the whole file, or as much as the bus takes at a time), so a
``barge-in`` step (or any clear) stops it and its ``barge_in`` event says how much of
the file the caller heard.  The audio is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from twisted.logger import Logger

from voicews import Playback, Processor, hookimpl
from voicews.audio.files import Prompt, load
from voicews.audio.samples import db_to_factor, mix

log = Logger(namespace="voicews.processors.file_inject")


@dataclass(frozen=True)
class FileInjectParams:
    path: str
    """The audio file; a relative path is relative to config.yaml's folder."""
    mode: Literal["replace", "mix"] = "replace"
    """replace: the caller hears the file instead of earlier steps' output; mix: both."""
    loop: bool = False
    """Start again at the end instead of stopping."""
    level: float = 0.0
    """Level change in dB applied to the file (not to what it is mixed with)."""
    stop_on_dtmf: bool = False
    """A key press stops playback and clears Vonage's buffer (barge-in)."""
    interruptible: bool = False
    """Play through the mix bus, so a barge-in step (or any clear) stops the file and
    reports how much of it was heard."""


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` hands every call: the shared decoded file and the options."""

    prompt: Prompt
    shown: str
    mode: str
    loop: bool
    stop_on_dtmf: bool
    interruptible: bool = False


class FileInject(Processor):
    name = "file-inject"
    Params = FileInjectParams
    playback: Playback | None = None
    """Interruptible: the file on the bus."""
    fed = 0
    """Interruptible: samples of the file queued on the bus."""

    @classmethod
    def prepare(cls, params: FileInjectParams, context) -> Prepared:
        factor = db_to_factor(params.level)
        # The level is applied once here; every call shares the scaled buffer.
        prompt = load(context.resolve(params.path)).scaled(factor)
        return Prepared(
            prompt=prompt,
            shown=params.path,
            mode=params.mode,
            loop=params.loop,
            stop_on_dtmf=params.stop_on_dtmf,
            interruptible=params.interruptible,
        )

    def __init__(self, session, params: Prepared) -> None:
        super().__init__(session, params)
        self.samples = params.prompt.samples(session.rate)
        self.frame = session.info.frame_samples
        self.silence = np.zeros(self.frame, dtype=self.samples.dtype)
        self.position = 0
        self.playing = True
        self.notify_payload = {
            "processor": self.name,
            "file": params.shown,
            "pipeline": session.info.pipeline,
            "uuid": session.info.uuid,
            "event": "finished",
        }
        if params.interruptible:  # the default's frame path stays as it was
            self.process = self._feed  # type: ignore[method-assign]

    def start(self) -> None:
        if self.params.interruptible:
            self._queue(None)

    def _queue(self, playback: Playback | None) -> None:
        """Put the rest of the file on the bus (a view: no copy), as much as it takes;
        once all of it is there, the notify goes behind it."""
        if self.fed >= len(self.samples) and self.params.loop:
            self.fed = 0
        rest = self.samples[self.fed:]
        if playback is None:
            playback = self.playback = self.session.play(
                rest, replace=self.params.mode == "replace", label=self.params.shown)
            self.fed += playback.samples
        else:
            before = playback.samples
            playback.extend(rest)
            self.fed += playback.samples - before
        if self.fed >= len(self.samples) and not self.params.loop:
            self.playing = False
            self.session.notify(self.notify_payload)

    def _feed(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        """Interruptible: keep the bus a frame ahead; our output is what the bus replaces."""
        playback = self.playback
        assert playback is not None
        if self.playing and playback.samples - playback.taken <= self.frame:
            if playback.outcome is not None:
                self.playing = False  # a clear (barge-in) stopped it
            else:
                self._queue(playback)
        if self.params.mode == "mix":
            return outbound
        return self.silence

    def _next_chunk(self) -> np.ndarray:
        """The file's next frame; pads (or wraps, when looping) at the end."""
        start, end = self.position, self.position + self.frame
        chunk = self.samples[start:end]
        self.position = end
        if len(chunk) == self.frame:
            if self.position >= len(self.samples) and self.params.loop:
                self.position = 0
            elif self.position >= len(self.samples):
                self.playing = False
            return chunk
        # The file ends inside this frame.
        missing = self.frame - len(chunk)
        if self.params.loop:
            parts = [chunk]
            while missing:
                take = self.samples[:missing]
                parts.append(take)
                missing -= len(take)
                self.position = len(take)
            return np.concatenate(parts)
        self.playing = False
        return np.concatenate((chunk, self.silence[:missing]))

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        if not self.playing:
            if self.params.mode == "mix":
                return outbound
            return self.silence
        chunk = self._next_chunk()
        if not self.playing:
            # Sent after this frame, so Vonage answers once the file's last frame has played.
            self.session.notify(self.notify_payload)
        if self.params.mode == "replace" or outbound is None:
            return chunk
        return mix(outbound, chunk)

    def _audible(self) -> bool:
        if self.playback is not None:
            return self.playback.playing
        return self.playing

    def on_event(self, event) -> None:
        if event.kind == "dtmf" and self.params.stop_on_dtmf and self._audible():
            self.playing = False
            log.info(
                "file-inject: {file} stopped by DTMF {digit} uuid={uuid}",
                file=self.params.shown, digit=event.digit, uuid=self.session.info.uuid,
            )
            self.session.clear()
        elif event.kind == "notify" and event.payload == self.notify_payload:
            playback = self.playback
            if playback is not None and playback.outcome == "interrupted":
                log.info(
                    "file-inject: {file} interrupted after {heard:.2f} s uuid={uuid}",
                    file=self.params.shown, heard=playback.heard, uuid=self.session.info.uuid,
                )
                return
            log.info(
                "file-inject: {file} has played to the caller uuid={uuid}",
                file=self.params.shown, uuid=self.session.info.uuid, event="prompt_played",
            )


@hookimpl
def register_processors(register):
    register(FileInject)
