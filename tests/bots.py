"""Test bots of each protocol, written from the protocols' references, not from voicews' code.

- :class:`TwilioBot` speaks Twilio Media Streams as a bot does (Twilio's
  "Media Streams - WebSocket Messages" reference): it expects ``connected`` and
  ``start``, echoes each ``media`` chunk back *with its polarity inverted* (the
  μ-law sign bit flipped, an exact negation), and sends a ``mark`` after each echo.
- :class:`VonageBot` speaks Vonage's Voice WebSocket as voicews itself does
  (shared/docs/vonage-voice-websocket.md): it reads the first JSON message,
  echoes each binary L16 frame negated and sends a ``notify`` after each.

Both are `websockets` (asyncio) servers on 127.0.0.1 in a thread of their own,
so the client under test (Twisted + Autobahn) talks to another WebSocket
implementation, as it will in production.  A test can tell the bot to send
``clear``, raw garbage, its own audio, to close, or to stop reading.  Every
connection is a :class:`Session` recording what arrived.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection, serve


@dataclass
class Session:
    """One connection to a bot: what it received, in order."""

    request_headers: dict[str, str]
    texts: list[dict[str, Any]] = field(default_factory=list)
    """Every JSON text message received, parsed."""
    binaries: list[bytes] = field(default_factory=list)
    echoed: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    ws: ServerConnection | None = None

    def events(self, name: str, key: str = "event") -> list[dict[str, Any]]:
        return [m for m in self.texts if m.get(key) == name]


class Bot:
    """A websockets server in its own thread; subclasses answer the messages."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, echo: bool = True,
                 marks: bool = True, reject: int | None = None) -> None:
        self.ssl_context = ssl_context
        self.echo = echo
        self.marks = marks
        self.reject = reject
        """An HTTP status to refuse every handshake with (e.g. 403)."""
        self.sessions: list[Session] = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/stream"

    def __enter__(self) -> Bot:
        self.thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self._finish())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the bot's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.server = await serve(
            self._handler, "127.0.0.1", 0, ssl=self.ssl_context, max_size=4 << 20,
            compression=None, ping_interval=None, close_timeout=0.5,
            process_request=self._process_request,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _finish(self) -> None:
        await self._stop()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        self.connections += 1
        if self.reject is not None:
            return connection.respond(self.reject, "refused by the test bot\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        session = Session(request_headers=dict(ws.request.headers.raw_items()), ws=ws)
        session.reading.set()
        self.sessions.append(session)
        try:
            while True:
                await session.reading.wait()
                message = await ws.recv()
                if isinstance(message, bytes):
                    session.binaries.append(message)
                    await self.on_binary(session, message)
                else:
                    try:
                        data = json.loads(message)
                    except ValueError:
                        data = {"unparsed": message}
                    session.texts.append(data)
                    await self.on_text(session, data)
        except websockets.ConnectionClosed:
            pass
        finally:
            session.close_code = ws.close_code
            session.closed.set()

    async def on_text(self, session: Session, data: dict[str, Any]) -> None:
        pass

    async def on_binary(self, session: Session, data: bytes) -> None:
        pass

    # -- what a test can make the bot do (from the test's thread) ------------------------

    def send(self, session: Session, message: str | bytes) -> None:
        assert session.ws is not None
        self.call(session.ws.send(message))

    def close(self, session: Session, code: int = 1000, reason: str = "") -> None:
        assert session.ws is not None
        self.call(session.ws.close(code, reason))

    def drop(self, session: Session) -> None:
        """End the TCP connection with no WebSocket close."""
        assert session.ws is not None
        self.loop.call_soon_threadsafe(session.ws.transport.abort)

    def stop_reading(self, session: Session) -> None:
        self.loop.call_soon_threadsafe(session.reading.clear)


class TwilioBot(Bot):
    """A bot for Twilio Media Streams (bidirectional, ``<Connect><Stream>``)."""

    def stream_sid(self, session: Session) -> str:
        return session.events("start")[0]["streamSid"]

    async def on_text(self, session: Session, data: dict[str, Any]) -> None:
        if data.get("event") != "media" or not self.echo:
            return
        # Twilio: "media.payload: Raw audio encoded in base64" (μ-law 8 kHz); flipping
        # every byte's sign bit inverts the audio exactly.
        mulaw = base64.b64decode(data["media"]["payload"])
        inverted = bytes(b ^ 0x80 for b in mulaw)
        sid = self.stream_sid(session)
        assert session.ws is not None
        await session.ws.send(json.dumps({
            "event": "media", "streamSid": sid,
            "media": {"payload": base64.b64encode(inverted).decode()},
        }))
        session.echoed += 1
        if self.marks:
            await session.ws.send(json.dumps({
                "event": "mark", "streamSid": sid,
                "mark": {"name": f"echo {data['media']['chunk']}"},
            }))

    def clear(self, session: Session) -> None:
        self.send(session, json.dumps({"event": "clear", "streamSid": self.stream_sid(session)}))

    def mark(self, session: Session, name: str) -> None:
        self.send(session, json.dumps({"event": "mark", "streamSid": self.stream_sid(session),
                                       "mark": {"name": name}}))

    def play(self, session: Session, mulaw: bytes, chunk: int = 800) -> None:
        """Send μ-law audio in `chunk`-byte media messages, as fast as the socket takes."""
        sid = self.stream_sid(session)
        for start in range(0, len(mulaw), chunk):
            payload = base64.b64encode(mulaw[start:start + chunk]).decode()
            self.send(session, json.dumps({"event": "media", "streamSid": sid,
                                           "media": {"payload": payload}}))

    def marks_back(self, session: Session) -> list[str]:
        """The names of the marks Twilio (here: voicews) answered."""
        return [m["mark"]["name"] for m in session.events("mark")]


class VonageBot(Bot):
    """A server of Vonage's Voice WebSocket, as an application answering Vonage is."""

    async def on_binary(self, session: Session, data: bytes) -> None:
        if not self.echo:
            return
        samples = np.frombuffer(data, dtype="<i2").astype(np.int32)
        inverted = np.clip(-samples, -32768, 32767).astype("<i2").tobytes()
        assert session.ws is not None
        await session.ws.send(inverted)
        session.echoed += 1
        if self.marks:
            await session.ws.send(json.dumps({"action": "notify",
                                              "payload": {"echo": session.echoed}}))

    def clear(self, session: Session) -> None:
        self.send(session, json.dumps({"action": "clear"}))

    def notify(self, session: Session, payload: Any) -> None:
        self.send(session, json.dumps({"action": "notify", "payload": payload}))

    def notifies_back(self, session: Session) -> list[Any]:
        return [m.get("payload") for m in session.events("websocket:notify")]
