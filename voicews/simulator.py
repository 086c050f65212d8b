"""voicews-call: play the Vonage side of a call against any answer URL, without a phone.

The simulator does what Vonage does for an inbound call: it requests the answer
URL, reads the NCCO, posts the call's event webhooks, opens the ``connect``
endpoint's socket with the first message Vonage sends, streams audio as 20 ms
L16 frames, sends DTMF, answers ``clear``/``notify`` like Vonage's playout
buffer would, and records what the call sends back -- checking every frame's
size, because Vonage drops a call on one wrong-sized frame.

The same code is the project's test client: :func:`simulate` and
:func:`simulate_many` run calls from pytest, :func:`simulate_socket` skips the
answer webhook and opens a socket directly.  ``fast=True`` sends frames without
pacing and then waits (bounded) for the reply, so tests are quick and do not
depend on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuidlib
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import connect

from voicews import __version__
from voicews.audio import FRAME_SECONDS, SAMPLE_DTYPE, frame_bytes, frame_samples
from voicews.audio import parse_content_type as rate_of
from voicews.audiofile import read_audio, resample, write_wav
from voicews.vonage_jwt import make_token

log = logging.getLogger("voicews.simulator")

DTMF_DIGITS = frozenset("0123456789*#")
DEFAULT_CONTENT_TYPE = "audio/l16;rate=16000"
SECONDS_WITHOUT_FILE = 3.0
"""How long a call without ``--play`` lasts when ``--seconds`` is not given."""
TAIL_SECONDS = 1.0
"""Silence streamed after the file, so the end of the reply has time to come back."""
ARRIVAL_GAP = 0.05
"""Seconds without a message after which a burst from the daemon counts as over."""
_PROXY_KWARG = int(websockets.version.version.split(".")[0]) >= 15


class SimulationError(Exception):
    """The call could not go on: the answer URL, NCCO or socket did something Vonage rejects."""


@dataclass
class CallSpec:
    """One call to simulate.  Only `answer_url` (or `socket_uri`) is needed."""

    answer_url: str = ""
    play: np.ndarray | None = None
    """int16 mono samples the caller "says"; resampled to the call's rate."""
    play_rate: int = 16000
    seconds: float | None = None
    """Call length; default: the audio's length plus one second (3 s without audio)."""
    dtmf: list[tuple[str, float]] = field(default_factory=list)
    """Key presses as (digit, seconds into the call)."""
    fast: bool = False
    """Send frames without pacing, then wait (bounded) for the reply."""
    method: str = "GET"
    signature_secret: str | None = None
    """Signs the answer request, event webhooks and a ``vonage`` socket handshake."""
    event_url: str | None = None
    """Where event webhooks go; default: the NCCO connect action's eventUrl."""
    ws_host: str | None = None
    """Replaces the host of the NCCO's socket uri (and eventUrl): ``host:port`` or
    ``ws://host:port`` to change the scheme as well."""
    to: str = "447700900000"
    from_: str = "447700900001"
    answer_fields: dict[str, Any] = field(default_factory=dict)
    """Extra fields for the answer request (e.g. ``custom_data``, ``SipHeader_X-...``)."""
    socket_uri: str | None = None
    """Skip the answer webhook and open this socket with the fields below."""
    content_type: str = DEFAULT_CONTENT_TYPE
    headers: dict[str, Any] = field(default_factory=dict)
    authorization: dict[str, Any] | str | None = None
    """As in an NCCO endpoint (``{"type": "vonage"}`` / ``{"type": "custom", "value": ..}``)
    or the Authorization header value itself."""
    dtmf_duration: int = 260
    quiet_seconds: float = 0.5
    """After the last frame, stop waiting once nothing arrived for this long."""
    settle_timeout: float | None = None
    """Longest wait for the reply after the last frame; default: the call's length + 5 s."""
    timeout: float = 10.0
    """HTTP and handshake timeout."""
    label: str = "call"


@dataclass
class WebhookPost:
    """One event webhook the simulator posted and what came back."""

    status: str
    url: str
    http_status: int | None
    error: str | None = None


