"""A whole simulated call: webhooks, then the socket; the synchronous and asyncio entry points."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from voicews.simulator.events import EventWatch, events_url_for
from voicews.simulator.socket import event_data, open_socket
from voicews.simulator.spec import (
    DEFAULT_CONTENT_TYPE,
    DTMF_DIGITS,
    CallResult,
    CallSpec,
    SimulationError,
)
from voicews.simulator.webhooks import (
    handshake_authorization,
    post_event,
    read_ncco,
    request_ncco,
    rewrite_host,
)

log = logging.getLogger("voicews.simulator")


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
            headers = dict(spec.headers)
            if spec.events:  # the daemon knows a call by the uuid in its first message
                if headers.get("uuid"):
                    result.uuid = str(headers["uuid"])
                else:
                    headers["uuid"] = result.uuid
            async with _watching(spec, result, spec.socket_uri):
                await open_socket(spec, result, spec.socket_uri, spec.content_type, headers,
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
            await post_event(spec, event_url, {**event_data(result, spec, status, uri),
                                               **extra}, result)

    await event("started")
    await event("ringing")
    began = time.monotonic()
    start_time = datetime.now(UTC)
    async with _watching(spec, result, uri):
        await open_socket(spec, result, uri, endpoint.content_type, endpoint.headers,
                           authorization, on_open=lambda: event("answered"))
    await event(
        "completed", duration=str(round(time.monotonic() - began)),
        start_time=start_time.isoformat(), end_time=datetime.now(UTC).isoformat(),
        rate="0.00", price="0", network="voicews-call",
    )


@contextlib.asynccontextmanager
async def _watching(spec: CallSpec, result: CallResult, socket_uri: str) -> AsyncIterator[None]:
    """With ``spec.events``: subscribed to the call's events from before its socket opens
    until its ``call_ended`` has arrived (bounded)."""
    if not spec.events:
        yield
        return
    watch = EventWatch(spec, result, spec.events_url or events_url_for(socket_uri))
    await watch.start()
    try:
        yield
    finally:
        await watch.finish()


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
