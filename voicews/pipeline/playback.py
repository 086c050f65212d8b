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

    __slots__ = ("_book", "_heard", "_listed", "_marks", "_outcome", "_seq", "_waiter", "label",
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
        self._listed = False  # in the book's queue of its step
        self._seq = 0  # when it was listed (the book's count)
        self._waiter: Deferred[Playback] | None = None

    @property
    def seconds(self) -> float:
        """Its length so far, in seconds."""
        return self.samples / self.rate

    @property
    def heard(self) -> float:
        """Seconds of it the caller has heard (frozen once it has ended)."""
        return self.heard_samples() / self.rate

    def heard_samples(self, ear: float | None = None) -> int:
        """Samples heard; `ear`: the playout position, when the caller has it at hand."""
        if self._heard is not None:
            return self._heard
        if self.start is None:
            return 0
        if ear is None:
            ear = self._book.ear()
        return int(min(self.taken, max(0.0, ear - self.start)))

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

    def _done_by_model(self, ear: float | None = None) -> bool:
        return (not self.pending and not self._marks and self.taken == self.samples
                and self.heard_samples(ear) >= self.samples)

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
    """The playbacks of one call still on their way, and the notifies that cover them.

    Kept per step in the order their audio was queued: a step's lane plays in that order,
    so what has finished is always at the front, and each play or notify costs the same
    however much audio is queued (a bot streaming a long reply in small pieces).
    """

    def __init__(self, ear: Callable[[], float],
                 push: Callable[[Playback, Any], None]) -> None:
        self.ear = ear
        """Samples of the output stream the caller has heard by now (the playout model)."""
        self._push = push
        self._live: dict[int, deque[Playback]] = {}  # queued, per step, in queue order
        self._prune_at: dict[int, int] = {}  # a step's queue length that prompts a prune
        self._pending: list[Playback] = []  # texts being synthesized
        self._listed = 0
        self._marked: dict[int, int] = {}  # per step: what was listed at its last notify
        self._extended: dict[int, list[Playback]] = {}  # listed before it, extended since
        self._sent: deque[Mark] = deque()

    def new(self, position: int, step: str, label: str | None, rate: int,
            replace: bool = False, pending: bool = False) -> Playback:
        playback = Playback(self, position, step, label, rate, replace, pending)
        if pending:
            self._pending.append(playback)
        return playback

    def extend(self, playback: Playback, samples: Any) -> None:
        self._push(playback, samples)

    def pushed(self, playback: Playback) -> None:
        """Audio of `playback` was queued on its step's lane."""
        position = playback.position
        if not playback._listed:
            if playback.pending:
                playback.pending = False
                self._pending.remove(playback)
            playback._listed = True
            self._listed += 1
            playback._seq = self._listed
            live = self._live.setdefault(position, deque())
            live.append(playback)
            if len(live) >= self._prune_at.get(position, 64):
                self._prune(live)  # now and then: each play costs the same, memory is bounded
                self._prune_at[position] = max(64, 2 * len(live))
        elif playback._seq <= self._marked.get(position, 0):
            extended = self._extended.setdefault(position, [])
            if playback not in extended:
                if len(extended) >= 64:  # a step that never notifies: forget what has ended
                    extended[:] = [p for p in extended if p._outcome is None]
                extended.append(playback)

    def playing(self) -> list[Playback]:
        """Playbacks the caller hears now or will, oldest first."""
        ear = self.ear()
        found = []
        for live in self._live.values():
            self._prune(live)
            found += [p for p in live if p._outcome is None and p.heard_samples(ear) < p.samples]
        return sorted(found, key=lambda p: p.start if p.start is not None else ear + p.samples)

    def _prune(self, live: deque[Playback]) -> None:
        """Forget what has ended at the front; what the model says has played ends so."""
        ear: float | None = None
        while live:
            head = live[0]
            if head._outcome is None:
                if ear is None:
                    ear = self.ear()
                if not head._done_by_model(ear):
                    return
                self.finish(head, "played")
            live.popleft()
            head._listed = False

    # -- notify marks -------------------------------------------------------------------

    def mark(self, position: int, payload: Any) -> Mark:
        """A notify from `position`: it covers what that step queued since its last one."""
        last = self._marked.get(position, 0)
        self._marked[position] = self._listed
        fresh: list[Playback] = []
        for p in reversed(self._live.get(position, ())):
            if p._seq <= last:
                break
            fresh.append(p)
        fresh.reverse()
        covered = [(p, p.samples) for p in self._extended.pop(position, []) + fresh
                   if p._outcome is None and p.samples]
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
        return self._end(outcome, lambda position: True)

    def end_steps(self, outcome: Outcome) -> None:
        """The steps were switched out: their playbacks (not the app's) end now."""
        self._end(outcome, lambda position: position > 0)

    def _end(self, outcome: Outcome, which: Callable[[int], bool]) -> list[Playback]:
        ear = self.ear()
        cut = []
        ended = []
        for position in [p for p in self._live if which(p)]:
            for p in self._live.pop(position):
                p._listed = False
                if p._outcome is not None:
                    continue
                if p._done_by_model(ear):
                    ended.append(self._settle(p, "played"))
                else:
                    ended.append(self._settle(p, outcome, ear))
                    cut.append(p)
            self._extended.pop(position, None)
        cut.sort(key=lambda p: p.start if p.start is not None else ear + p.samples)
        pending = [p for p in self._pending if which(p.position)]
        self._pending = [p for p in self._pending if not which(p.position)]
        ended += [self._settle(p, outcome, ear) for p in pending]
        # Every one has ended before any Deferred fires: a callback (the say queue releasing
        # the next text, a bot answering) must not find a text cut here still on its way.
        for playback in ended:
            self._fire(playback)
        return cut + pending

    def finish(self, playback: Playback, outcome: Outcome, ear: float | None = None) -> None:
        """End one playback now (its Deferred, if ``say`` made one, fires with it)."""
        if playback._outcome is None:
            self._fire(self._settle(playback, outcome, ear))

    def _settle(self, playback: Playback, outcome: Outcome,
                ear: float | None = None) -> Playback:
        if playback.pending:
            playback.pending = False
            if playback in self._pending:
                self._pending.remove(playback)
        playback._heard = (playback.samples if outcome == "played"
                           else playback.heard_samples(ear))
        playback._outcome = outcome
        return playback

    @staticmethod
    def _fire(playback: Playback) -> None:
        waiter, playback._waiter = playback._waiter, None
        if waiter is not None:
            waiter.callback(playback)
