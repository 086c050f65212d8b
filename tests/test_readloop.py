"""The shared read loop (voicews.call.readloop), on a real epoll reactor with real sockets.

Each test makes its own EPollReactor (not the global one), listens on loopback,
connects plain client sockets and turns the reactor by hand until what a user of
a TCP transport would see has happened: every byte in order, the end of the
connection reported the way Twisted reports it, a misbehaving connection dropped
alone.  Each runs twice: the read loop's epoll set nested in the reactor's (one
reader), and merged (the fast path's ``merge_poll``: our set is the reactor's wait).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import pytest
from twisted.internet import error
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Factory, Protocol

from voicews.call.fastpath import merge_poll
from voicews.call.readloop import CallReader

pytestmark = pytest.mark.skipif(not CallReader.available(), reason="needs epoll (Linux)")


class Recorder(Protocol):
    """Adopts its socket on connect, like CallProtocol does once its WebSocket is open."""

    def __init__(self, reader: CallReader, behaviour: str = "record") -> None:
        self.reader = reader
        self.behaviour = behaviour
        self.received = bytearray()
        self.reads = 0
        self.lost = None
        self.fd = None

    def connectionMade(self):  # noqa: N802
        self.fd = self.reader.adopt(self, self.transport)

    def dataReceived(self, data):  # noqa: N802
        self.reads += 1
        self.received += data
        if self.behaviour == "raise" and b"boom" in data:
            raise RuntimeError("a bug in dataReceived")
        if self.behaviour == "flood" and b"flood" in data:
            self.transport.write(b"x" * (8 * 1024 * 1024))  # far more than the socket takes
        if self.behaviour == "hang-up" and b"bye" in data:
            self.transport.write(b"bye to you")
            self.transport.loseConnection()

    def connectionLost(self, reason):  # noqa: N802
        if self.fd is not None:
            self.reader.release(self.fd, self)
        self.lost = reason


class Bench:
    """A private reactor listening on loopback, and the protocols it made."""

    def __init__(self, behaviour: str = "record", merged: bool = False) -> None:
        self.reactor = EPollReactor()
        self.reader = CallReader(self.reactor, merge_poll if merged else None)
        self.protocols: list[Recorder] = []
        factory = Factory.forProtocol(lambda: self._made(behaviour))
        self.port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")

    def _made(self, behaviour: str) -> Recorder:
        protocol = Recorder(self.reader, behaviour)
        self.protocols.append(protocol)
        return protocol

    def connect(self) -> tuple[socket.socket, Recorder]:
        client = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        before = len(self.protocols)
        self.turn_until(lambda: len(self.protocols) > before)
        return client, self.protocols[-1]

    def turn_until(self, done, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out turning the reactor"
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.01)

    def close(self) -> None:
        self.reader.close()
        self.port.stopListening()
        for _ in range(5):
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0)
        self.reactor._poller.close()


@pytest.fixture(params=["nested", "merged"])
def bench(request):
    made = []

    def make(behaviour: str = "record") -> Bench:
        made.append(Bench(behaviour, merged=request.param == "merged"))
        return made[-1]

    yield make
    for b in made:
        b.close()


def test_bytes_arrive_in_order_through_the_reader_not_the_reactor(bench):
    b = bench()
    client, proto = b.connect()
    assert proto.fd is not None
    # The transport left the reactor's readers; the reader's epoll set is there instead,
    # or (merged) is the reactor's wait, with the reactor's own set inside it.
    assert proto.transport not in b.reactor.getReaders()
    assert b.reader.merged == (b.reader not in b.reactor.getReaders())
    assert b.reader.merged == ("doIteration" in vars(b.reactor))
    sent = b"".join(struct.pack(">I", i) * 160 for i in range(500))
    for i in range(0, len(sent), 640):
        client.sendall(sent[i : i + 640])
    b.turn_until(lambda: len(proto.received) == len(sent))
    assert bytes(proto.received) == sent
    client.close()
    b.turn_until(lambda: proto.lost is not None)


def test_end_of_file_is_handed_to_twisted_and_reported_as_done(bench):
    b = bench()
    client, proto = b.connect()
    client.sendall(b"last words")
    client.shutdown(socket.SHUT_WR)
    b.turn_until(lambda: proto.lost is not None)
    assert bytes(proto.received) == b"last words"  # nothing lost in the hand-over
    assert proto.lost.check(error.ConnectionDone)
    assert proto.fd not in b.reader._adopted
    client.close()


def test_a_reset_is_reported_as_connection_lost(bench):
    b = bench()
    client, proto = b.connect()
    client.sendall(b"abc")
    b.turn_until(lambda: proto.received == b"abc")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST
    b.turn_until(lambda: proto.lost is not None)
    assert proto.lost.check(error.ConnectionLost, error.ConnectionDone)
    assert not proto.transport.connected


def test_a_protocol_that_raises_is_dropped_alone(bench):
    b = bench("raise")
    bad_client, bad = b.connect()
    good_client, good = b.connect()
    bad_client.sendall(b"boom")
    good_client.sendall(b"fine")
    b.turn_until(lambda: bad.lost is not None and good.received == b"fine")
    good_client.sendall(b" still")
    b.turn_until(lambda: good.received == b"fine still")
    assert good.lost is None
    bad_client.settimeout(5)
    assert bad_client.recv(10) == b""  # the server closed it
    for c in (bad_client, good_client):
        c.close()


def test_closing_from_dataReceived_flushes_and_closes(bench):  # noqa: N802
    b = bench("hang-up")
    client, proto = b.connect()
    client.sendall(b"bye")
    b.turn_until(lambda: proto.lost is not None)
    client.settimeout(5)
    assert client.recv(100) == b"bye to you"
    assert client.recv(100) == b""
    assert proto.lost.check(error.ConnectionDone)
    client.close()


def test_reading_goes_on_while_twisted_is_still_writing(bench):
    b = bench("flood")
    client, proto = b.connect()
    client.sendall(b"flood")
    b.turn_until(lambda: proto.received == b"flood")
    assert proto.transport in b.reactor.getWriters()  # 8 MB waiting in Twisted's buffer
    client.sendall(b" and more")
    b.turn_until(lambda: proto.received == b"flood and more")
    client.setblocking(False)
    got = 0
    deadline = time.monotonic() + 20
    while got < 8 * 1024 * 1024:
        assert time.monotonic() < deadline, f"only {got} bytes arrived"
        b.reactor.runUntilCurrent()
        b.reactor.doIteration(0.001)
        with contextlib.suppress(BlockingIOError):
            got += len(client.recv(1 << 20))
    assert proto.transport not in b.reactor.getReaders()
    client.close()
    b.turn_until(lambda: proto.lost is not None)


def test_a_new_connection_may_reuse_a_closed_ones_descriptor(bench):
    b = bench()
    first, one = b.connect()
    first.close()
    b.turn_until(lambda: one.lost is not None)
    second, two = b.connect()
    second.sendall(b"again")
    b.turn_until(lambda: two.received == b"again")
    assert two.fd is not None
    second.close()
    b.turn_until(lambda: two.lost is not None)


def test_close_gives_sockets_back_to_the_reactor(bench):
    b = bench()
    client, proto = b.connect()
    b.reader.close()
    assert proto.transport in b.reactor.getReaders()
    assert "doIteration" not in vars(b.reactor)  # the reactor waits on its own set again
    client.sendall(b"read by twisted")
    b.turn_until(lambda: proto.received == b"read by twisted")
    client.close()
    b.turn_until(lambda: proto.lost is not None)


def test_reactor_shutdown_ends_adopted_connections(bench):
    b = bench()
    client, proto = b.connect()
    b.reactor.fireSystemEvent("shutdown")  # what the reactor does as it stops
    assert proto.lost is not None
    assert "doIteration" not in vars(b.reactor)
    client.close()


def test_the_reactors_own_work_goes_on_while_merged(bench):
    """Timers, new connections and callFromThread still run with our set as the wait."""
    import threading

    b = bench()
    client, proto = b.connect()
    fired = []
    b.reactor.callLater(0.02, fired.append, "timer")
    threading.Thread(target=b.reactor.callFromThread, args=(fired.append, "thread")).start()
    b.turn_until(lambda: len(fired) == 2)
    other, second = b.connect()  # the listening port is the reactor's
    client.sendall(b"one")
    other.sendall(b"two")
    b.turn_until(lambda: proto.received == b"one" and second.received == b"two")
    for c in (client, other):
        c.close()
    b.turn_until(lambda: proto.lost is not None and second.lost is not None)


def test_an_open_call_socket_is_read_by_the_reader(tmp_path):
    """CallProtocol adopts its socket once open: a real call, bit-exact, through the reader."""
    import threading

    from voicews.call.protocol import CallFactory, CallProtocol
    from voicews.config import plugins
    from voicews.config.settings import load_settings
    from voicews.runtime.state import Runtime

    from wire import Call

    (tmp_path / "c.yaml").write_text("pipelines:\n  echo: [echo]\n")
    reactor = EPollReactor()
    pm = plugins.make_plugin_manager()
    factory = CallFactory(Runtime(load_settings(tmp_path / "c.yaml", pm), pm, reactor))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1").getHost().port
    runner = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False})
    runner.start()
    try:
        with Call(f"ws://127.0.0.1:{port}/socket", pipeline="echo") as call:
            call.echo_roundtrip(0, 20)
            assert factory.reader.sockets == 1
            assert factory.reader.merged  # the fast path's read loop is the reactor's wait
            assert not [r for r in reactor.getReaders()
                        if isinstance(getattr(r, "protocol", None), CallProtocol)]
            call.echo_roundtrip(20, 20)
        deadline = time.monotonic() + 5
        while factory.reader.sockets and time.monotonic() < deadline:
            time.sleep(0.01)
        assert factory.reader.sockets == 0
    finally:
        reactor.callFromThread(reactor.stop)
        runner.join(10)
