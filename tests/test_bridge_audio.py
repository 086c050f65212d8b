"""G.711 μ-law and the streaming resampler the bridge uses (voicews.audio.g711, .stream)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soxr

from voicews.audio import g711
from voicews.audio.files import tone
from voicews.audio.stream import StreamResampler

from audio_checks import level_db, peak_frequency

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # removed in Python 3.13
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop is gone (Python >= 3.13)")

EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2")
EVERY_CODE = bytes(range(256))


@needs_audioop
def test_encode_matches_audioop_for_every_int16_value():
    expected = audioop.lin2ulaw(EVERY_SAMPLE.tobytes(), 2)
    assert g711.encode(EVERY_SAMPLE) == expected


@needs_audioop
def test_decode_matches_audioop_for_every_byte():
    expected = np.frombuffer(audioop.ulaw2lin(EVERY_CODE, 2), dtype="<i2")
    np.testing.assert_array_equal(g711.decode(EVERY_CODE), expected)


def test_codes_survive_a_round_trip_and_the_law_is_symmetric():
    decoded = g711.decode(EVERY_CODE)
    again = np.frombuffer(g711.encode(decoded), dtype=np.uint8)
    # 0x7F is μ-law's "negative zero": it decodes to 0, which encodes as 0xFF.
    expected = np.arange(256, dtype=np.uint8)
    expected[0x7F] = 0xFF
    np.testing.assert_array_equal(again, expected)
    # G.711's fixed points: full scale is +/-8031 in 14 bits (32124 in 16), silence is 0xFF.
    assert decoded.max() == 32124 and decoded.min() == -32124
    assert g711.encode(np.zeros(3, dtype="<i2")) == b"\xff\xff\xff"
    # Flipping the sign bit negates exactly: what the test bot's polarity twist relies on.
    np.testing.assert_array_equal(g711.decode(bytes(c ^ 0x80 for c in EVERY_CODE)), -decoded)


def test_quantisation_error_stays_within_half_a_step():
    linear = EVERY_SAMPLE.astype(np.int32)
    error = np.abs(g711.decode(g711.encode(EVERY_SAMPLE)).astype(np.int32) - linear)
    magnitude = np.abs(linear)
    # Steps double per segment: 8 (in 16-bit units) near zero, 1024 at the top; half a
    # step plus the 3 that G.711's 14 bits drop.
    assert error[magnitude < 120].max() <= 4 + 3
    assert error[magnitude <= 32124].max() <= 512 + 3


RATIOS = [(16000, 8000), (24000, 8000), (8000, 16000), (8000, 24000)]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATIOS)
def test_the_output_does_not_depend_on_how_the_input_is_cut(in_rate, out_rate):
    rng = np.random.default_rng(7)
    signal = (rng.standard_normal(in_rate) * 3000).astype("<i2")
    whole = StreamResampler(in_rate, out_rate)
    expected = np.concatenate([whole.process(signal), whole.flush()])
    cut = StreamResampler(in_rate, out_rate)
    pieces, start = [], 0
    for size in rng.integers(1, 700, 400):
        pieces.append(cut.process(signal[start:start + size]))
        start += size
    pieces.append(cut.process(signal[start:]))
    pieces.append(cut.flush())
    got = np.concatenate(pieces)
    np.testing.assert_array_equal(got, expected)
    assert len(got) == out_rate  # one second in, one second out


@pytest.mark.parametrize(("in_rate", "out_rate"), RATIOS)
def test_speech_band_passes_and_what_the_lower_rate_cannot_hold_is_rejected(in_rate, out_rate):
    frame = in_rate // 50
    for hz, wanted in [(300, 0.0), (1000, 0.0), (3400, 0.0), (5000, None), (6500, None)]:
        if hz >= in_rate / 2:
            continue
        signal = tone(in_rate, 1.0, hz, level=0.5)
        resampler = StreamResampler(in_rate, out_rate)
        out = np.concatenate([resampler.process(signal[i:i + frame])
                              for i in range(0, len(signal), frame)])[out_rate // 10:]
        if wanted is not None:
            assert abs(level_db(out) - level_db(signal)) < 0.1, hz
            assert abs(peak_frequency(out, out_rate) - hz) <= 2, hz
        elif hz > min(in_rate, out_rate) / 2:
            assert level_db(out) < level_db(signal) - 90, hz  # aliasing rejected


def test_live_frames_come_out_steadily_after_a_fixed_delay():
    """Unlike soxr's block mode (100 ms at a time), every 20 ms frame gives 20 ms out."""
    for in_rate, out_rate, delay_ms in [(16000, 8000, 15), (24000, 8000, 25)]:
        resampler = StreamResampler(in_rate, out_rate)
        outs = [len(resampler.process(np.zeros(in_rate // 50, "<i2"))) for _ in range(10)]
        assert outs[2:] == [out_rate // 50] * 8
        assert (in_rate // 50 * 10 * out_rate // in_rate - sum(outs)) * 1000 // out_rate == delay_ms
        block = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        block_outs = [len(block.resample_chunk(np.zeros(in_rate // 50, np.float32)))
                      for _ in range(10)]
        assert block_outs.count(0) >= 5  # why vr=True: the default mode holds ~100 ms


def test_same_rate_passes_samples_through_untouched():
    resampler = StreamResampler(8000, 8000)
    frame = tone(8000, 0.02, 1000)
    np.testing.assert_array_equal(resampler.process(frame), frame)
    assert len(resampler.flush()) == 0


def test_reset_forgets_held_audio():
    resampler = StreamResampler(8000, 16000)
    resampler.process(tone(8000, 0.1, 1000))
    resampler.reset()
    assert not np.any(resampler.flush())
