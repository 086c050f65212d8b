"""The daemon's one HTTP resource tree: everything that answers on the port.

Each concern is its own Klein app, mounted here under its path: Vonage's
webhooks (``/webhooks/``), the control API (``/calls``), the event stream
(``/events``), the web console (``/console``), and beside them
``/health``, ``/metrics`` and the door to the call socket (``/socket``).  A new
concern adds its module and one route here.
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.web.iweb import IRequest

from voicews import __version__
from voicews.call.protocol import CallFactory
from voicews.runtime import metrics
from voicews.runtime.state import Runtime
from voicews.web import auth
from voicews.web.console import Console
from voicews.web.control import ControlApi
from voicews.web.events import EventStreams
from voicews.web.webhooks import Webhooks, json_response


class Root:
    """The root of the Site: mounts each concern's routes."""

    app = Klein()

    def __init__(self, runtime: Runtime, factory: CallFactory) -> None:
        self.runtime = runtime
        self.factory = factory
        self.socket = WebSocketResource(factory)
        self.webhooks = Webhooks(runtime)
        self.control = ControlApi(runtime)
        self.events = EventStreams(runtime)
        self.console = Console(runtime)

    @app.handle_errors(auth.Refused)
    def refused(self, request: IRequest, failure) -> bytes:
        """Every refusal and malformed request: one log line, one metric, JSON reason."""
        return auth.refuse(request, failure.value)

    @app.route("/webhooks/", branch=True)
    def webhooks_branch(self, request: IRequest):
        return self.webhooks.app.resource()

    @app.route("/calls", branch=True)
    def control_branch(self, request: IRequest):
        return self.control.app.resource()
    @app.route("/events", branch=True)
    def events_branch(self, request: IRequest):
        return self.events.app.resource()

    @app.route("/console/", branch=True)  # /console redirects here: the page uses relative URLs
    def console_branch(self, request: IRequest):
        return self.console.app.resource()

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        runtime = self.runtime
        return json_response(
            request,
            {
                "status": "draining" if runtime.draining else "ok",
                "version": __version__,
                "active_calls": len(runtime.calls),
                "pipelines": sorted(runtime.settings.pipelines),
                "fast_path": self.factory.fast_path,
            },
        )

    @app.route("/metrics", methods=["GET"])
    def metrics_page(self, request: IRequest) -> bytes:
        auth.check_bearer(request, self.runtime.settings.raw.security.metrics_token, "metrics")
        request.setHeader("content-type", "text/plain; version=0.0.4; charset=utf-8")
        return metrics.render()

    @app.route("/socket", methods=["GET"])
    def socket_route(self, request: IRequest):
        auth.check_socket_handshake(request, self.runtime)
        return self.socket
