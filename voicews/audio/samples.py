"""L16 audio facts and the sample arithmetic every processor shares."""

from __future__ import annotations

import numpy as np

SAMPLE_DTYPE = np.dtype("<i2")
"""Vonage's L16: signed 16-bit little-endian mono PCM."""

FRAME_SECONDS = 0.02
RATES = (8000, 16000, 24000)
CONTENT_TYPES = {f"audio/l16;rate={rate}": rate for rate in RATES}
INT16_MIN, INT16_MAX = -32768, 32767


def frame_samples(rate: int) -> int:
    """Samples in one 20 ms frame at `rate` (160, 320, 480)."""
    return rate // 50


def frame_bytes(rate: int) -> int:
    """Bytes in one 20 ms L16 frame at `rate` (320, 640, 960)."""
    return frame_samples(rate) * SAMPLE_DTYPE.itemsize


def parse_content_type(value: object) -> int | None:
    """The rate of a Vonage content-type, or None when it is not one we speak.

    Matching ignores case and spaces around ``;`` because proxies and SDKs differ.
    """
    if not isinstance(value, str):
        return None
    return CONTENT_TYPES.get(value.replace(" ", "").lower())


def saturate(samples: np.ndarray) -> np.ndarray:
    """Round and clip wider samples to int16: loud audio clips, it never wraps.

    Runs on every frame of some pipelines, so it uses the bare ufuncs (in place
    where the array is ours) rather than ``np.clip``'s Python wrapper, and rounds
    only floats: about half the cost on a 20 ms frame.
    """
    samples = np.asarray(samples)
    if samples.dtype.kind == "f":
        wide = np.rint(samples)
        np.maximum(wide, INT16_MIN, out=wide)
    else:
        wide = np.maximum(samples, INT16_MIN)
    np.minimum(wide, INT16_MAX, out=wide)
    return wide.astype(SAMPLE_DTYPE)


MAX_DB = 96.0
"""The whole int16 range: a level change beyond it only makes silence or a square wave."""


def db_to_factor(db: float, name: str = "level") -> float:
    """Amplitude factor of a level in dB: +6 dB is x1.995.  Refuses levels beyond +/-96 dB."""
    if not -MAX_DB <= db <= MAX_DB:
        raise ValueError(f"{name} must be between -96 and 96 dB, got {db:g}")
    return float(10.0 ** (db / 20.0))


def _saturated_sums() -> np.ndarray:
    """Every sum of two int16 samples, saturated to int16, indexed by the int32 sum itself.

    Sums run from -65536 to 65534; negative ones index from the end, as numpy's ``take``
    does.  256 KB, made on the first mix; a frame's mix is then one add and one lookup
    instead of add, clip low, clip high and narrow.
    """
    index = np.arange(2 * 65536)
    return saturate(np.where(index < 65536, index, index - 2 * 65536))


_sums: list[np.ndarray] = []


def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum two int16 signals with saturation; the shorter is padded with silence."""
    if len(a) == len(b) and a.dtype == b.dtype == SAMPLE_DTYPE:  # every frame of a mix
        if not _sums:
            _sums.append(_saturated_sums())
        return _sums[0].take(np.add(a, b, dtype=np.int32))
    if len(a) < len(b):
        a, b = b, a
    total = np.asarray(a).astype(np.int32)
    total[: len(b)] += b
    return saturate(total)