@dataclass
class CallResult:
    """What happened on one simulated call."""

    label: str
    uuid: str = ""
    conversation_uuid: str = ""
    ncco: list[Any] | None = None
    talk: list[str] = field(default_factory=list)
    uri: str | None = None
    content_type: str | None = None
    rate: int | None = None
    frames_sent: int = 0
    frames_received: int = 0
    sent: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=SAMPLE_DTYPE))
    """Every sample sent, at the call's rate (the resampled file, then silence)."""
    received: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=SAMPLE_DTYPE))
    """Every correctly sized frame received, in order."""
    wrong_sized: list[int] = field(default_factory=list)
    """Byte sizes of received binary messages that were not one frame."""
    commands: list[Any] = field(default_factory=list)
    """Text messages received (``clear``/``notify`` commands), parsed JSON."""
    events_sent: list[dict[str, Any]] = field(default_factory=list)
    """Text events sent on the socket after the first message (dtmf, cleared, notify)."""
    webhooks: list[WebhookPost] = field(default_factory=list)
    frames_cleared: int = 0
    """Received frames a ``clear`` dropped before they "played"."""
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None
    """``simulator`` (the call ended) or ``server``."""
    echo_lag_samples: int | None = None
    echo_latency_ms: float | None = None
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Completed cleanly: socket opened and closed normally, every frame the right size."""
        return not self.errors

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None

    def summary(self) -> str:
        """One line for people: counts, echo latency when known, and what went wrong."""
        parts = [
            f"{self.label}: {'ok' if self.ok else 'FAILED'}",
            f"rate {self.rate or '-'}",
            f"frames sent {self.frames_sent} received {self.frames_received}",
            f"wrong-sized {len(self.wrong_sized)}",
        ]
        if self.echo_latency_ms is not None:
            parts.append(
                f"echo latency {self.echo_latency_ms:.1f} ms (lag {self.echo_lag_samples} samples)"
            )
        if self.commands:
            parts.append(f"commands {len(self.commands)}")
        if self.close_code is not None:
            parts.append(f"close {self.close_code} by {self.closed_by}")
        line = ", ".join(parts)
        return f"{line}: {self.error}" if self.errors else line


# -- HTTP (webhooks) -----------------------------------------------------------------------


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_DEFAULT = urllib.request.build_opener()


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str],
          timeout: float) -> tuple[int, bytes]:
    """One blocking request (run in a thread); HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    opener = _DIRECT if _is_loopback(url) else _DEFAULT
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _signed(headers: dict[str, str], secret: str | None, body: bytes | None) -> dict[str, str]:
    if secret:
        headers = {**headers, "Authorization": f"Bearer {make_token(secret, body)}"}
    return headers


async def request_ncco(spec: CallSpec, call: dict[str, str]) -> list[Any]:
    """Ask the answer URL for the NCCO as Vonage does: GET query or POST JSON."""
    headers = {"User-Agent": f"voicews-call/{__version__}", "Accept": "application/json"}
    url, body = spec.answer_url, None
    if spec.method.upper() == "POST":
        body = json.dumps(call).encode()
        headers["Content-Type"] = "application/json"
    else:
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        url = f"{url}{sep}{urllib.parse.urlencode(call)}"
    headers = _signed(headers, spec.signature_secret, body)
    try:
        status, reply = await asyncio.to_thread(
            _http, spec.method.upper(), url, body, headers, spec.timeout
        )
    except (OSError, urllib.error.URLError) as exc:
        raise SimulationError(f"answer URL {spec.answer_url} unreachable: {exc}") from None
    if status != 200:
        text = reply[:200].decode("utf-8", "replace")
        raise SimulationError(f"answer URL returned HTTP {status}: {text}")
    try:
        ncco = json.loads(reply)
    except ValueError:
        raise SimulationError("answer URL did not return JSON") from None
    if not isinstance(ncco, list):
        raise SimulationError("NCCO is not a JSON array")
    return ncco


