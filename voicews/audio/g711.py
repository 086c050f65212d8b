"""G.711 μ-law (ITU-T G.711, the North American / Japanese law) with numpy tables.

μ-law is what Twilio Media Streams carry (``audio/x-mulaw``, 8 kHz, one byte a
sample).  Both directions are one table lookup per sample: a 64 Ki-entry table
from every int16 value to its code, and a 256-entry table back.  The tables are
built once, on first use (building them takes a few MB of numpy temporaries that
the process keeps: a daemon without a Twilio bridge never pays it), from the
reference algorithm of G.711 on 14-bit linear
samples (the int16 sample shifted right by two, so the two low bits are
ignored, as in every 16-bit G.711 codec), and decoding gives the 16-bit value
of each code (the 14-bit one shifted left by two: full scale is +/-32124).

The results match Python's old ``audioop.lin2ulaw`` / ``ulaw2lin`` for every
input (the tests compare all 65536 samples and all 256 codes).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from voicews.audio.samples import SAMPLE_DTYPE

_BIAS = 0x84
"""Added to the magnitude (in 16-bit units) so that every segment starts on a power of two."""
_CLIP = 8159
"""The largest 14-bit magnitude μ-law codes; louder samples take the loudest code."""


@cache
def _encode_table() -> np.ndarray:
    """The μ-law code of each int16 value, indexed by the value's uint16 bit pattern."""
    linear = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, as G.711 defines it
    negative = linear < 0
    magnitude = np.minimum(np.where(negative, -linear, linear), _CLIP) + (_BIAS >> 2)
    # The segment is the position of the highest set bit above bit 5 (0..7).
    segment = np.zeros_like(magnitude)
    for seg in range(1, 8):
        segment[magnitude >= (0x40 << (seg - 1))] = seg
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    # Clipped magnitudes (8159 + 33 = 8192) are past the last segment: the loudest code.
    code = np.where(magnitude > 0x1FFF, 0x7F, (segment << 4) | mantissa)
    # Codes are sent inverted; the sign bit is set for positive samples.
    code = np.where(negative, code ^ 0x7F, code ^ 0xFF).astype(np.uint8)
    table = np.empty(65536, dtype=np.uint8)
    table[np.arange(-32768, 32768, dtype=np.int32).astype(np.uint16)] = code
    table.flags.writeable = False
    return table


@cache
def _decode_table() -> np.ndarray:
    """The int16 value of each μ-law code."""
    inverted = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((inverted & 0x0F) << 3) + _BIAS) << ((inverted & 0x70) >> 4)
    value = np.where(inverted & 0x80, _BIAS - magnitude, magnitude - _BIAS)
    table = value.astype(SAMPLE_DTYPE)
    table.flags.writeable = False
    return table


def encode(samples: np.ndarray) -> bytes:
    """int16 samples (any length) to μ-law bytes, one per sample."""
    samples = np.asarray(samples, dtype=SAMPLE_DTYPE)
    return _encode_table()[samples.view(np.uint16)].tobytes()


def decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """μ-law bytes to int16 samples, one per byte (a new, writable array)."""
    return _decode_table()[np.frombuffer(data, dtype=np.uint8)]
