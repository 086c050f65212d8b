"""The reference peer: a plain echo server on the `websockets` library (asyncio).

It does what any Python developer would write first for a Vonage echo: read
the first text message, then send every binary message straight back.  The
benchmark drives it with the same load as voicews and reports ratios.
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import serve


async def echo(ws) -> None:
    await ws.recv()  # the Vonage first message (JSON text)
    async for message in ws:
        if isinstance(message, bytes):
            await ws.send(message)


async def main(port: int) -> None:
    async with serve(echo, "127.0.0.1", port, compression=None, max_size=2**16,
                     ping_interval=None):
        print(f"peer listening on 127.0.0.1:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