async def post_event(spec: CallSpec, url: str, data: dict[str, Any],
                     result: CallResult) -> None:
    """POST one event webhook (signed when a secret is set); a failure is a call error."""
    body = json.dumps(data).encode()
    headers = _signed(
        {"Content-Type": "application/json", "User-Agent": f"voicews-call/{__version__}"},
        spec.signature_secret, body,
    )
    post = WebhookPost(status=data["status"], url=url, http_status=None)
    try:
        post.http_status, reply = await asyncio.to_thread(
            _http, "POST", url, body, headers, spec.timeout
        )
        if not 200 <= post.http_status < 300:
            post.error = f"HTTP {post.http_status}: {reply[:120].decode('utf-8', 'replace')}"
    except (OSError, urllib.error.URLError) as exc:
        post.error = str(exc)
    result.webhooks.append(post)
    if post.error:
        result.errors.append(f"event webhook {post.status} to {url}: {post.error}")


# -- NCCO ----------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """The websocket endpoint of an NCCO's connect action."""

    uri: str
    content_type: str
    headers: dict[str, Any]
    authorization: dict[str, Any] | str | None
    event_url: str | None


def read_ncco(ncco: list[Any], result: CallResult) -> Endpoint:
    """Walk the NCCO as Vonage would up to its ``connect``; collect the talk texts."""
    for action in ncco:
        if not isinstance(action, dict):
            raise SimulationError(f"NCCO action is not an object: {action!r}"[:200])
        kind = action.get("action")
        if kind == "talk":
            text = str(action.get("text", ""))
            result.talk.append(text)
            log.info("%s: talk: %s", result.label, text)
        elif kind == "connect":
            endpoints = action.get("endpoint")
            if not isinstance(endpoints, list) or not endpoints:
                raise SimulationError("NCCO connect has no endpoint list")
            endpoint = endpoints[0]
            if not isinstance(endpoint, dict) or endpoint.get("type") != "websocket":
                raise SimulationError(f"NCCO connects to {endpoint!r}, not a websocket"[:200])
            headers = endpoint.get("headers") or {}
            if not isinstance(headers, dict):
                raise SimulationError("NCCO websocket headers is not an object")
            if len(json.dumps(headers).encode()) > 512:
                raise SimulationError("NCCO websocket headers exceed Vonage's 512 bytes")
            event_urls = action.get("eventUrl") or []
            if isinstance(event_urls, str):
                event_urls = [event_urls]
            return Endpoint(
                uri=str(endpoint.get("uri", "")),
                content_type=str(endpoint.get("content-type", "")),
                headers=headers,
                authorization=endpoint.get("authorization"),
                event_url=str(event_urls[0]) if event_urls else None,
            )
        else:
            log.info("%s: NCCO action %r not simulated, skipped", result.label, kind)
    raise SimulationError("NCCO has no connect to a websocket")


def rewrite_host(url: str, host: str | None, http: bool = False) -> str:
    """`url` with its host replaced by `host` (``h:port`` or ``scheme://h:port``).

    Socket and webhook URLs share the scheme family: a ``ws://`` host turns an
    ``https://`` event URL into ``http://``.
    """
    if not host:
        return url
    parts = urllib.parse.urlsplit(url)
    if "://" in host:
        new = urllib.parse.urlsplit(host)
        scheme, netloc = new.scheme, new.netloc
    else:
        scheme, netloc = parts.scheme, host
    if http:
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    else:
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    return urllib.parse.urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def handshake_authorization(auth: dict[str, Any] | str | None, secret: str | None) -> str | None:
    """The Authorization header Vonage would send on the socket handshake."""
    if auth is None or isinstance(auth, str):
        return auth
    if not isinstance(auth, dict):
        raise SimulationError(f"endpoint authorization is not an object: {auth!r}"[:200])
    kind = auth.get("type")
    if kind == "vonage":
        if not secret:
            raise SimulationError(
                "the NCCO asks for a Vonage-signed socket: give --signature-secret"
            )
        return f"Bearer {make_token(secret)}"
    if kind == "custom":
        return str(auth.get("value", ""))
    raise SimulationError(f"unknown endpoint authorization type {kind!r}")


# -- the socket ----------------------------------------------------------------------------


