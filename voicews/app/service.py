"""The daemon as a Twisted service: listen, watch calls, reload on SIGHUP, drain on stop.

A ``MultiService`` of Twisted's own parts: a ``StreamServerEndpointService`` for
the one port (webhooks, the control API and the call socket on one Site), a
``TimerService`` for the call watchdog and, with ``cluster.redis``, the
ClusterLink that makes the workers' control APIs act as one; plugins'
``services`` run beside them.  ``stopService``
returns a Deferred that fires once live calls have ended (their steps closed)
or ``drain_timeout`` has passed, then stops plugin services and runs the
``stop`` hooks, so twistd waits for the goodbye before exiting.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from zope.interface import implementer

from voicews.app import fdlimit
from voicews.app.stalls import StallWatch
from voicews.call.fastpath import self_check
from voicews.call.protocol import CallFactory
from voicews.call.watchdog import INTERVAL, CallWatchdog
from voicews.config import plugins
from voicews.config.settings import ConfigError, load_settings
from voicews.runtime import metrics
from voicews.runtime.callbacks import EventCallbacks
from voicews.runtime.events import AppEvent
from voicews.runtime.state import Runtime
from voicews.web import fdreserve
from voicews.web.auth import warn_if_exposed
from voicews.web.control import ControlApi
from voicews.web.limits import GuardedSite
from voicews.web.site import Root

log = Logger(namespace="voicews.service")

DROP_GRACE = 1.0
"""Seconds dropped calls get to report their end once drain_timeout has passed."""


class VoicewsService(service.MultiService):
    """One port, one process: webhooks and the call socket on one Site."""

    def __init__(self, runtime: Runtime, listen: str, reactor: Any, log_observer=None) -> None:
        super().__init__()
        self.runtime = runtime
        self.listen = listen
        self.reactor = reactor
        self.log_observer = log_observer
        problem = self_check() if runtime.settings.raw.fast_path else "fast_path: false"
        self.fast_path = problem is None
        self._fast_path_problem = problem
        self.factory = CallFactory(runtime, fast_path=self.fast_path)
        self.root = Root(runtime, self.factory)
        self.site = GuardedSite(self.root.app.resource(), runtime, reactor=reactor)
        endpoint = _Reporting(serverFromString(reactor, listen), listen, self._listening)
        self.endpoint = StreamServerEndpointService(endpoint, self.site)
        self.endpoint.setServiceParent(self)
        self.watchdog = CallWatchdog(runtime)
        timer = TimerService(INTERVAL, self.watchdog.tick)
        timer.clock = reactor
        timer.setServiceParent(self)
        StallWatch(reactor, runtime.settings.raw.limits.stall_seconds).setServiceParent(self)
        self.cluster = _cluster_link(runtime, self.root.control, reactor)
        if self.cluster is not None:
            self.cluster.setServiceParent(self)
        EventCallbacks(runtime).setServiceParent(self)  # stopped after the calls: flushes
        runtime.transcription.setServiceParent(self)  # stopped after the calls have ended
        self.plugin_services = service.MultiService()
        metrics.watch_calls(runtime.calls)
        self._previous_signals: dict[int, Any] = {}
        self._stopping = False

    def setServiceParent(self, parent) -> None:  # noqa: N802
        # twistd asks the application for an ILogObserver before it starts logging
        # (unless --logger was given); this is how `log_format: json` takes over.
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if not self.fast_path:
            log.info("fast path off ({why}): every call takes the public path",
                     why=self._fast_path_problem)
        for found in self.runtime.pm.hook.services(runtime=self.runtime):
            for child in found if isinstance(found, (list, tuple)) else [found]:
                if child is not None:
                    child.setServiceParent(self.plugin_services)
        self.plugin_services.startService()
        # After the reactor's own handlers (installed as it starts running).
        self.reactor.callWhenRunning(self._take_signals)

    def _take_signals(self) -> None:
        for signum, handler in ((signal.SIGHUP, self._sighup), (signal.SIGTERM, self._sigterm)):
            self._previous_signals[signum] = signal.signal(signum, handler)

    def _listening(self, port) -> Any:
        address = port.getHost()
        host = getattr(address, "host", address)
        log.info(
            "voicews listening on {host}:{port} with pipelines {pipelines}",
            host=host, port=getattr(address, "port", ""),
            pipelines=", ".join(sorted(self.runtime.settings.pipelines)),
        )
        warn_if_disabled(self.runtime.settings)
        warn_if_exposed(str(host), self.runtime.settings)
        fdreserve.install(port, self.reactor)
        return port

    # -- signals ------------------------------------------------------------------------

    def _sighup(self, signum, frame) -> None:
        self.reactor.callFromThread(self.reload)

    def _sigterm(self, signum, frame) -> None:
        # Stop as twistd would, but without having twistd re-raise SIGTERM once the
        # reactor is done: a drained shutdown is a clean one (exit status 0).
        if not self._stopping:
            self._stopping = True
            self.reactor.callFromThread(self.reactor.stop)

    def reload(self) -> bool:
        """Load config.yaml again; new calls use it, live calls keep theirs.

        Transactional: the new config is resolved with a fresh plugin manager, and
        only a config that loads completely replaces the old one (and its plugins).
        """
        path = self.runtime.settings.path
        try:
            pm = plugins.make_plugin_manager()
            settings = load_settings(path, pm)
        except (ConfigError, plugins.PluginError) as exc:
            log.error("reload refused, old config stays in force: {error}", error=str(exc))
            return False
        if settings.raw.cluster != self.runtime.settings.raw.cluster:
            log.warn("reload: the cluster section changed; it takes effect at the next start")
        self.runtime.use(settings, pm)
        fdlimit.warn_if_short(settings)  # max_calls may have changed
        log.info(
            "reloaded {path}: pipelines {pipelines}", path=str(path),
            pipelines=", ".join(sorted(settings.pipelines)),
        )
        warn_if_disabled(settings)
        return True

    # -- stopping -----------------------------------------------------------------------

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802
        service.Service.stopService(self)
        # SIGTERM stays ours until the process ends: a second one while draining is ignored.
        if signal.SIGHUP in self._previous_signals:
            signal.signal(signal.SIGHUP, self._previous_signals.pop(signal.SIGHUP))
        runtime = self.runtime
        runtime.draining = True
        yield self.endpoint.stopService()
        calls = list(runtime.calls)
        if calls:
            timeout = runtime.settings.raw.drain_timeout
            log.info("draining {count} calls (up to {timeout} s)", count=len(calls),
                     timeout=timeout)
            for call in calls:
                call.drain()
            yield self._drained(timeout)
        for child in list(self):
            if child is not self.endpoint:
                yield child.stopService()
        self.factory.reader.close()
        yield self._bounded(self.plugin_services.stopService(), "plugin services")
        yield self._bounded(self._stop_hooks(), "plugins' stop hooks")
        yield runtime.stop()

    @defer.inlineCallbacks
    def _drained(self, timeout: float):
        """Wait for every call to end; at `timeout`, drop the rest and wait a little more."""
        empty = self.runtime.calls.when_empty()
        try:
            yield _within(empty, timeout, self.reactor)
            return
        except defer.TimeoutError:
            pass
        calls = list(self.runtime.calls)
        log.warn("drain timeout: dropping {count} calls", count=len(calls))
        for call in calls:
            call.abort()
        try:
            yield _within(self.runtime.calls.when_empty(), DROP_GRACE, self.reactor)
        except defer.TimeoutError:
            log.warn("{count} calls still closing; stopping anyway",
                     count=len(self.runtime.calls))

    def _stop_hooks(self) -> defer.Deferred:
        """Run every plugin's ``stop`` hook; a Deferred for the ones that returned one."""
        try:
            results = self.runtime.pm.hook.stop()
        except Exception:
            log.failure("a plugin's stop hook raised")
            return defer.succeed(None)
        waits = [r for r in results if isinstance(r, defer.Deferred)]
        d = defer.DeferredList(waits, consumeErrors=True)

        def done(result):
            for ok, value in result:
                if not ok:
                    log.failure("a plugin's stop hook failed", failure=value)

        return d.addCallback(done)

    def _bounded(self, d: defer.Deferred, what: str) -> defer.Deferred:
        """`d`, given up on (with one warning) after drain_timeout."""
        timeout = self.runtime.settings.raw.drain_timeout

        def late(failure):
            failure.trap(defer.TimeoutError)
            log.warn("{what} still busy after drain_timeout; stopping anyway", what=what)

        return _within(d, timeout, self.reactor).addErrback(late)


