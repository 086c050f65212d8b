"""bridge: connect the call to a bot over a WebSocket that speaks Vonage's protocol or Twilio's.

One client WebSocket per call (voicews.bridge.client).  The caller's frames go
to the bot as the protocol wants them (voicews.bridge.vonage / .twilio); what
the bot sends back is carried out here:

- its audio is played through the mix bus at this step (``session.play``), so
  later steps (gain, record...) treat it like any other audio.  The step's own
  output is its input, passed through: earlier steps' audio mixes with the bot's;
- its marks (Twilio ``mark``, Vonage ``notify``) become a Vonage notify queued
  behind the audio received before them, and are answered when Vonage says that
  audio has played.  Twilio audio goes through a resampler that holds ~30 ms
  back, so a mark waits for those samples too (``held``) rather than being
  answered before its audio has really played;
- its ``clear`` is the call's barge-in (``session.clear``), and the marks it
  dropped are answered at once;
- the caller's DTMF (any ``dtmf`` event with a digit) is forwarded.

Frames that arrive before the bot is connected (the first ones of the call, or
during a reconnection) are kept in a small bounded buffer (``buffer_seconds``,
1 s by default: 32 KB at 16 kHz) and sent, oldest first, once the socket opens:
what a caller says while TLS and the handshake finish (100-300 ms over the
internet) reaches the bot instead of being cut, and a slow far end costs at most
that much memory (older frames give way first, counted).  Key presses made
meanwhile (up to 32) follow the buffered frames.

A bot sending faster than real time is usual (text-to-speech renders faster than
it plays), so its audio is queued up to ``max_lead_seconds`` ahead of the
caller's ear (``session.queued_seconds``); what comes beyond is dropped, counted
and logged once per call.  A message the protocol does not understand is ignored
with one warning per minute at most; the call goes on.

When the bot cannot be reached, or its socket closes or drops (after the
``reconnect`` tries, if any), ``on_failure`` applies: ``hangup`` closes the
call's socket with 1000 if the bot closed with 1000 (it meant to end) and 1014
(bad gateway) otherwise, outcome ``hangup_step``; ``continue`` keeps the call and
the step passes its input through from then on.  The step emits
``bridge_connected`` {url, attempt}, ``bridge_disconnected`` {url, reason} (a
retry follows) and ``bridge_failed`` {url, reason, on_failure} for other steps
and the application.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from typing import Any

import numpy as np
from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from voicews import Event, Processor, Session, hookimpl
from voicews.bridge.actions import Action, Clear, FarEnd, Mark, Play, Reply
from voicews.bridge.client import BridgeClient, BridgeError
from voicews.bridge.twilio import TwilioStream
from voicews.bridge.vonage import VonageStream
from voicews.processors.bridge_params import BridgeParams, Prepared, prepare

log = Logger(namespace="voicews.processors.bridge")

CLOSE_NORMAL = 1000
CLOSE_BAD_GATEWAY = 1014
"""RFC 6455's registry: a gateway got an invalid response from the server behind it."""
LULL_SECONDS = 0.1
"""No audio from a Twilio bot for this long: it has paused, so flush the resampler's tail."""
MAX_EARLY_KEYS = 32
"""Key presses kept while the bot is not connected."""
GARBAGE_LOG_SECONDS = 60.0
"""At most one warning this often about ignored messages, per call."""

_tags = itertools.count(1)
"""Tells this step's notify payloads from another bridge step's in the same call."""


