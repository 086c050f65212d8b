"""The control API under ``/calls``: list live calls and act on them while they stream.

Behind ``security.control_token`` as a Bearer token; unset, the API is off and says how
to turn it on.  Those refusals go the :class:`voicews.web.auth.Refused` way (one log
line, ``voicews_rejected_total{reason}``).  Every request past them is one log line and
one ``voicews_control_actions_total{action,result}``.

- ``GET /calls``: every live call (every worker's, with a cluster);
- ``GET /calls/{uuid}``: one call;
- ``POST /calls/{uuid}/{play|clear|notify|hangup|pipeline|say}`` with a JSON body.

What an action does is :mod:`voicews.web.actions`.  With ``cluster:`` configured, a call
this worker does not hold is reached through :mod:`voicews.cluster` (the app service
sets :attr:`ControlApi.cluster`); Redis down: 503 for other workers' calls, while this
worker's own calls are still listed (in the 503's body) and acted on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from voicews.runtime import metrics
from voicews.web import auth
from voicews.web.actions import (
    BODIES,
    CallActions,
    Refusal,
    check_body,
    check_uuid,
)

if TYPE_CHECKING:
    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.web.control")

RESULTS = {200: "ok", 400: "bad_request", 404: "not_found", 409: "conflict",
           500: "error", 503: "unavailable", 504: "timeout"}
OFF = ("the control API is off: set security.control_token in config.yaml (the shipped "
       "config reads it from VOICEWS_CONTROL_TOKEN) to turn it on")


class Cluster(Protocol):
    """What the control API needs of voicews.cluster.ClusterLink."""

    def list_calls(self) -> defer.Deferred[Any]: ...
    def request(self, uuid: str, action: str, body: dict[str, Any]) -> defer.Deferred[Any]: ...


def _cluster_error(exc: Exception) -> tuple[int, str] | None:
    """(status, reason) of a ClusterUnavailable (503) or ClusterTimeout (504), else None."""
    from voicews.cluster import ClusterError  # reached only with a cluster: imported already

    return (exc.status, exc.reason) if isinstance(exc, ClusterError) else None


class ControlApi:
    """The routes under ``/calls``."""

    app = Klein()

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.actions = CallActions(runtime)
        self.cluster: Cluster | None = None
        """Set by the app service when ``cluster.redis`` is configured."""

    @app.handle_errors(auth.Refused)
    def refused(self, request: IRequest, failure: Any) -> bytes:
        return auth.refuse(request, failure.value)

    def _allow(self, request: IRequest) -> None:
        token = self.runtime.settings.raw.security.control_token
        if not token:
            raise auth.Refused(403, OFF, "control_off")
        auth.check_bearer(request, token, "control")

    @app.route("/", methods=["GET"], strict_slashes=False)  # GET /calls
    async def list_calls(self, request: IRequest) -> bytes:
        self._allow(request)
        local = self.actions.local_calls()
        if self.cluster is None:
            return self._answer(request, "list", None, 200, {"calls": local})
        try:
            calls = await self.cluster.list_calls()
        except Exception as exc:
            failure = _cluster_error(exc)
            if failure is None:
                raise
            status, reason = failure
            return self._answer(request, "list", None, status,
                                {"error": reason, "calls": local, "complete": False})
        return self._answer(request, "list", None, 200, {"calls": calls})

    @app.route("/<string:uuid>", methods=["GET"])
    async def one_call(self, request: IRequest, uuid: str) -> bytes:
        self._allow(request)
        try:
            check_uuid(uuid)
        except Refusal as exc:
            return self._answer(request, "info", ascii(uuid[:40]), exc.status,
                                {"error": exc.reason})
        status, body = await self._route(uuid, "info", {})
        return self._answer(request, "info", uuid, status, body)

    @app.route("/<string:uuid>/<string:action>", methods=["POST"])
    async def act(self, request: IRequest, uuid: str, action: str) -> bytes:
        self._allow(request)
        label = action if action in BODIES else "unknown"  # bounded label values
        try:
            check_uuid(uuid)
        except Refusal as exc:
            return self._answer(request, label, ascii(uuid[:40]), exc.status,
                                {"error": exc.reason})
        try:
            body = check_body(action, _json_body(request))
        except Refusal as exc:
            return self._answer(request, label, uuid, exc.status,
                                {"error": exc.reason, "uuid": uuid})
        status, answer = await self._route(uuid, action, body)
        return self._answer(request, action, uuid, status, answer)

    async def _route(self, uuid: str, action: str, body: dict[str, Any]) -> tuple[int, dict]:
        """Here when this worker holds the call (or there is no cluster), else through Redis."""
        if self.cluster is None or self.actions.find(uuid) is not None:
            return await self.actions.handle(uuid, action, body)
        try:
            return await self.cluster.request(uuid, action, body)
        except Exception as exc:
            failure = _cluster_error(exc)
            if failure is None:
                raise
            return failure[0], {"error": failure[1], "uuid": uuid}

    def _answer(self, request: IRequest, action: str, uuid: str | None, status: int,
                body: dict[str, Any]) -> bytes:
        """One log line and one count per request, then the JSON answer."""
        result = RESULTS.get(status, str(status))
        metrics.CONTROL_ACTIONS.labels(action=action, result=result).inc()
        worker = body.get("worker", self.runtime.worker)
        detail = f"worker={worker}" if status < 300 else body.get("error", "")
        target = f" uuid={uuid}" if uuid is not None else ""
        # 503/504 are Redis's or another worker's trouble, logged once per outage by the
        # cluster link: each request that meets it is an info line, like any other.
        level = log.warn if status == 500 else log.info
        level("control {action}{target} -> {status} {detail}", action=action, target=target,
              uuid=uuid, status=status, result=result, detail=detail, peer=_peer(request))
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        request.setHeader("cache-control", "no-store")
        return json.dumps(body).encode("utf-8")

    def serve_remote(self, uuid: str, action: str, body: dict[str, Any]) -> defer.Deferred:
        """The cluster's handler: an action another worker routed here (logged here too)."""

        def logged(reply: tuple[int, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
            error = reply[1].get("error")
            log.info("control {action} uuid={uuid} routed here -> {status}{detail}",
                     action=action, uuid=uuid, status=reply[0],
                     detail=f" {error}" if error else "", routed=True)
            return reply

        return self.actions.handle(uuid, action, body).addCallback(logged)


def _peer(request: IRequest) -> str:
    peer = request.getClientAddress()
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"


def _json_body(request: IRequest) -> Any:
    """The request's JSON body ({} when empty), or Refusal(400)."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    ctype = (auth.header(request, "content-type") or "application/json").split(";")[0]
    if ctype.strip().lower() not in ("application/json", "application/x-www-form-urlencoded"):
        raise Refusal(400, f"the body must be JSON, not {ctype.strip()[:60]!r}")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(400, f"the body is not valid JSON: {exc}") from None