def _cluster_link(runtime: Runtime, control: ControlApi, reactor: Any) -> Any:
    """With ``cluster.redis``: the ClusterLink that lists and routes control actions between
    workers (one Redis), wired to the control API's own action code.  Else None, and
    voicews.cluster (txredisapi) is never imported."""
    conf = runtime.settings.raw.cluster
    if conf.redis is None:
        return None
    from voicews.cluster import ClusterLink, ClusterOptions

    options = ClusterOptions(prefix=conf.prefix, refresh=conf.refresh, ttl=conf.ttl,
                             request_timeout=conf.request_timeout)
    link = ClusterLink(conf.redis, runtime.worker, reactor, control.actions.local_calls,
                       control.serve_remote, options, reactor=reactor)
    control.cluster = link
    control.actions.changed = link.refresh_now  # a switch changed a call's pipeline
    runtime.call_watchers.append(link.refresh_now)  # a call started or ended
    # Call events: ours go to the other workers; theirs reach our /events streams (not our
    # HTTP callbacks: each event is posted once, by the worker that holds the call).
    runtime.events.subscribe(_SharedEvents(link), remote=False)

    def theirs(record: dict[str, Any]) -> None:
        if record.get("worker") != runtime.worker:
            runtime.events.deliver(AppEvent.from_record(record), remote=True)

    link.subscribe_events(theirs)
    return link


