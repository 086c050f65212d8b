"""The bridge client's tests' rig: a private Twisted reactor turned by hand (`Net`), and
`Wrapper`, which does what the bridge processor does with the client (voicews.bridge.client)
and a protocol state machine: send the opening, the caller's frames and the mark answers;
carry out what the bot asks."""

from __future__ import annotations

import time

import numpy as np
from twisted.internet.epollreactor import EPollReactor

from voicews.bridge.actions import Clear, Ignored, Mark, Play, Reply
from voicews.bridge.client import BridgeClient
from voicews.bridge.twilio import TwilioStream
from voicews.bridge.vonage import VonageStream

UUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
RATE = 16000
FRAME = RATE // 50


class Net:
    """A private reactor, turned by hand (a test module's ``net`` fixture: ``with Net() as n``)."""

    def __init__(self) -> None:
        self.reactor = EPollReactor()

    def turn_until(self, done, timeout: float = 5.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.005)

    def turn(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.005)

    def close(self) -> None:
        self.reactor.disconnectAll()
        self.turn(0.05)
        self.reactor._poller.close()

    def __enter__(self) -> Net:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def result_of(net: Net, d, timeout: float = 5.0):
    """Turn the reactor until Deferred `d` fires; its result, or the exception it failed with."""
    box = []
    d.addBoth(box.append)
    net.turn_until(lambda: box, timeout, "a Deferred")
    return box[0].value if hasattr(box[0], "value") and hasattr(box[0], "trap") else box[0]


class Wrapper:
    """What the bridge processor does, reduced to what these tests need."""

    def __init__(self, net: Net, url: str, protocol: str = "twilio", **options) -> None:
        self.net = net
        self.protocol = protocol
        self.streams: list[TwilioStream | VonageStream] = []
        self.played: list[np.ndarray] = []
        self.marks: list[Mark] = []
        self.clears = 0
        self.ignored: list[str] = []
        self.closes: list[tuple[str, bool]] = []
        self.opens: list[int] = []
        self.client = BridgeClient(
            net.reactor, url, on_open=self.opened, on_message=self.message,
            on_close=lambda reason, retrying: self.closes.append((reason, retrying)),
            **options,
        )

    @property
    def stream(self):
        return self.streams[-1]

    def opened(self, attempt: int) -> None:
        self.opens.append(attempt)
        if self.protocol == "twilio":
            stream = TwilioStream(UUID, {"pipeline": "bot"}, RATE, attempt=attempt)
        else:
            stream = VonageStream({"pipeline": "bot"}, RATE)
        self.streams.append(stream)
        for message in stream.opening():
            self.client.send(message)

    def message(self, message) -> None:
        for action in self.stream.receive(message):
            if isinstance(action, Play):
                self.played.append(action.samples)
            elif isinstance(action, Mark):
                self.marks.append(action)
            elif isinstance(action, Clear):
                self.clears += 1
            elif isinstance(action, Reply):
                self.client.send(action.message)
            elif isinstance(action, Ignored):
                self.ignored.append(action.reason)

    def start(self):
        return result_of(self.net, self.client.start())

    def send_audio(self, samples: np.ndarray) -> None:
        for i in range(0, len(samples) - FRAME + 1, FRAME):
            assert self.client.send(self.stream.media(samples[i:i + FRAME]))

    def play_marks(self) -> None:
        """As if Vonage said every mark's audio has played."""
        for mark in self.marks:
            for answer in self.stream.mark_played(mark.id):
                self.client.send(answer)
        self.marks.clear()

    def heard(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.empty(0, "<i2")


def sweep(rate: int, seconds: float) -> np.ndarray:
    """A 300 Hz -> 3 kHz chirp at -12 dBFS: no two stretches of it look alike."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (300 * t + (3000 - 300) / (2 * seconds) * t**2)
    return (np.sin(phase) * 8192).astype("<i2")
