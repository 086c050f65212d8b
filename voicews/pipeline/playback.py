"""What of ours is playing on a call, how much of it the caller has heard, and how it ended.

Every ``session.play`` (and ``session.say``) makes a :class:`Playback`.  The mix bus counts
its samples as they leave their step (``taken``) and notes where its first sample sits in the
stream of samples sent to Vonage (``start``).  What the caller has heard is read off the
paced sender's playout model: the caller's ear is at ``(frames sent - lead) x frame`` in that
stream, so a playback has been heard up to ``ear - start`` (at most what was taken).  The
model does not know the network's transit time (Vonage plays a frame some ms after we sent
it), so ``heard`` runs early by about that much.

A ``notify`` a step sends covers every playback of that step queued or still playing at that
moment: when Vonage answers it, they have been played, confirmed.  A playback no notify
covers counts as played once the model says the caller heard it all.  A ``clear``
(barge-in) ends every playback still on its way as *interrupted*, with what was heard frozen;
the call's end ends the rest as *ended*.

The book is looked at only when audio is played, a notify is sent or answered, or someone
asks: a frame with nothing played never touches it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    from twisted.internet.defer import Deferred

Outcome = Literal["played", "interrupted", "ended"]

MAX_MARKS = 1000
"""Notifies covering playbacks that may wait for Vonage's answer; older ones are forgotten
(their playbacks then end as played by the model, or as interrupted/ended)."""


class Playback:
    """One piece of audio played into the call: what it is, how far it got, how it ended.

    ``session.play`` returns one at once; ``session.say`` fires its Deferred with one once
    it has finished.  Read ``heard`` at any time; ``outcome`` is None while the audio is on
    its way and then ``"played"``, ``"interrupted"`` (a clear, e.g. a barge-in, dropped what
    was left) or ``"ended"`` (the call ended first).
    """

    __slots__ = ("_book", "_heard", "_listed", "_marks", "_outcome", "_waiter", "label",
                 "pending", "position", "rate", "replace", "samples", "start", "step", "taken")

    def __init__(self, book: Playbacks, position: int, step: str, label: str | None,
                 rate: int, replace: bool = False, pending: bool = False) -> None:
        self._book = book
        self.position = position
        self.step = step
        """The session that played it: a processor's name, or ``"app"``."""
        self.label = label
        """What it is, for events and logs (the text said, the file played), or None."""
        self.rate = rate
        self.replace = replace
        self.pending = pending
        """Not audio yet (a text being synthesized)."""
        self.samples = 0
        """Samples queued so far (the bus may refuse some past its bound)."""
        self.taken = 0
        """Samples that have left their step, into the call's output."""
        self.start: int | None = None
        """Where its first sample sits in the stream of samples sent to Vonage."""
        self._outcome: Outcome | None = None
        self._heard: int | None = None
        self._marks = 0  # notifies covering it, sent or queued, not yet answered
        self._listed = True
        self._waiter: Deferred[Playback] | None = None

    @property
    def seconds(self) -> float:
        """Its length so far, in seconds."""
        return self.samples / self.rate

    @property
    def heard(self) -> float:
        """Seconds of it the caller has heard (frozen once it has ended)."""
        return self.heard_samples() / self.rate

    def heard_samples(self) -> int:
        if self._heard is not None:
            return self._heard
        if self.start is None:
            return 0
        return int(min(self.taken, max(0.0, self._book.ear() - self.start)))

    @property
    def outcome(self) -> Outcome | None:
        """None while on its way; then played, interrupted or ended."""
        if self._outcome is None and self._done_by_model():
            return "played"
        return self._outcome

    @property
    def playing(self) -> bool:
        """The caller hears it now, or will: what a barge-in interrupts."""
        return (self._outcome is None and not self.pending
                and self.heard_samples() < self.samples)

    def extend(self, samples: np.ndarray) -> None:
        """Queue more audio as part of this playback (a reply streamed in pieces).

        It goes after anything queued on the same step since; a playback that has been
        interrupted or has ended takes no more (check ``outcome``).
        """
        if self._outcome is None:
            self._book.extend(self, samples)

    def _done_by_model(self) -> bool:
        return (not self.pending and not self._marks and self.taken == self.samples
                and self.heard_samples() >= self.samples)

    def __repr__(self) -> str:
        return (f"<Playback {self.step} {self.label!r} {self.heard:.2f}/{self.seconds:.2f} s "
                f"{self.outcome or 'on its way'}>")