class _SharedEvents:
    """A bus subscriber that hands this worker's call events to the cluster link."""

    def __init__(self, link: Any) -> None:
        self.link = link

    def offer(self, event: AppEvent) -> None:
        self.link.publish_event(event.record)

    def close(self) -> None:
        pass


@implementer(IStreamServerEndpoint)
class _Reporting:
    """An endpoint that reports its port, and stops the start when it cannot listen.

    Twisted's endpoint service logs a failed ``listen`` and carries on; a daemon
    that cannot take its port must exit non-zero (so systemd's Restart=on-failure
    retries) with one line saying why.  The usual endpoints (tcp, ssl, systemd)
    fail at once, while twistd starts the service, so the exit happens there.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, listen: str, on_port) -> None:
        self.endpoint = endpoint
        self.listen_text = listen
        self.on_port = on_port

    def listen(self, factory) -> defer.Deferred:
        d = self.endpoint.listen(factory)
        failed: list[Failure] = []

        def note(failure: Failure) -> Failure:
            failed.append(failure)
            return failure

        d.addErrback(note)
        if failed:
            d.addErrback(lambda _: None)  # reported here, once
            sys.stderr.write(
                f"voicews: cannot listen on {self.listen_text!r}: {failed[0].value}\n"
            )
            sys.stderr.flush()
            raise SystemExit(1)
        d.addCallback(self.on_port)
        d.addErrback(self._failed_later)
        return d

    def _failed_later(self, failure: Failure) -> None:
        from twisted.internet import reactor

        log.critical("cannot listen on {listen}: {error}", listen=self.listen_text,
                     error=failure.value)
        reactor.callWhenRunning(reactor.stop)


def _within(d: defer.Deferred, timeout: float, clock) -> defer.Deferred:
    """A Deferred that fires with `d`'s result, or fails with TimeoutError after `timeout`
    (without cancelling `d`: the calls it waits for go on closing)."""
    out: defer.Deferred = defer.Deferred()

    def expire() -> None:
        if not out.called:
            out.errback(defer.TimeoutError())

    timer = clock.callLater(timeout, expire)

    def fire(result):
        if timer.active():
            timer.cancel()
        if not out.called:
            out.callback(result)

    d.addBoth(fire)
    return out


def warn_if_disabled(settings: Any) -> None:
    """One warning per pipeline left out at load (an engine it needs is not installed)."""
    for name, why in settings.disabled.items():
        log.warn("pipeline {pipeline} is off, calls to it are refused: {why}",
                 pipeline=name, why=why)
