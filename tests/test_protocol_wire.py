"""The socket's wire behaviour, through a real twistd, on the fast path and the public path.

On the fast path CallProtocol delivers whole masked binary frames itself and sends
audio frames with one write (voicews/call/fastpath.py); everything else must still
behave exactly as autobahn makes it behave.  Every test here runs twice: with the
fast path, and with ``fast_path: false`` (autobahn's and Twisted's public path).
These tests speak to a real daemon with `wire.Call` (the `websockets` client, which
masks every frame with a fresh random key and offers no compression, so the fast path
takes its frames) and, where a client library would refuse to misbehave, with
`wire.RawCall` over a bare socket.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from websockets.sync.client import connect

from conftest import Daemon, base_config
from wire import Call, RawCall, first_message, frame, random_frames, ws_frame


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "public-path"])
def daemon(request, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("wire"), base_config(fast_path=request.param)).start()
    assert d.get_json("/health")["fast_path"] is request.param
    if not request.param:
        d.wait_log("fast path off (fast_path: false)")
    yield d
    assert d.stop() == 0


def test_frames_echo_bit_exact_under_random_masks(daemon):
    with Call(daemon.ws, pipeline="echo") as call:
        call.echo_roundtrip(0, 60)


def test_fragmented_binary_message_is_reassembled(daemon):
    sent = frame(1)
    with Call(daemon.ws, pipeline="echo") as call:
        call.ws.send([sent[:100], sent[100:101], sent[101:]])  # three fragments, one message
        assert call.ws.recv(timeout=10) == sent
        call.echo_roundtrip(1, 1)  # and the fast path resumes afterwards


def test_fragmented_first_message_is_accepted(daemon):
    with connect(daemon.ws, open_timeout=10, compression=None) as ws:
        text = first_message(pipeline="louder")
        ws.send([text[:10], text[10:]])
        ws.send(np.full(320, 1000, dtype="<i2").tobytes())
        louder = np.frombuffer(ws.recv(timeout=10), dtype="<i2")
        assert louder.tolist() == [1995] * 320  # round(1000 * 10 ** (6 / 20))


def test_ping_between_frames_gets_its_pong(daemon):
    with Call(daemon.ws, pipeline="echo") as call:
        call.echo_roundtrip(2, 1)
        pong = call.ws.ping(b"are you there")
        assert pong.wait(10)
        call.echo_roundtrip(3, 1)


def test_frame_split_across_tcp_writes_and_frames_coalesced(daemon):
    with RawCall(daemon.ws, pipeline="echo") as call:
        frames = random_frames(5, start=10)
        wire = ws_frame(frames[0])
        for i in range(len(wire)):  # one byte at a time: the header too
            call.send(wire[i : i + 1])
        # Four frames and a ping in one write: all echoed in order, the pong in between.
        call.send(b"".join([ws_frame(frames[1]), ws_frame(frames[2]),
                            ws_frame(b"mark", opcode=9), ws_frame(frames[3]),
                            ws_frame(frames[4])]))
        got = [call.frame() for _ in range(6)]
        assert got == [(2, frames[0]), (2, frames[1]), (2, frames[2]), (10, b"mark"),
                       (2, frames[3]), (2, frames[4])]


def test_unmasked_client_frame_is_a_protocol_error(daemon):
    with RawCall(daemon.ws, pipeline="echo") as call:
        call.send(ws_frame(frame(4)))
        assert call.frame() == (2, frame(4))
        call.send(ws_frame(frame(5), masked=False))
        opcode, payload = call.frame()
        assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1002


def test_wrong_sized_frame_closes_with_1007_and_a_reason(daemon):
    with Call(daemon.ws, pipeline="echo") as call:
        call.ws.send(frame(6) + b"\0")  # odd length: not a whole number of mask words either
        code, reason = call.wait_closed()
        assert code == 1007
        assert "641 bytes, expected 640" in reason
    daemon.wait_log("frame of 641 bytes, expected 640")


def test_oversized_frame_is_refused_by_the_message_limit(daemon):
    with Call(daemon.ws, pipeline="echo") as call:
        call.ws.send(b"\0" * 8000)  # over limits.max_message_bytes (7680)
        assert call.wait_closed()[0] == 1009


def test_close_handshake_from_the_client(daemon):
    with Call(daemon.ws, pipeline="echo") as call:
        call.echo_roundtrip(7, 1)
        call.ws.close(1000, "caller hung up")
        assert call.ws.close_code == 1000  # the server answered our close frame
    log = daemon.wait_log("call ended")
    assert "outcome=hangup" in log


def test_frame_counters_count_live_and_ended_calls(daemon):
    daemon.wait_metric("voicews_active_calls", 0)
    before_in = daemon.metric("voicews_frames_in_total")
    before_out = daemon.metric("voicews_frames_out_total")
    with Call(daemon.ws, pipeline="echo", uuid="counted-7") as call:
        call.echo_roundtrip(0, 7)
        assert daemon.metric("voicews_frames_in_total") == before_in + 7
        assert daemon.metric("voicews_frames_out_total") == before_out + 7
    daemon.wait_log("call ended uuid=counted-7")
    with Call(daemon.ws, pipeline="echo", uuid="counted-1") as call:
        call.echo_roundtrip(1, 1)
        assert daemon.metric("voicews_frames_in_total") == before_in + 8
    daemon.wait_log("call ended uuid=counted-1")
    assert daemon.metric("voicews_frames_in_total") == before_in + 8
    assert daemon.metric("voicews_frames_out_total") == before_out + 8


def test_gain_rounds_and_saturates_every_sample(daemon):
    """The gain step's lookup table gives what the arithmetic gives: rounded, clipped."""
    values = np.array([30000, -30000, 16384, -16385, 1000, -1000, 3, -3, 1, -1, 0,
                       32767, -32768] * 25, dtype="<i2")[:320]
    with Call(daemon.ws, pipeline="louder") as call:
        got = call.exchange(values)
    expected = np.clip(np.rint(values * 10 ** (6 / 20)), -32768, 32767).astype("<i2")
    assert got.tolist() == expected.tolist()


def test_close_handshake_from_the_server_on_shutdown(daemon):
    """Last in this module: it stops the daemon."""
    with Call(daemon.ws, pipeline="echo") as call:
        call.echo_roundtrip(8, 1)
        daemon.signal(15)
        assert call.wait_closed()[0] == 1001
    assert daemon.stop() == 0


def test_the_fast_path_self_check_passes_on_the_installed_autobahn_and_twisted():
    from voicews.call.fastpath import self_check

    assert self_check() is None
