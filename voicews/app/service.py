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
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from voicews.call.protocol import CallFactory
from voicews.call.watchdog import CallWatchdog
from voicews.config.settings import ConfigError, load_settings
from voicews.runtime import metrics
from voicews.runtime.state import Runtime
from voicews.web.auth import warn_if_exposed
from voicews.web.limits import GuardedSite
from voicews.web.webhooks import Webhooks

log = Logger(namespace="voicews.app.service")

# Seconds dropped calls get to report their end once drain_timeout has passed.
DROP_GRACE = 1.0


class VoicewsService(service.Service):
    """One port, one process: webhooks and the call socket on one Site."""

    def __init__(self, runtime: Runtime, listen: str, reactor, log_observer=None) -> None:
        self.runtime = runtime
        self.log_observer = log_observer
        self.listen = listen
        self.reactor = reactor
        self.factory = CallFactory(runtime)
        self.webhooks = Webhooks(runtime, self.factory)
        self.site = GuardedSite(self.webhooks.app.resource(), runtime, reactor=reactor)
        self.watchdog = CallWatchdog(runtime)
        metrics.watch_calls(runtime.calls)
        self.port: IListeningPort | None = None
        self._previous_hup = None

    def setServiceParent(self, parent) -> None:  # noqa: N802
        # twistd asks the application for an ILogObserver before it starts logging
        # (unless --logger was given); this is how `log_format: json` takes over.
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

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
        self.factory.reader.close()
        yield self._stop_plugins()
        # twistd re-raises the signal that stopped it once the reactor is done, so a
        # SIGTERM would show as a kill.  A drained shutdown is a clean one: exit 0.
        if getattr(self.reactor, "_exitSignal", None) == signal.SIGTERM:
            self.reactor._exitSignal = None

    def _stop_plugins(self) -> defer.Deferred:
        """Run every plugin's ``stop`` hook and wait (up to drain_timeout) for its Deferreds."""
        try:
            results = self.runtime.pm.hook.stop()
        except Exception:
            log.failure("a plugin's stop hook raised")
            return defer.succeed(None)
        waits = [r for r in results if isinstance(r, defer.Deferred)]
        if not waits:
            return defer.succeed(None)
        d = defer.DeferredList(waits, consumeErrors=True)
        d.addTimeout(self.runtime.settings.raw.drain_timeout, self.reactor)

        def done(result):
            for ok, value in result:
                if not ok:
                    log.failure("a plugin's stop hook failed", failure=value)

        def timed_out(failure):
            failure.trap(defer.TimeoutError)
            log.warn("plugins still busy after drain_timeout; stopping anyway")

        return d.addCallbacks(done, timed_out)

    def _wait_for_calls(self, timeout: float) -> defer.Deferred:
        """Fire once every live call has closed, dropping the rest at `timeout`.

        After a drop it still waits (briefly) for the dropped calls' onClose, so
        each call's "call ended" line is logged before the reactor stops.
        """
        d = defer.Deferred()
        deadline = self.reactor.seconds() + timeout
        dropped = False

        def check() -> None:
            nonlocal dropped
            live = self.runtime.calls.live
            if not live or self.reactor.seconds() >= deadline + DROP_GRACE:
                d.callback(None)
                return
            if not dropped and self.reactor.seconds() >= deadline:
                dropped = True
                log.warn("drain timeout: dropping {count} calls", count=len(live))
                for call in list(live):
                    call.dropConnection(abort=True)
            self.reactor.callLater(0.05, check)

        check()
        return d
