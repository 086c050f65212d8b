"""What is playing and how much the caller heard (voicews.pipeline.playback), and session.say,
in-process on task.Clock: the real pipeline, its mix bus and paced sender, a Wire for Vonage.

session.say is driven by a scripted engine (a TextToSpeech whose results arrive when the test
says), so order, cancellation and failures can be checked frame by frame; the real eSpeak NG
speaks in test_voice_ai_daemon.py.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np
import pytest
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from voicews import Processor
from voicews.engines.tts import SpeechError
from voicews.processors.echo import Echo
from voicews.testing import call_with

RATE = 8000
N = 160  # samples per 20 ms frame at 8 kHz


def level(value: int, frames: float) -> np.ndarray:
    return np.full(int(frames * N), value, np.int16)


def values(call) -> list[tuple[int, int]]:
    """The output as runs of (sample value, frames)."""
    frames = call.audio().reshape(-1, N)
    runs: list[tuple[int, int]] = []
    for frame in frames:
        value = int(frame[0]) if len(set(frame.tolist())) == 1 else -1
        if runs and runs[-1][0] == value:
            runs[-1] = (value, runs[-1][1] + 1)
        else:
            runs.append((value, 1))
    return runs


@dataclass(frozen=True)
class PlayParams:
    frames: float = 50
    value: int = 1000
    notify: bool = False


class Player(Processor):
    """Plays `frames` frames of a constant on its first frame (optionally with a notify)."""

    name = "player"

    def __init__(self, session, params):
        super().__init__(session, params or PlayParams())
        self.playback = None

    def process(self, inbound, outbound):
        if self.playback is None:
            self.playback = self.session.play(level(self.params.value, self.params.frames),
                                              label="prompt")
            if self.params.notify:
                self.session.notify({"mark": "prompt"})
        return outbound


def test_heard_follows_the_playout_model_frame_by_frame():
    call = call_with([Echo, Player], rate=RATE)
    call.frames(1)
    playback = call.pipeline.processors[1].playback
    assert (playback.step, playback.label, playback.seconds) == ("player", "prompt", 1.0)
    assert playback.heard == 0 and playback.playing and playback.outcome is None
    call.frames(25)  # taken from the frame after the one that asked
    assert playback.heard == pytest.approx(0.5)
    assert call.pipeline.session.playing == [playback]
    call.frames(30)
    assert playback.heard == 1.0 and not playback.playing
    assert playback.outcome == "played"  # no notify covers it: the model says so
    assert call.pipeline.session.playing == []


def test_heard_counts_what_vonage_has_not_played_yet():
    """With the sender allowed ahead (max_lead), audio sent is not yet heard."""
    call = call_with([Echo, Player], rate=RATE, max_lead_seconds=10)
    call.frames(11, step=0.0)  # ten frames of the prompt sent at once: none played yet
    playback = call.pipeline.processors[1].playback
    assert playback.taken == 10 * N and playback.heard == 0
    call.clock.advance(0.1)  # Vonage has played the echo's frame and 4 of the prompt's
    assert playback.heard == pytest.approx(0.08)


def test_a_notify_after_a_playback_confirms_it_played():
    call = call_with([Echo, Player], [None, PlayParams(frames=5, notify=True)], rate=RATE)
    call.frames(10)
    playback = call.pipeline.processors[1].playback
    assert playback.outcome is None and not playback.playing  # heard, not yet confirmed
    assert call.texts() == [{"action": "notify", "payload": {"mark": "prompt"}}]
    call.pipeline.receive_event("notify", {"payload": {"mark": "prompt"}})
    assert playback.outcome == "played" and playback.heard == pytest.approx(0.1)


def test_clear_interrupts_what_plays_and_freezes_what_was_heard():
    call = call_with([Echo, Player], [None, PlayParams(notify=True)], rate=RATE)
    call.frames(21)
    playback = call.pipeline.processors[1].playback
    cut = call.pipeline.session.clear()
    assert cut == [playback]
    assert playback.outcome == "interrupted" and playback.heard == pytest.approx(0.4)
    call.frames(10)
    assert playback.heard == pytest.approx(0.4) and call.pipeline.session.playing == []
    assert values(call) == [(0, 1), (1000, 20), (0, 10)]  # the rest never went out
    # The notify behind it is released (Vonage answers at once): it stays interrupted.
    assert call.texts()[-1] == {"action": "notify", "payload": {"mark": "prompt"}}
    call.pipeline.receive_event("notify", {"payload": {"mark": "prompt"}})
    assert playback.outcome == "interrupted"


def test_the_calls_end_ends_what_was_still_playing():
    call = call_with([Echo, Player], rate=RATE)
    call.frames(11)
    playback = call.pipeline.processors[1].playback
    call.pipeline.close("hangup")
    assert playback.outcome == "ended" and playback.heard == pytest.approx(0.2)
    late = call.pipeline.session.play(level(5, 1))
    assert late.outcome == "ended" and late.heard == 0


def test_extend_streams_more_of_the_same_playback():
    call = call_with([Echo], rate=RATE)
    playback = call.pipeline.session.play(level(7, 3), label="reply")
    call.frames(2)
    playback.extend(level(7, 3))
    call.frames(8)
    assert values(call) == [(7, 6), (0, 4)] and playback.seconds == 0.12
    assert playback.outcome == "played"
    call.pipeline.session.clear()
    playback.extend(level(7, 3))  # ended: takes no more
    call.frames(3)
    assert values(call)[-1] == (0, 7)


# -- session.say -----------------------------------------------------------------------------


class ScriptedTts:
    """A TextToSpeech whose results arrive when the test says: `words` frames of a constant."""

    name = "scripted"

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, str | None, dict, defer.Deferred]] = []
        self.cancelled: list[str] = []

    def check(self, voice=None, **options) -> None:
        pass

    def synthesize(self, text, rate, voice=None, **options):
        d = defer.Deferred(lambda _: self.cancelled.append(text))
        self.asked.append((text, rate, voice, options, d))
        return d

    def speak(self, index: int, value: int, frames: int) -> None:
        self.asked[index][4].callback(level(value, frames))


def said(d: defer.Deferred) -> list:
    got: list = []
    d.addBoth(got.append)
    return got


def test_say_plays_in_the_order_asked_and_fires_when_vonage_has_played_it():
    tts = ScriptedTts()
    call = call_with([Echo], rate=RATE, tts=tts)
    session = call.pipeline.session
    first = said(session.say("one", voice="en-gb", speed=200))
    second = said(session.say("two"))
    assert [(t, r, v, o) for t, r, v, o, _ in tts.asked] == [
        ("one", RATE, "en-gb", {"speed": 200}), ("two", RATE, None, {})]
    call.frames(2)
    tts.speak(1, 2000, 3)  # the second is ready first: it waits for the first
    call.frames(2)
    tts.speak(0, 1000, 5)
    call.frames(12)
    assert values(call) == [(0, 4), (1000, 5), (2000, 3), (0, 4)]
    assert call.texts() == [{"action": "notify", "payload": {"say": 1}},
                            {"action": "notify", "payload": {"say": 2}}]
    assert first == [] and second == []  # heard by the model, not yet confirmed
    call.pipeline.receive_event("notify", {"payload": {"say": 1}})
    assert first[0].outcome == "played" and first[0].label == "one" and second == []
    call.pipeline.receive_event("notify", {"payload": {"say": 2}})
    assert second[0].outcome == "played" and second[0].heard == pytest.approx(0.06)


def test_a_clear_interrupts_what_is_said_and_what_is_still_being_synthesized():
    tts = ScriptedTts()
    call = call_with([Echo], rate=RATE, tts=tts)
    session = call.pipeline.session
    speaking = said(session.say("long"))
    waiting = said(session.say("later"))
    tts.speak(0, 1000, 50)  # before the call's first frame: it plays from that frame
    call.frames(10)
    cut = session.clear()
    assert [p.label for p in cut] == ["long", "later"]
    assert speaking[0].outcome == "interrupted" and speaking[0].heard == pytest.approx(0.2)
    assert waiting[0].outcome == "interrupted" and waiting[0].heard == 0
    assert tts.cancelled == ["later"]  # nobody needs it any more
    call.frames(5)
    assert values(call) == [(1000, 10), (0, 5)]


def test_a_clear_cuts_a_ready_text_still_waiting_behind_one_being_synthesized():
    """The say queue releases the next text when the first one's synthesis is abandoned
    (from inside the clear): by then the clear must have ended that one too, or the queue
    pushes a text that was cut (it failed with a ValueError, logged as an unhandled error)."""
    failures: list = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    tts = ScriptedTts()
    call = call_with([Echo], rate=RATE, tts=tts)
    session = call.pipeline.session
    slow = said(session.say("slow"))
    ready = said(session.say("ready"))
    tts.speak(1, 3000, 5)  # synthesized, waiting for "slow" to go first
    call.frames(3)
    cut = session.clear()
    assert [p.label for p in cut] == ["slow", "ready"] and tts.cancelled == ["slow"]
    assert slow[0].outcome == ready[0].outcome == "interrupted"
    call.frames(10)
    after = said(session.say("after"))
    tts.speak(2, 4000, 2)
    call.frames(5)
    assert values(call) == [(0, 13), (4000, 2), (0, 3)]  # what was cut never plays
    assert after == []  # still playing
    del slow, ready, cut, tts, call, session  # the failed Deferred is kept by the engine
    gc.collect()  # a Deferred's unhandled failure is logged when it is collected
    globalLogPublisher.removeObserver(observe)
    assert failures == []


def test_the_calls_end_fires_pending_says_and_later_ones_at_once():
    tts = ScriptedTts()
    call = call_with([Echo], rate=RATE, tts=tts)
    session = call.pipeline.session
    pending = said(session.say("never"))
    call.pipeline.close("hangup")
    assert pending[0].outcome == "ended" and tts.cancelled == ["never"]
    after = said(session.say("too late"))
    assert after[0].outcome == "ended" and len(tts.asked) == 1


def test_a_failed_synthesis_fails_its_say_and_the_next_one_plays():
    tts = ScriptedTts()
    call = call_with([Echo], rate=RATE, tts=tts)
    session = call.pipeline.session
    broken = said(session.say("broken"))
    fine = said(session.say("fine"))
    tts.speak(1, 3000, 2)
    tts.asked[0][4].errback(SpeechError("espeak-ng failed"))
    assert broken[0].check(SpeechError)
    call.frames(4)
    assert values(call) == [(3000, 2), (0, 2)] and fine == []
    assert session.playing == []


def test_say_from_a_step_enters_the_bus_at_that_step():
    tts = ScriptedTts()

    class Greeter(Processor):
        name = "greeter"

        def start(self):
            self.session.say("hello")

    class Mute(Processor):  # before the greeter: it cannot silence what the greeter says
        name = "mute"

        def process(self, inbound, outbound):
            return np.zeros(N, np.int16)

    call = call_with([Echo, Mute, Greeter], rate=RATE, tts=tts)
    tts.speak(0, 500, 3)
    call.frames(4)
    assert values(call) == [(500, 3), (0, 1)]
    assert call.pipeline.session.playing == [] and call.texts() == [
        {"action": "notify", "payload": {"say": 1}}]


def test_a_switch_ends_what_the_old_steps_play_and_say_not_what_the_app_plays():
    from voicews.pipeline.steps import PipelineSpec, Step

    tts = ScriptedTts()

    class Talker(Player):
        name = "talker"

        def start(self):
            self.said = said(self.session.say("never heard"))

    call = call_with([Echo, Talker], [None, PlayParams(notify=True)], rate=RATE, tts=tts)
    app = call.pipeline.session.play(level(300, 50), label="app")
    call.frames(5)
    talker = call.pipeline.processors[1]
    call.pipeline.switch(PipelineSpec("echo", (Step("echo", Echo, None),)))
    assert talker.playback.outcome == "ended" and talker.playback.heard == pytest.approx(0.1)
    assert talker.said[0].outcome == "ended" and tts.cancelled == ["never heard"]
    assert call.texts() == [{"action": "notify", "payload": {"mark": "prompt"}}]  # released
    call.frames(10)
    assert app.playing and app.heard == pytest.approx(0.3)
    assert call.pipeline.session.playing == [app]
    assert set(call.audio()[-N:].tolist()) == {300}  # the app's prompt alone, no talker


def test_a_reply_streamed_in_small_pieces_keeps_the_book_small():
    """A bot playing 20 ms at a time (notifying every tenth piece) for a minute: the book
    holds what is still on its way, and each notify covers only the pieces since the last."""

    class Streamer(Processor):
        name = "streamer"

        def process(self, inbound, outbound):
            self.session.play(level(900, 1))
            if self.session.frames_in % 10 == 0:
                self.session.notify({"piece": self.session.frames_in})
            return outbound

    call = call_with([Echo, Streamer], rate=RATE)
    book = call.pipeline.playbacks
    for second in range(60):
        call.frames(50)
        # (a notify waits in the lane behind its piece: the second's last goes out next)
        assert [len(mark.covered) for mark in book._sent] == [10] * (4 if second == 0 else 5)
        for mark in list(book._sent):  # Vonage answers what has played
            call.pipeline.receive_event("notify", {"payload": mark.payload})
        assert not book._sent and max(len(live) for live in book._live.values()) <= 128
    assert values(call) == [(0, 1), (900, 2999)]  # played from the frame after the first
    assert [p.heard for p in call.pipeline.session.playing] == [0]  # the last frame's piece