def echo_lag(sent: np.ndarray, received: np.ndarray, rate: int,
             max_lag_seconds: float = 1.0, window_seconds: float = 5.0) -> int | None:
    """Samples by which `received` trails `sent`, when it is recognisably the same audio.

    Normalised cross-correlation over the first few seconds; a peak below 0.8
    (another signal, silence, heavy processing) means "cannot tell".
    """
    n = min(len(sent), int(rate * window_seconds))
    max_lag = int(rate * max_lag_seconds)
    if n < frame_samples(rate) or len(received) < n // 2:
        return None
    a = sent[:n].astype(np.float64)
    b = received[: n + max_lag].astype(np.float64)
    if np.sum(a * a) < n or np.sum(b * b) < n:  # digital silence is not an echo
        return None
    size = 1 << math.ceil(math.log2(len(a) + len(b)))
    corr = np.fft.irfft(np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size), size)
    lags = min(max_lag, len(b) - 1) + 1
    corr = corr[:lags]
    # Energy of b in each window it is compared over, and of a over the overlap.
    cb = np.concatenate(([0.0], np.cumsum(b * b)))
    ca = np.concatenate(([0.0], np.cumsum(a * a)))
    lag_idx = np.arange(lags)
    overlap = np.minimum(n, len(b) - lag_idx)
    energy_b = cb[lag_idx + overlap] - cb[lag_idx]
    energy_a = ca[overlap]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(energy_a * energy_b > 0, corr / np.sqrt(energy_a * energy_b), 0.0)
    best = int(np.argmax(score))
    return best if score[best] >= 0.8 else None


