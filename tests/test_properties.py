"""Property-based tests: the message parsers, the framer and the paced sender.

These are the pure parts that every byte from Vonage or a processor goes
through, so hypothesis throws arbitrary input at them.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from websockets.utils import apply_mask as fallback_apply_mask

from voicews.audio.samples import CONTENT_TYPES, FRAME_SECONDS
from voicews.call.fastpath import apply_mask
from voicews.pipeline.events import Event
from voicews.pipeline.framer import Framer
from voicews.pipeline.sender import PacedSender
from voicews.vonage.messages import ProtocolError, parse_event, parse_first_message

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
CLOSE_CODES = {1003, 1007, 1008, 1009}


@given(st.binary(max_size=2000), st.booleans())
def test_first_message_never_crashes(payload, binary):
    try:
        first = parse_first_message(payload, binary)
    except ProtocolError as exc:
        assert exc.code in CLOSE_CODES and exc.reason
    else:
        assert not binary and first.rate in (8000, 16000, 24000)


@given(
    st.sampled_from(sorted(CONTENT_TYPES)),
    st.dictionaries(st.text().filter(lambda k: k not in ("event", "content-type")), json_values,
                    max_size=6),
    st.booleans(),
)
def test_first_message_valid_forms(ctype, headers, with_event):
    data = {"content-type": ctype, **headers}
    if with_event:
        data["event"] = "websocket:connected"
    first = parse_first_message(json.dumps(data).encode(), False)
    assert first.rate == CONTENT_TYPES[ctype]
    assert first.headers == headers


@given(st.one_of(st.binary(max_size=500), json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["event", "digit", "duration", "payload"]),
                                 json_values).map(lambda d: json.dumps(d).encode())))
def test_events_never_crash(payload):
    try:
        kind, data = parse_event(payload)
    except ProtocolError as exc:
        assert exc.code == 1008
    else:
        event = Event(kind, data)
        assert event.kind is not None
        assert event.digit is None or (isinstance(event.digit, str) and len(event.digit) == 1)
        assert event.duration is None or type(event.duration) is int


@given(
    st.sampled_from([160, 320, 480]),
    st.lists(st.integers(0, 2000), max_size=40),
    st.integers(0, 2**31),
)
def test_framer_any_chunking(frame_samples, chunk_sizes, seed):
    rng = np.random.default_rng(seed)
    samples = rng.integers(-32768, 32767, sum(chunk_sizes), dtype=np.int16)
    framer = Framer(frame_samples)
    out: list[bytes] = []
    pos = 0
    for size in chunk_sizes:
        out += framer.push(samples[pos : pos + size])
        pos += size
    assert all(len(f) == frame_samples * 2 for f in out)
    whole = len(out) * frame_samples
    assert whole == len(samples) - len(samples) % frame_samples
    assert b"".join(out) == samples[:whole].tobytes()
    assert framer.pending == len(samples) - whole
    tail = framer.flush()
    rest = samples[whole:]
    if len(rest):
        assert tail == [rest.tobytes() + b"\0\0" * (frame_samples - len(rest))]
    else:
        assert tail == []
    assert framer.pending == 0


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=2000))
def test_framer_saturates_wide_samples(values):
    framer = Framer(160)
    out = framer.push(np.array(values, dtype=np.float64)) + framer.flush()
    data = np.frombuffer(b"".join(out), dtype="<i2")
    expected = np.clip(np.rint(values), -32768, 32767) if values else np.array([])
    assert np.array_equal(data[: len(values)], expected)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("audio"), st.integers(1, 400)),
        st.tuples(st.just("text"), st.just(1)),
        st.tuples(st.just("advance"), st.floats(0, 3)),
        st.tuples(st.just("clear"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(ops, st.floats(0.02, 2.0), st.integers(1, 300))
def test_sender_bounded_ordered_paced(operations, max_lead, max_queue):
    clock = Clock()
    sent: list[tuple[float, object]] = []
    sender = PacedSender(
        clock=clock,
        send_audio=lambda f: sent.append((clock.seconds(), f)),
        send_text=lambda t: sent.append((clock.seconds(), t)),
        max_lead=max_lead,
        max_queue=max_queue,
    )
    next_frame = 0
    given_frames = 0
    cleared = 0
    for op, arg in operations:
        if op == "audio":
            for _ in range(arg):
                sender.audio(next_frame.to_bytes(4, "big"))
                next_frame += 1
                given_frames += 1
                assert sender.queued_frames <= max_queue
        elif op == "text":
            sender.text(f"cmd{next_frame}")
        elif op == "advance":
            clock.advance(arg)
        else:
            cleared += sender.queued_frames
            sender.clear()
        # Never more than max_lead (plus the frame being sent) ahead of real time.
        assert sender.lead() <= max_lead + FRAME_SECONDS + 1e-9
    clock.advance(max_queue * FRAME_SECONDS + max_lead + 1)
    for _ in range(max_queue + 10):
        clock.advance(FRAME_SECONDS)
    frames = [int.from_bytes(f, "big") for _, f in sent if isinstance(f, bytes)]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)  # in order, no repeats
    assert len(frames) == sender.frames_sent
    assert sender.queued_frames == 0
    assert sender.frames_sent + sender.frames_dropped + cleared == given_frames
    # A command goes out after every frame given before it that was not dropped or cleared.
    for i, (_, item) in enumerate(sent):
        if isinstance(item, str):
            before = int(item[3:])
            later = [int.from_bytes(f, "big") for _, f in sent[i + 1 :] if isinstance(f, bytes)]
            assert all(n >= before for n in later)


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_unmasking_fallback_matches_websockets_c_version(payload, mask):
    """Where websockets has no compiled speedups, its pure-Python apply_mask must give the same
    bytes: each byte XOR the mask byte at its position mod 4 (RFC 6455 5.3)."""
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert fallback_apply_mask(payload, mask) == expected
    assert apply_mask(payload, mask) == expected


int16s = st.lists(st.integers(-32768, 32767), max_size=400).map(lambda v: np.array(v, "<i2"))


@given(int16s, int16s)
def test_mix_is_the_saturated_sum(a, b):
    """The mix bus's mix: every sample the clipped sum (no wrap), the shorter padded with 0."""
    from voicews.audio.samples import mix

    n = max(len(a), len(b))
    wide = np.zeros(n, np.int64)
    wide[: len(a)] += a
    wide[: len(b)] += b
    assert mix(a, b).tolist() == np.clip(wide, -32768, 32767).tolist()
