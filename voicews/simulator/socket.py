"""The socket half of a simulated call: frames out, frames back, and Vonage's playout model."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import connect

from voicews import __version__
from voicews.audio.files import resample
from voicews.audio.samples import FRAME_SECONDS, SAMPLE_DTYPE, frame_bytes, frame_samples
from voicews.audio.samples import parse_content_type as rate_of
from voicews.simulator.spec import (
    ARRIVAL_GAP,
    PROXY_KWARG,
    SECONDS_WITHOUT_FILE,
    TAIL_SECONDS,
    CallResult,
    CallSpec,
    SimulationError,
)
from voicews.simulator.webhooks import is_loopback

# -- the socket ----------------------------------------------------------------------------

log = logging.getLogger("voicews.simulator")


def echo_lag(sent: np.ndarray, received: np.ndarray, rate: int,
             max_lag_seconds: float = 1.0, window_seconds: float = 5.0) -> int | None:
    """Samples by which `received` trails `sent`, when it is recognisably the same audio.

    Normalised cross-correlation over the first few seconds, at lags where at least half
    of them overlap; a peak below 0.8 (another signal, silence, heavy processing) means
    "cannot tell".
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
    # A lag is judged on at least half the compared audio: over a few samples any two
    # signals correlate perfectly (one sample always does), and a call no longer than its
    # file leaves only such short overlaps at large lags.
    enough = overlap >= max(frame_samples(rate), n // 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(enough & (energy_a * energy_b > 0),
                         corr / np.sqrt(energy_a * energy_b), 0.0)
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
        self.ws: Any = None  # the socket, once run() has it

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
            task = asyncio.current_task()
            if task is not None:
                self.notifies.pop(task, None)

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


async def open_socket(spec: CallSpec, result: CallResult, uri: str, content_type: str,
                       headers: dict[str, Any], authorization: str | None,
                       on_open: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
    """Open the socket, send Vonage's first message and play the call on it."""
    rate = rate_of(content_type)
    if rate is None:
        raise SimulationError(f"content-type {content_type!r} is not one Vonage streams")
    result.uri, result.content_type, result.rate = uri, content_type, rate
    extra = {"Authorization": authorization} if authorization else {}
    options: dict[str, Any] = {}
    if PROXY_KWARG and is_loopback(uri):
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


def event_data(result: CallResult, spec: CallSpec, status: str, uri: str) -> dict[str, Any]:
    return {
        "uuid": result.uuid, "conversation_uuid": result.conversation_uuid, "status": status,
        "direction": "inbound", "from": spec.from_, "to": uri or spec.to,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