class _Call:
    """The socket half of one call: sender, receiver and Vonage's playout model."""

    def __init__(self, spec: CallSpec, result: CallResult, rate: int) -> None:
        self.spec = spec
        self.result = result
        self.rate = rate
        self.frame_samples = frame_samples(rate)
        self.frame_bytes = frame_bytes(rate)
        self.loop = asyncio.get_running_loop()
        self.chunks: list[bytes] = []
        self.send_times: list[float] = []
        self.recv_times: list[float] = []
        self.last_message = 0.0
        self.last_event = -math.inf
        """When we last sent a text event: the pipeline may still be reacting to it."""
        self.play_end = 0.0
        self.notifies: dict[asyncio.Task, dict[str, Any]] = {}
        """Pending ``websocket:notify`` replies and the event each will send."""
        self.ws = None

    def audio(self) -> np.ndarray:
        """The audio to send at the call's rate, padded with silence to whole frames."""
        spec = self.spec
        if spec.play is not None:
            played = resample(np.asarray(spec.play), spec.play_rate, self.rate)
            default = len(played) / self.rate + TAIL_SECONDS
        else:
            played = np.empty(0, dtype=SAMPLE_DTYPE)
            default = SECONDS_WITHOUT_FILE
        seconds = spec.seconds if spec.seconds is not None else default
        frames = max(0, math.ceil(round(seconds / FRAME_SECONDS, 6)))
        audio = np.zeros(frames * self.frame_samples, dtype=SAMPLE_DTYPE)
        n = min(len(played), len(audio))
        audio[:n] = played[:n]
        return audio

    async def run(self, ws) -> None:
        self.ws = ws
        result = self.result
        audio = self.audio()
        result.sent = audio
        receiver = asyncio.create_task(self.receive())
        try:
            await self.send(audio, receiver)
            await self.settle(receiver, len(audio) / self.rate)
            if not receiver.done():
                result.closed_by = "simulator"
                await ws.close(1000, "call ended")
            await receiver
        finally:
            if not receiver.done():
                receiver.cancel()
            for task in list(self.notifies):
                task.cancel()
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
        if result.closed_by is None:
            result.closed_by = "server"
        if result.close_code != 1000:
            result.errors.append(
                f"socket closed by {result.closed_by} with code {result.close_code}"
                + (f": {result.close_reason}" if result.close_reason else "")
            )
        if result.wrong_sized:
            sizes = sorted(set(result.wrong_sized))
            result.errors.append(
                f"{len(result.wrong_sized)} wrong-sized frame(s) of {sizes} bytes, expected "
                f"{self.frame_bytes} (Vonage would drop the call)"
            )
        result.received = np.frombuffer(b"".join(self.chunks), dtype=SAMPLE_DTYPE)
        self.estimate_latency()

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))
        self.last_event = self.loop.time()
        self.result.events_sent.append(event)

    async def send(self, audio: np.ndarray, receiver: asyncio.Task) -> None:
        """Stream the frames (paced at 20 ms unless fast), with DTMF at their frames."""
        spec = self.spec
        dtmf = sorted(
            ((max(0, round(at / FRAME_SECONDS)), digit) for digit, at in spec.dtmf),
            key=lambda item: item[0],
        )
        data = audio.tobytes()
        size = self.frame_bytes
        frames = len(data) // size
        start = self.loop.time()
        try:
            for i in range(frames):
                if receiver.done():
                    return
                while dtmf and dtmf[0][0] <= i:
                    _, digit = dtmf.pop(0)
                    log.info("%s: dtmf %s", self.result.label, digit)
                    await self.send_event(
                        {"event": "websocket:dtmf", "digit": digit,
                         "duration": spec.dtmf_duration}
                    )
                if spec.fast:
                    await asyncio.sleep(0)  # let replies in, as a real network would
                else:
                    delay = start + i * FRAME_SECONDS - self.loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await self.ws.send(data[i * size : (i + 1) * size])
                self.send_times.append(self.loop.time())
                self.result.frames_sent += 1
            for _, digit in dtmf:  # presses after the last frame
                await self.send_event(
                    {"event": "websocket:dtmf", "digit": digit, "duration": spec.dtmf_duration}
                )
        except websockets.ConnectionClosed:
            return  # the receiver records why
        finally:
            self.last_message = max(self.last_message, self.loop.time())

    async def settle(self, receiver: asyncio.Task, seconds: float) -> None:
        """Wait for the reply: as many frames back as sent, or quiet, or the bound.

        While a notify reply is due, and for `quiet_seconds` after any event we
        sent, the call stays up even when the frame counts match: the pipeline
        may still answer the event with audio.
        """
        spec = self.spec
        bound = spec.settle_timeout if spec.settle_timeout is not None else seconds + 5.0
        deadline = self.loop.time() + bound
        result = self.result
        while not receiver.done():
            now = self.loop.time()
            if now >= deadline:
                log.info("%s: stopped waiting for the reply after %.1f s", result.label, bound)
                return
            reacting = now - self.last_event < spec.quiet_seconds
            quiet = now - max(self.last_message, self.last_event) >= spec.quiet_seconds
            # As many frames back as sent is not the end while more are still arriving: a
            # pipeline may answer with more audio than it got, and a command behind it.
            echoed = (
                result.frames_received >= result.frames_sent
                and now - self.last_message >= ARRIVAL_GAP
            )
            if not self.notifies and (quiet or (echoed and not reacting)):
                return
            await asyncio.sleep(0.01)

    async def receive(self) -> None:
        """Record frames, check their size, model playout, answer clear and notify."""
        result = self.result
        try:
            async for message in self.ws:
                now = self.loop.time()
                self.last_message = now
                if isinstance(message, bytes):
                    if len(message) != self.frame_bytes:
                        result.wrong_sized.append(len(message))
                        log.warning("%s: wrong-sized frame of %d bytes, expected %d",
                                    result.label, len(message), self.frame_bytes)
                        continue
                    self.chunks.append(message)
                    self.recv_times.append(now)
                    result.frames_received += 1
                    self.play_end = max(self.play_end, now) + FRAME_SECONDS
                else:
                    await self.command(message, now)
        except websockets.ConnectionClosed:
            pass

    async def command(self, message: str, now: float) -> None:
        result = self.result
        try:
            command = json.loads(message)
        except ValueError:
            result.errors.append(f"text message is not JSON: {message[:80]!r}")
            return
        result.commands.append(command)
        action = command.get("action") if isinstance(command, dict) else None
        log.info("%s: command %s", result.label, message[:200])
        if action == "clear":
            buffered = max(0.0, self.play_end - now)
            result.frames_cleared += round(buffered / FRAME_SECONDS)
            self.play_end = now
            # Marks waiting on the dropped audio are due at once.
            for task, event in list(self.notifies.items()):
                task.cancel()
                self.notifies.pop(task, None)
                await self.send_event(event)
            await self.send_event({"event": "websocket:cleared"})
        elif action == "notify":
            event = {"event": "websocket:notify", "payload": command.get("payload")}
            task = asyncio.create_task(self.notify_later(max(0.0, self.play_end - now), event))
            self.notifies[task] = event
        else:
            log.info("%s: unknown command %r ignored", result.label, action)

    async def notify_later(self, delay: float, event: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(delay)
            await self.send_event(event)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.notifies.pop(asyncio.current_task(), None)

    def estimate_latency(self) -> None:
        result = self.result
        lag = echo_lag(result.sent, result.received, self.rate)
        if lag is None:
            return
        result.echo_lag_samples = lag
        shift = lag // self.frame_samples
        pairs = min(len(self.send_times), len(self.recv_times) - shift)
        if pairs <= 0:
            return
        transit = np.array(self.recv_times[shift : shift + pairs]) - np.array(
            self.send_times[:pairs]
        )
        result.echo_latency_ms = float(np.median(transit) * 1000 + lag / self.rate * 1000
                                       - shift * FRAME_SECONDS * 1000)


async def _open_socket(spec: CallSpec, result: CallResult, uri: str, content_type: str,
                       headers: dict[str, Any], authorization: str | None,
                       on_open: Callable[[], Awaitable[None]] | None = None) -> None:
    """Open the socket, send Vonage's first message and play the call on it."""
    rate = rate_of(content_type)
    if rate is None:
        raise SimulationError(f"content-type {content_type!r} is not one Vonage streams")
    result.uri, result.content_type, result.rate = uri, content_type, rate
    extra = {"Authorization": authorization} if authorization else {}
    options: dict[str, Any] = {}
    if _PROXY_KWARG and _is_loopback(uri):
        options["proxy"] = None
    try:
        ws = await connect(
            uri, additional_headers=extra, compression=None, open_timeout=spec.timeout,
            ping_interval=None, close_timeout=5, max_size=1 << 20,
            user_agent_header=f"voicews-call/{__version__}", **options,
        )
    except websockets.InvalidStatus as exc:
        response = exc.response
        body = (response.body or b"")[:200].decode("utf-8", "replace")
        raise SimulationError(
            f"socket {uri} refused the handshake: HTTP {response.status_code} {body}".rstrip()
        ) from None
    except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
        raise SimulationError(f"socket {uri} could not be opened: {exc}") from None
    async with ws:
        await ws.send(json.dumps({"event": "websocket:connected", "content-type": content_type,
                                  **headers}))
        log.info("%s: socket open %s (%s)", result.label, uri, content_type)
        opened = asyncio.create_task(on_open()) if on_open is not None else None
        try:
            await _Call(spec, result, rate).run(ws)
        finally:
            if opened is not None:
                await opened


def _event_data(result: CallResult, spec: CallSpec, status: str, uri: str) -> dict[str, Any]:
    return {
        "uuid": result.uuid, "conversation_uuid": result.conversation_uuid, "status": status,
        "direction": "inbound", "from": spec.from_, "to": uri or spec.to,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


async def simulate_call(spec: CallSpec) -> CallResult:
    """Play one call end to end; every failure ends up in ``result.errors``, never raised."""
    result = CallResult(label=spec.label, uuid=str(uuidlib.uuid4()),
                        conversation_uuid=f"CON-{uuidlib.uuid4()}")
    started = time.monotonic()
    try:
        if spec.play is not None and np.asarray(spec.play).ndim != 1:
            raise SimulationError("play must be a mono (1-D) sample array")
        for digit, _ in spec.dtmf:
            if digit not in DTMF_DIGITS:
                raise SimulationError(f"DTMF digit {digit!r} is not one of 0-9 * #")
        if spec.socket_uri:
            await _open_socket(spec, result, spec.socket_uri, spec.content_type, spec.headers,
                               handshake_authorization(spec.authorization,
                                                       spec.signature_secret))
        else:
            await _answered_call(spec, result)
    except SimulationError as exc:
        result.errors.append(str(exc))
    except Exception as exc:  # a simulator bug or an odd server must not hide the others
        log.exception("%s: simulator error", spec.label)
        result.errors.append(f"simulator error: {exc!r}")
    result.duration = time.monotonic() - started
    return result


async def _answered_call(spec: CallSpec, result: CallResult) -> None:
    call = {
        "to": spec.to, "from": spec.from_, "uuid": result.uuid,
        "conversation_uuid": result.conversation_uuid,
        "region_url": "https://api-us-3.vonage.com", **spec.answer_fields,
    }
    result.ncco = await request_ncco(spec, call)
    endpoint = read_ncco(result.ncco, result)
    uri = rewrite_host(endpoint.uri, spec.ws_host)
    event_url = spec.event_url or (
        rewrite_host(endpoint.event_url, spec.ws_host, http=True) if endpoint.event_url else None
    )
    authorization = handshake_authorization(endpoint.authorization, spec.signature_secret)

    async def event(status: str, **extra: Any) -> None:
        if event_url:
            await post_event(spec, event_url, {**_event_data(result, spec, status, uri),
                                               **extra}, result)

    await event("started")
    await event("ringing")
    began = time.monotonic()
    start_time = datetime.now(UTC)
    await _open_socket(spec, result, uri, endpoint.content_type, endpoint.headers,
                       authorization, on_open=lambda: event("answered"))
    await event(
        "completed", duration=str(round(time.monotonic() - began)),
        start_time=start_time.isoformat(), end_time=datetime.now(UTC).isoformat(),
        rate="0.00", price="0", network="voicews-call",
    )


async def simulate_calls(specs: Iterable[CallSpec]) -> list[CallResult]:
    """Several calls at once, results in the order given."""
    return list(await asyncio.gather(*(simulate_call(spec) for spec in specs)))


def simulate(spec: CallSpec) -> CallResult:
    """:func:`simulate_call` for synchronous code (pytest)."""
    return asyncio.run(simulate_call(spec))


def simulate_many(specs: Iterable[CallSpec]) -> list[CallResult]:
    """:func:`simulate_calls` for synchronous code (pytest)."""
    return asyncio.run(simulate_calls(list(specs)))


def simulate_socket(uri: str, content_type: str = DEFAULT_CONTENT_TYPE,
                    headers: dict[str, Any] | None = None,
                    authorization: dict[str, Any] | str | None = None,
                    **fields: Any) -> CallResult:
    """Open a socket directly (no answer webhook, no event webhooks) and play a call on it.

    `fields` are any other :class:`CallSpec` fields (play, play_rate, fast, dtmf ...).
    """
    spec = CallSpec(socket_uri=uri, content_type=content_type, headers=dict(headers or {}),
                    authorization=authorization, **fields)
    return simulate(spec)


# -- command line --------------------------------------------------------------------------


def _dtmf(value: str) -> tuple[str, float]:
    digit, sep, at = value.partition("@")
    try:
        seconds = float(at) if sep else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected DIGIT@SECONDS, e.g. 5@1.5") from None
    if digit not in DTMF_DIGITS or seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected DIGIT@SECONDS, e.g. 5@1.5")
    return digit, seconds


def _header(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r}: expected KEY=VALUE")
    return key, val


def _positive(kind):
    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} must be positive")
        return number
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicews-call",
        description="Play the Vonage side of a call against an answer URL (or a socket "
        "URL): stream a sound file, send DTMF, record what comes back.",
        epilog="Exit status: 0 when every call completed cleanly, 1 otherwise, 2 on bad "
        "arguments.",
    )
    parser.add_argument("url", help="answer URL (http[s]://...), or a socket URL (ws[s]://...) "
                        "to skip the answer webhook")
    parser.add_argument("--play", metavar="FILE",
                        help="sound file the caller says (WAV, FLAC, OGG, MP3; resampled)")
    parser.add_argument("--record", metavar="FILE",
                        help="write what the call sends back to this WAV (with --calls N: "
                        "FILE-1.wav ... FILE-N.wav)")
    parser.add_argument("--dtmf", metavar="DIGIT@SECONDS", type=_dtmf, action="append",
                        default=[], help="press a key at a time into the call (repeatable)")
    parser.add_argument("--seconds", type=_positive(float),
                        help="call length (default: the file's length plus 1 s, or 3 s)")
    parser.add_argument("--calls", type=_positive(int), default=1,
                        help="concurrent calls (default 1)")
    parser.add_argument("--fast", action="store_true",
                        help="send frames without real-time pacing (for tests)")
    parser.add_argument("--method", choices=["GET", "POST"], default="GET", type=str.upper,
                        help="answer request method (POST sends a JSON body)")
    parser.add_argument("--signature-secret", metavar="SECRET",
                        default=os.environ.get("VONAGE_SIGNATURE_SECRET") or None,
                        help="sign webhooks and a 'vonage' socket handshake with this secret "
                        "(default: $VONAGE_SIGNATURE_SECRET, as the daemon reads it)")
    parser.add_argument("--event-url", metavar="URL",
                        help="post event webhooks here instead of the NCCO's eventUrl")
    parser.add_argument("--ws-host", metavar="HOST",
                        help="replace the host of the NCCO's socket and event URLs: "
                        "host:port, or ws://host:port to change the scheme too")
    parser.add_argument("--to", default=CallSpec.to, help="called number")
    parser.add_argument("--from", dest="from_", default=CallSpec.from_, help="caller's number")
    parser.add_argument("--content-type", default=DEFAULT_CONTENT_TYPE,
                        help="with a socket URL: the call's audio/l16;rate=N")
    parser.add_argument("--header", metavar="KEY=VALUE", type=_header, action="append",
                        default=[], help="with a socket URL: a first-message header, e.g. "
                        "pipeline=echo (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only the summary lines")
    parser.add_argument("--version", action="version", version=f"voicews-call {__version__}")
    return parser


