"""The daemon's ``/events`` stream for one simulated call: its events as they happen.

A small Server-Sent Events client on asyncio streams (HTTP/1.1, chunked or not,
http or https): it subscribes before the call's socket opens, so it sees the
call from ``call_started`` on, and hands every record for the call's uuid to
the call's result (and to ``CallSpec.on_event``, which the command line prints).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from voicews import __version__
from voicews.simulator.spec import CallResult, CallSpec, SimulationError

log = logging.getLogger("voicews.simulator")


def events_url_for(socket_uri: str) -> str:
    """The daemon's ``/events`` beside its socket: ws(s)://host/x/socket -> http(s)://host/x/events."""
    parts = urllib.parse.urlsplit(socket_uri)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = urllib.parse.urljoin(parts.path or "/", "events")
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


class EventWatch:
    """One call's subscription: ``await start()``, run the call, ``await finish()``."""

    def __init__(self, spec: CallSpec, result: CallResult, url: str) -> None:
        self.spec = spec
        self.result = result
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.urlencode({"uuid": result.uuid})
        self.url = urllib.parse.urlunsplit(parts._replace(query=query))
        self.started = time.monotonic()
        self.ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        """Subscribe; returns once the daemon has accepted the stream (or raises why not)."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.spec.timeout)
        except TimeoutError:
            self._task.cancel()
            raise SimulationError(f"events stream {self.url}: no answer within "
                                  f"{self.spec.timeout:g} s") from None

    async def finish(self) -> None:
        """After the call: wait (bounded) for its ``call_ended``, then unsubscribe."""
        if self._task is None:
            return
        if not self._task.done():
            try:
                await asyncio.wait_for(self.ended.wait(), self.spec.events_wait)
            except TimeoutError:
                self.result.errors.append(
                    f"events stream: no call_ended within {self.spec.events_wait:g} s of the "
                    "call's end"
                )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SimulationError):
            await self._task

    async def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            await self._read(ready)
        except (OSError, SimulationError, asyncio.IncompleteReadError, ValueError) as exc:
            error = exc if isinstance(exc, SimulationError) else SimulationError(
                f"events stream {self.url}: {exc or type(exc).__name__}")
            if not ready.done():
                ready.set_exception(error)
            elif not self.ended.is_set():
                self.result.errors.append(str(error))
                self.ended.set()
        finally:
            if self._writer is not None:
                self._writer.close()

    async def _read(self, ready: asyncio.Future[None]) -> None:
        parts = urllib.parse.urlsplit(self.url)
        secure = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        context = ssl.create_default_context() if secure else None
        reader, self._writer = await asyncio.open_connection(host, port, ssl=context)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream",
                "Cache-Control: no-cache", f"User-Agent: voicews-call/{__version__}"]
        if self.spec.control_token:
            head.append(f"Authorization: Bearer {self.spec.control_token}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        status_line = (await reader.readline()).decode("latin-1").strip()
        headers: dict[str, str] = {}
        while True:
            line = (await reader.readline()).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        fields = status_line.split(" ", 2)
        status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if status != 200:
            body = (await _body(reader, chunked))[:300].decode("utf-8", "replace")
            raise SimulationError(f"events stream {self.url} refused: HTTP {status} {body}".strip())
        ready.set_result(None)
        log.info("%s: subscribed to %s", self.result.label, self.url)
        parser = _SSE()
        async for data in _stream(reader, chunked):
            for message in parser.feed(data):
                self._received(message)
        if not self.ended.is_set():
            raise SimulationError(f"events stream {self.url} ended before the call did")

    def _received(self, message: str) -> None:
        try:
            record = json.loads(message)
        except ValueError:
            log.warning("%s: events stream sent non-JSON data %r", self.result.label,
                        message[:80])
            return
        if not isinstance(record, dict) or record.get("uuid") != self.result.uuid:
            return
        self.result.events.append(record)
        self.result.events_received_at.append(time.monotonic() - self.started)
        if self.spec.on_event is not None:
            self.spec.on_event(self.result, record)
        if record.get("kind") == "call_ended":
            self.ended.set()


async def _stream(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The response body as it arrives, chunked transfer coding undone."""
    while True:
        if not chunked:
            data = await reader.read(65536)
            if not data:
                return
            yield data
            continue
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)  # the chunk and its CRLF
        yield data[:-2]


async def _body(reader: asyncio.StreamReader, chunked: bool, limit: int = 4096) -> bytes:
    body = b""
    async for data in _stream(reader, chunked):
        body += data
        if len(body) >= limit:
            break
    return body


class _SSE:
    """Server-Sent Events framing: lines, ``data:`` fields, a blank line ends a message."""

    def __init__(self) -> None:
        self.buffer = b""
        self.data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self.buffer += chunk
        messages = []
        while b"\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if self.data:
                    messages.append("\n".join(self.data))
                    self.data = []
            elif line.startswith("data:"):
                value = line[5:]
                self.data.append(value[1:] if value.startswith(" ") else value)
        if len(self.buffer) > 1 << 20:
            raise SimulationError("events stream sent a line over 1 MiB")
        return messages


def describe(record: dict[str, Any]) -> str:
    """One line for people: call time, kind, who, and the data."""
    time_ = record.get("time")
    when = f"{time_:7.2f} s" if isinstance(time_, (int, float)) else "      ? s"
    data = json.dumps(record.get("data", {}), ensure_ascii=False)
    return f"{when} {record.get('kind')} ({record.get('source')}) {data}"
