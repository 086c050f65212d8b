"""The daemon as a Twisted service: listen, reload on SIGHUP, drain on stop.

``stopService`` returns a Deferred that fires once live calls have ended or
``drain_timeout`` has passed, so twistd waits for the goodbye before exiting.
"""

from __future__ import annotations

import signal

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from voicews import metrics
from voicews.config import ConfigError, load_settings
from voicews.guard import CallWatchdog, GuardedSite, warn_if_exposed
from voicews.protocol import CallFactory
from voicews.runtime import Runtime
from voicews.webhooks import Webhooks

log = Logger(namespace="voicews.service")


class VoicewsService(service.Service):
    """One port, one process: webhooks and the call socket on one Site."""

    def __init__(self, runtime: Runtime, listen: str, reactor) -> None:
        self.runtime = runtime
        self.listen = listen
        self.reactor = reactor
        self.factory = CallFactory(runtime)
        self.webhooks = Webhooks(runtime, self.factory)
        self.site = GuardedSite(self.webhooks.app.resource(), runtime, reactor=reactor)
        self.watchdog = CallWatchdog(runtime)
        metrics.watch_calls(runtime.calls)
        self.port: IListeningPort | None = None
        self._previous_hup = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        endpoint = serverFromString(self.reactor, self.listen)
        d = endpoint.listen(self.site)
        d.addCallbacks(self._listening, self._listen_failed)
        self.watchdog.start()
        self._previous_hup = signal.signal(signal.SIGHUP, self._sighup)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        log.info(
            "voicews listening on {host}:{port} with pipelines {pipelines}",
            host=getattr(address, "host", address), port=getattr(address, "port", ""),
            pipelines=", ".join(sorted(self.runtime.settings.pipelines)),
        )
        warn_if_exposed(str(getattr(address, "host", address)), self.runtime.settings)

    def _listen_failed(self, failure) -> None:
        log.critical("cannot listen on {listen}: {error}", listen=self.listen, error=failure.value)
        self.reactor.callWhenRunning(self.reactor.stop)

    def _sighup(self, signum, frame) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """Load config.yaml again; new calls use it, live calls keep theirs."""
        path = self.runtime.settings.path
        try:
            settings = load_settings(path, self.runtime.pm)
        except ConfigError as exc:
            log.error("reload refused, old config stays in force: {error}", error=str(exc))
            return False
        self.runtime.settings = settings
        log.info(
            "reloaded {path}: pipelines {pipelines}", path=str(path),
            pipelines=", ".join(sorted(settings.pipelines)),
        )
        return True

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802
        super().stopService()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
        self.runtime.draining = True
        if self.port is not None:
            yield self.port.stopListening()
        live = list(self.runtime.calls.live)
        if live:
            timeout = self.runtime.settings.raw.drain_timeout
            log.info("draining {count} calls (up to {timeout} s)", count=len(live), timeout=timeout)
            for call in live:
                call.drain()
            yield self._wait_for_calls(timeout)
        self.watchdog.stop()
        # twistd re-raises the signal that stopped it once the reactor is done, so a
        # SIGTERM would show as a kill.  A drained shutdown is a clean one: exit 0.
        if getattr(self.reactor, "_exitSignal", None) == signal.SIGTERM:
            self.reactor._exitSignal = None

    def _wait_for_calls(self, timeout: float) -> defer.Deferred:
        d = defer.Deferred()
        deadline = self.reactor.seconds() + timeout

        def check() -> None:
            if not self.runtime.calls.live:
                d.callback(None)
            elif self.reactor.seconds() >= deadline:
                log.warn(
                    "drain timeout: dropping {count} calls", count=len(self.runtime.calls.live)
                )
                for call in list(self.runtime.calls.live):
                    call.dropConnection(abort=True)
                d.callback(None)
            else:
                self.reactor.callLater(0.05, check)

        check()
        return d