def _record_path(path: str, index: int, calls: int) -> Path:
    p = Path(path)
    return p if calls == 1 else p.with_name(f"{p.stem}-{index}{p.suffix or '.wav'}")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``voicews-call`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # PyJWT warns about short HMAC keys; the secret is whatever the daemon was given.
    warnings.filterwarnings("ignore", message="The HMAC key is")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    play, play_rate = None, 16000
    if args.play:
        try:
            play, play_rate = read_audio(args.play)
        except (OSError, RuntimeError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
            parser.exit(2, f"voicews-call: cannot read {args.play}: {exc}\n")
    direct = args.url.startswith(("ws://", "wss://"))
    if not direct and not args.url.startswith(("http://", "https://")):
        parser.exit(2, f"voicews-call: {args.url!r} is not an http(s):// or ws(s):// URL\n")
    specs = [
        CallSpec(
            answer_url="" if direct else args.url,
            socket_uri=args.url if direct else None,
            content_type=args.content_type, headers=dict(args.header),
            play=play, play_rate=play_rate, seconds=args.seconds, dtmf=list(args.dtmf),
            fast=args.fast, method=args.method, signature_secret=args.signature_secret,
            event_url=args.event_url, ws_host=args.ws_host, to=args.to, from_=args.from_,
            label=f"call {i}" if args.calls > 1 else "call",
        )
        for i in range(1, args.calls + 1)
    ]
    try:
        results = asyncio.run(simulate_calls(specs))
    except KeyboardInterrupt:
        print("voicews-call: interrupted", file=sys.stderr)
        return 130
    for i, result in enumerate(results, 1):
        if args.record and result.rate:
            path = _record_path(args.record, i, args.calls)
            write_wav(path, result.received, result.rate)
            log.info("%s: wrote %s (%.2f s at %d Hz)", result.label, path,
                     len(result.received) / result.rate, result.rate)
        print(result.summary(), flush=True)
    failed = sum(not r.ok for r in results)
    if args.calls > 1:
        print(
            f"total: {len(results)} calls, {len(results) - failed} ok, {failed} failed, "
            f"frames sent {sum(r.frames_sent for r in results)} "
            f"received {sum(r.frames_received for r in results)}, "
            f"wrong-sized {sum(len(r.wrong_sized) for r in results)}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