class Mark:
    """A notify payload, and the playbacks it covers with their length at the time."""

    __slots__ = ("covered", "payload")

    def __init__(self, payload: Any, covered: list[tuple[Playback, int]]) -> None:
        self.payload = payload
        self.covered = covered


class Playbacks:
    """The playbacks of one call still on their way, and the notifies that cover them."""

    def __init__(self, ear: Callable[[], float],
                 push: Callable[[Playback, Any], None]) -> None:
        self.ear = ear
        """Samples of the output stream the caller has heard by now (the playout model)."""
        self._push = push
        self._live: list[Playback] = []
        self._sent: deque[Mark] = deque()

    def new(self, position: int, step: str, label: str | None, rate: int,
            replace: bool = False, pending: bool = False) -> Playback:
        self.prune()
        playback = Playback(self, position, step, label, rate, replace, pending)
        self._live.append(playback)
        return playback

    def extend(self, playback: Playback, samples: Any) -> None:
        if not playback._listed:
            playback._listed = True
            self._live.append(playback)
        self._push(playback, samples)

    def playing(self) -> list[Playback]:
        """Playbacks the caller hears now or will, oldest first."""
        self.prune()
        return [p for p in self._live if p.playing]

    def prune(self) -> None:
        """Forget what has ended; what the model says has played ends as played."""
        keep = []
        for p in self._live:
            if p._outcome is None and p._done_by_model():
                self.finish(p, "played")
            elif p._outcome is None:
                keep.append(p)
            else:
                p._listed = False
        self._live = keep

    # -- notify marks -------------------------------------------------------------------

    def mark(self, position: int, payload: Any) -> Mark:
        """A notify from `position`: it covers that step's playbacks on their way."""
        covered = [(p, p.samples) for p in self._live
                   if p.position == position and p._outcome is None and not p.pending
                   and p.samples]
        for p, _ in covered:
            p._marks += 1
        return Mark(payload, covered)

    def sent(self, mark: Mark, text: str) -> None:
        """`mark` went to Vonage as `text`: wait for its answer (when it covers anything)."""
        if not mark.covered:
            return
        mark.payload = json.loads(text)["payload"]  # as Vonage will send it back
        self._sent.append(mark)
        if len(self._sent) > MAX_MARKS:
            self._release(self._sent.popleft(), answered=False)

    def answered(self, payload: Any) -> None:
        """Vonage answered a notify: it and every mark sent before it have played."""
        for index, mark in enumerate(self._sent):
            if mark.payload == payload:
                for _ in range(index + 1):
                    self._release(self._sent.popleft(), answered=True)
                return

    def _release(self, mark: Mark, answered: bool) -> None:
        for p, length in mark.covered:
            p._marks -= 1
            if answered and p._outcome is None and p.samples == length == p.taken:
                self.finish(p, "played")

    # -- endings ------------------------------------------------------------------------

    def end_all(self, outcome: Outcome) -> list[Playback]:
        """A clear (interrupted) or the call's end (ended): every playback still on its way
        ends now, with what the caller heard frozen; returns those cut short, oldest first.

        Must run before the sender forgets its playout model (the clear resets it).
        """
        cut = []
        for p in self._live:
            if p._outcome is not None:
                continue
            if p._done_by_model():
                self.finish(p, "played")
            else:
                self.finish(p, outcome)
                cut.append(p)
        self._live = []
        return cut

    def end_steps(self, outcome: Outcome) -> None:
        """The steps were switched out: their playbacks (not the app's) end now."""
        for p in self._live:
            if p.position and p._outcome is None:
                self.finish(p, outcome)
        self.prune()

    def finish(self, playback: Playback, outcome: Outcome) -> None:
        """End one playback now (its Deferred, if ``say`` made one, fires with it)."""
        playback._heard = playback.samples if outcome == "played" else playback.heard_samples()
        playback._outcome = outcome
        playback._listed = False
        waiter, playback._waiter = playback._waiter, None
        if waiter is not None:
            waiter.callback(playback)
