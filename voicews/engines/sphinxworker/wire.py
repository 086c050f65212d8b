"""The frames the daemon and a worker speak over the worker's stdin and stdout, and the
worker's settings (JSON on its command line).

A frame is a header ``<IBI`` (payload length, kind, stream id) and a payload.  Both ends
import this one module: the daemon as ``voicews.engines.sphinxworker.wire``, the worker as
``sphinxworker.wire``; it imports only the standard library.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct("<IBI")
MAX_PAYLOAD = 1 << 20
"""A frame larger than this is a broken peer, not audio (a 20 ms frame is under 1 kB)."""

U64 = struct.Struct("<Q")
"""The payload of ACK and GAP: a count of samples."""


class Kind(IntEnum):
    # daemon -> worker
    OPEN = 1  # JSON {rate, endpointing, grammar, keywords}
    AUDIO = 2  # int16 little-endian samples at the stream's rate
    CUT = 3  # end the utterance now
    CLOSE = 4  # flush, then CLOSED
    GAP = 5  # u64: this many samples were dropped by the daemon
    STATS = 6
    # worker -> daemon
    READY = 10  # JSON: pid, load seconds
    RESULT = 11  # JSON {text, final, start, end}
    ACK = 12  # u64: samples of the stream consumed so far
    CLOSED = 13
    FAILED = 14  # UTF-8 one-line reason; the stream is gone
    STATS_REPLY = 15  # JSON


def pack(kind: Kind, stream: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, stream) + payload


class FrameReader:
    """Splits a byte stream into (kind, stream id, payload), whatever the read sizes."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        self._buffer += data
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            length, kind, stream = HEADER.unpack_from(buffer, offset)
            if length > MAX_PAYLOAD:
                raise ValueError(f"frame of {length} bytes (kind {kind})")
            end = offset + HEADER.size + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + HEADER.size:end])
            offset = end
            yield kind, stream, payload
        del buffer[:offset]

    def __len__(self) -> int:
        return len(self._buffer)


@dataclass(frozen=True)
class Settings:
    """What the daemon's options set in each worker (passed as JSON on the command line)."""

    max_streams: int = 6
    spare_decoders: int = 1
    partial_interval: float = 0.3
    ack_interval: float = 0.2
    vad_mode: int = 0
    window: float = 0.3
    ratio: float = 0.9
    keyword_threshold: float = 1e-10
    nice: int = 5
