"""The fast reference peer: a Vonage-style echo server on `picows` (Cython, asyncio).

picows is the fastest Python WebSocket server we know of, so it is the bar for
voicews's own frame path.  Towards bench/load.py it behaves exactly like
bench/peer.py: it takes the first message of a call (the Vonage JSON text) and
does nothing with it, then sends every binary message back unchanged; later text
messages are ignored, pings are answered, a close is answered with the same
code.  It is written the way picows's own echo example is (a `WSListener` whose
`on_ws_frame` sends the frame's payload memoryview straight back), with
fragmented messages reassembled as websockets would.

    python bench/peer_picows.py --port 8765 [--uvloop]

`--uvloop` runs it on uvloop's event loop (fails with a clear message if uvloop
is not installed, rather than measuring something other than was asked).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

BINARY, TEXT, CONTINUATION, CLOSE = (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION,
                                     WSMsgType.CLOSE)
MAX_SIZE = 2**16  # as peer.py's `max_size`


class Echo(WSListener):
    """One call: swallow the first message, echo each binary message after it."""

    def __init__(self) -> None:
        self.greeted = False
        self.parts: bytearray | None = None  # a fragmented message being reassembled
        self.parts_type: WSMsgType | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == BINARY and frame.fin and self.greeted:  # the hot path: one audio frame
            transport.send(BINARY, frame.get_payload_as_memoryview())
        elif msg_type == CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type in (BINARY, TEXT):
            if frame.fin:
                self.message(transport, msg_type, frame.get_payload_as_bytes())
            else:
                self.parts, self.parts_type = bytearray(frame.get_payload_as_memoryview()), msg_type
        elif msg_type == CONTINUATION and self.parts is not None:
            self.parts += frame.get_payload_as_memoryview()
            if len(self.parts) > MAX_SIZE:
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
            elif frame.fin:
                whole, self.parts = bytes(self.parts), None
                self.message(transport, self.parts_type, whole)

    def message(self, transport: WSTransport, msg_type: WSMsgType, payload: bytes) -> None:
        if not self.greeted:
            self.greeted = True  # the Vonage first message: taken, not answered
        elif msg_type == BINARY:
            transport.send(BINARY, payload)


def listener(request: WSUpgradeRequest) -> Echo:
    return Echo()  # any path, as peer.py


async def main(port: int) -> None:
    server = await ws_create_server(listener, "127.0.0.1", port, max_frame_size=MAX_SIZE)
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"picows peer listening on 127.0.0.1:{port} ({loop_name} loop)", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            sys.exit("peer_picows: --uvloop asked for but uvloop is not installed "
                     "(pip install '.[bench]')")
        uvloop.run(main(args.port))
    else:
        asyncio.run(main(args.port))