class Bridge(Processor):
    name = "bridge"
    Params = BridgeParams
    params: Prepared

    @classmethod
    def prepare(cls, params: BridgeParams, context: Any) -> Prepared:
        return prepare(params, context)

    def __init__(self, session: Session, params: Prepared) -> None:
        super().__init__(session, params)
        info = session.info
        self.rate = info.rate
        self.call_id = info.uuid or str(uuid.uuid4())
        self.headers = {**info.headers, **params.parameters}
        self.tag = next(_tags)
        self.client: BridgeClient | None = None
        self.stream: FarEnd | None = None
        self.attempt = -1
        self.early: deque[np.ndarray] = deque(maxlen=params.buffer_frames)
        """The caller's latest frames, waiting for the socket to open."""
        self.early_keys: deque[Event] = deque(maxlen=MAX_EARLY_KEYS)
        """Key presses waiting for the socket: sent after the frames."""
        self.held: deque[tuple[int, int]] = deque()
        """Marks waiting for the resampler's tail: (sample position in `out`, mark id)."""
        self.out = 0
        """Samples the bot's audio has given for the caller on this stream (played or not)."""
        self.tail_due = False
        self.last_media = 0.0
        self.closing = False
        self.failed: str | None = None
        # What a user may want to know after the call (logged at its end when not zero).
        self.frames_unsent = 0
        """Caller frames the bot never got (buffer full, socket gone or backed up)."""
        self.dropped_samples = 0
        """The bot's samples dropped past ``max_lead_seconds``."""
        self.ignored = 0
        """Messages from the bot that were not understood."""
        self._ignored_logged: float | None = None

    # -- the call's life -------------------------------------------------------------------

    def start(self) -> defer.Deferred[Any] | None:
        from twisted.internet import reactor

        p = self.params
        try:
            self.client = BridgeClient(
                reactor, p.url, on_open=self._opened, on_message=self._message,
                on_close=self._lost, headers=p.headers, ca_file=p.ca_file,
                timeout=p.connect_timeout, reconnect=p.reconnect, clock=self.session.clock,
                name=f"bridge uuid={self.call_id}",
            )
        except (OSError, ValueError) as exc:  # the CA file changed since the config loaded
            self._give_up(f"cannot connect to {p.url}: {exc}", CLOSE_BAD_GATEWAY)
            return None
        return self.client.start().addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> None:
        failure.trap(BridgeError)
        if not self.closing:
            self._give_up(failure.value.reason, CLOSE_BAD_GATEWAY)

    def close(self) -> defer.Deferred[None] | None:
        """Send the protocol's goodbye (Twilio ``stop``) and close; the call waits for it."""
        self.closing = True
        self.early.clear()
        self.early_keys.clear()
        stream, self.stream = self.stream, None
        client = self.client
        if self.frames_unsent or self.dropped_samples or self.ignored:
            log.info(
                "bridge {url}: {unsent} caller frames not sent, {dropped:.2f} s of the bot's "
                "audio dropped past the lead limit, {ignored} messages ignored uuid={uuid}",
                url=self.params.url, unsent=self.frames_unsent,
                dropped=self.dropped_samples / self.rate, ignored=self.ignored,
                uuid=self.call_id,
            )
        if client is None:
            return None
        if stream is not None:
            for message in stream.stop():
                client.send(message)
        return client.close(CLOSE_NORMAL, "call ended")

    # -- the caller's side -----------------------------------------------------------------

    def process(self, inbound: np.ndarray, outbound: np.ndarray | None) -> np.ndarray | None:
        stream = self.stream
        if stream is not None:
            assert self.client is not None
            if not self.client.send(stream.media(inbound)):
                self.frames_unsent += 1
            if self.tail_due and self.session.clock.seconds() - self.last_media >= LULL_SECONDS:
                self._drain(stream)
        elif self.failed is None and not self.closing:
            if len(self.early) == self.early.maxlen:
                self.frames_unsent += 1  # the oldest gives way (or this one, with no buffer)
            self.early.append(inbound)
        return outbound

    def on_event(self, event: Event) -> None:
        if event.kind == "notify":
            payload = event.payload
            if (
                isinstance(payload, dict) and payload.get("bridge") == self.tag
                and payload.get("stream") == self.attempt and self.stream is not None
                and isinstance(payload.get("mark"), int)
            ):
                self._send_all(self.stream.mark_played(payload["mark"]))
        elif event.kind == "dtmf" and event.digit is not None:
            if self.stream is not None:
                assert self.client is not None
                self.client.send(self.stream.dtmf(event.digit, event.duration))
            elif self.failed is None and not self.closing:
                self.early_keys.append(event)

    # -- the bot's side --------------------------------------------------------------------

    def _opened(self, attempt: int) -> None:
        assert self.client is not None
        self.attempt = attempt
        stream: FarEnd
        if self.params.protocol == "twilio":
            stream = TwilioStream(self.call_id, self.headers, self.rate, attempt=attempt)
        else:
            stream = VonageStream(self.headers, self.rate)
        self.stream = stream
        self.held.clear()
        self.tail_due = False
        self._send_all(stream.opening())
        frames, keys = list(self.early), list(self.early_keys)
        self.early.clear()
        self.early_keys.clear()
        for frame in frames:
            if not self.client.send(stream.media(frame)):
                self.frames_unsent += 1
        for key in keys:
            self.client.send(stream.dtmf(key.digit or "", key.duration))
        self.session.emit("bridge_connected", url=self.params.url, attempt=attempt)

    def _message(self, message: str | bytes) -> None:
        stream = self.stream
        if stream is None or self.closing:
            return
        try:
            self._carry_out(stream, stream.receive(message))
        except Exception:  # a bug of ours: say so once, keep the call
            self._ignore("raised while handling it", Failure())

    def _carry_out(self, stream: FarEnd, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Play):
                self._play(stream, action.samples)
            elif isinstance(action, Mark):
                self._mark(stream, action.id)
            elif isinstance(action, Clear):
                self.held.clear()
                self.tail_due = False
                self.session.clear()
            elif isinstance(action, Reply):
                assert self.client is not None
                self.client.send(action.message)
            else:
                self._ignore(action.reason)

    def _play(self, stream: FarEnd, samples: np.ndarray) -> None:
        """Queue the bot's audio; marks whose position it reaches go out right after theirs."""
        self.last_media = self.session.clock.seconds()
        start = self.out
        end = self.out = start + len(samples)
        held = self.held
        if held and held[0][0] <= end:
            cut = start
            while held and held[0][0] <= end:
                position, mark_id = held.popleft()
                if position > cut:
                    self._queue(samples[cut - start : position - start])
                    cut = position
                self._notify(mark_id)
            samples = samples[cut - start :]
        self._queue(samples)
        self.tail_due = stream.held_samples > 0

    def _queue(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        room = int((self.params.max_lead_seconds - self.session.queued_seconds) * self.rate)
        if len(samples) > room:
            if not self.dropped_samples:
                log.warn(
                    "bridge {url}: the bot is sending audio faster than it plays; dropping "
                    "what is over {lead:g} s ahead (max_lead_seconds) uuid={uuid}",
                    url=self.params.url, lead=self.params.max_lead_seconds, uuid=self.call_id,
                )
            self.dropped_samples += len(samples) - max(room, 0)
            samples = samples[: max(room, 0)]
        if len(samples):
            self.session.play(samples)

    def _mark(self, stream: FarEnd, mark_id: int) -> None:
        position = self.out + stream.held_samples
        if self.held:
            self.held.append((max(position, self.held[-1][0]), mark_id))
        elif position > self.out:
            self.held.append((position, mark_id))
        else:
            self._notify(mark_id)

    def _notify(self, mark_id: int) -> None:
        self.session.notify({"bridge": self.tag, "stream": self.attempt, "mark": mark_id})

    def _drain(self, stream: FarEnd) -> None:
        """The bot paused: play what the resampler still holds, then every waiting mark."""
        self.tail_due = False
        for action in stream.drain():
            if isinstance(action, Play):
                self._play(stream, action.samples)
        while self.held:
            self._notify(self.held.popleft()[1])

    def _send_all(self, messages: list[str]) -> None:
        assert self.client is not None
        for message in messages:
            self.client.send(message)

    def _ignore(self, reason: str, failure: Failure | None = None) -> None:
        self.ignored += 1
        now = self.session.clock.seconds()
        if self._ignored_logged is not None and now - self._ignored_logged < GARBAGE_LOG_SECONDS:
            return
        self._ignored_logged = now
        extra = {"log_failure": failure} if failure is not None else {}
        log.emit(
            LogLevel.error if failure is not None else LogLevel.warn,
            "bridge {url}: ignored a message from the bot: {reason} ({count} so far; "
            "at most one line a minute) uuid={uuid}",
            url=self.params.url, reason=reason, count=self.ignored, uuid=self.call_id, **extra,
        )

    # -- failures --------------------------------------------------------------------------

    def _lost(self, reason: str, retrying: bool) -> None:
        self.stream = None
        self.held.clear()
        self.tail_due = False
        if self.closing:
            return
        if retrying:
            self.session.emit("bridge_disconnected", url=self.params.url, reason=reason)
            return
        assert self.client is not None
        normal = self.client.close_code == CLOSE_NORMAL
        self._give_up(reason, CLOSE_NORMAL if normal else CLOSE_BAD_GATEWAY)

    def _give_up(self, reason: str, code: int) -> None:
        """No more bot on this call: hang up, or go on passing the input through."""
        self.failed = reason
        self.stream = None
        self.early.clear()
        self.early_keys.clear()
        on_failure = self.params.on_failure
        self.session.emit("bridge_failed", url=self.params.url, reason=reason,
                          on_failure=on_failure)
        if on_failure == "hangup":
            self.session.hangup(code, f"bridge: {reason}")
        else:
            log.warn("bridge: {reason}; the call goes on without the bot (on_failure: "
                     "continue) uuid={uuid}", reason=reason, uuid=self.call_id)


@hookimpl
def register_processors(register: Any) -> None:
    register(Bridge)
