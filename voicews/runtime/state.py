"""The daemon's shared state: the config in force, the plugin manager, the calls, and
what every call borrows from the process (worker threads, an HTTP client, event sinks).

Webhooks and sockets read ``runtime.settings`` at the moment a request or call
starts, so a reload (SIGHUP) affects new calls only: a live call keeps the
PipelineSpec and the :class:`CallServices` it started with.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from voicews.config.settings import Settings
from voicews.pipeline.services import CallServices
from voicews.runtime.calls import CallRegistry
from voicews.runtime.events import EventBus
from voicews.runtime.transcription import Transcription

if TYPE_CHECKING:
    from voicews.pipeline.events import Event
    from voicews.pipeline.info import CallInfo
    from voicews.pipeline.session import Session

log = Logger(namespace="voicews.runtime")

EventSink = Callable[["CallInfo", "Event"], None]


class Runtime:
    """One daemon's state; plugins get it from the ``services`` hook."""

    def __init__(
        self, settings: Settings, pm: pluggy.PluginManager, clock: IReactorTime,
        worker: str | None = None,
    ) -> None:
        self.pm = pm
        self.clock = clock
        """The reactor (its IReactorTime side is all most code needs)."""
        self.calls = CallRegistry()
        self.draining = False
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        """This process's name among workers (``host:pid``)."""
        self.sinks: list[EventSink] = []
        """Where call events go besides the steps: HTTP callbacks, ``/events`` streams."""
        self.call_watchers: list[Callable[[], None]] = []
        """Told when a call has started or ended, after the plugins' hooks (the cluster link
        registers the live calls again).  At an end the record is still in ``calls`` until
        the reactor turn is over, so a watcher schedules its work rather than reading now."""
        self.events = EventBus()
        """Call events as the application gets them (see voicews/runtime/events.py)."""
        self.sinks.append(self.events.publish)
        self._threads: ThreadPool | None = None
        self._http: Any = None
        self._http_pool: Any = None
        self._settings = settings
        self.transcription = Transcription(settings.transcriber, self.calls, clock)
        """The speech recognizer calls share (a service the daemon starts), if one is needed."""
        self.tts = settings.tts
        """The text-to-speech engine every call's ``session.say`` shares (config's ``tts:``)."""
        self._retired: list[Any] = []  # engines a reload replaced, closed once unused
        self.call_services = self._call_services()

    @property
    def settings(self) -> Settings:
        return self._settings

    def use(self, settings: Settings, pm: pluggy.PluginManager) -> None:
        """Put a reloaded config (and the plugin manager that resolved it) in force."""
        self._settings = settings
        self.pm = pm
        self.transcription.use(settings.transcriber)
        if not settings.tts.same_as(self.tts):
            # Live calls keep the old engine; it is closed once no call is left to use it.
            old, self.tts = self.tts, settings.tts
            self._retired.append(old)
            self.calls.when_empty().addCallback(lambda _: self._retire(old))
        self.call_services = self._call_services()

    def _retire(self, engine: Any) -> None:
        if engine in self._retired:
            self._retired.remove(engine)
            engine.close().addErrback(lambda f: log.failure("closing a replaced text-to-speech "
                                                            "engine failed", f))

    def _call_services(self) -> CallServices:
        limits = self._settings.raw.limits
        return CallServices(
            clock=self.clock,
            run_in_thread=self.run_in_thread,
            http=self.http,
            publish=self.publish,
            tts=self.tts,
            call_started=self._call_started,
            call_ended=self._call_ended,
            transcriber=self.transcription.current,
            max_lead_seconds=limits.max_lead_seconds,
            max_buffer_seconds=limits.max_buffer_seconds,
            close_timeout=limits.close_timeout,
        )

    def _call_started(self, session: Session) -> None:
        self.pm.hook.call_started(session=session)
        self._calls_changed()

    def _call_ended(self, session: Session, outcome: str) -> None:
        try:
            self.pm.hook.call_ended(session=session, outcome=outcome)
        finally:
            self._calls_changed()

    def _calls_changed(self) -> None:
        for watcher in self.call_watchers:
            try:
                watcher()
            except Exception:
                log.failure("a call watcher raised")

    def publish(self, info: CallInfo, event: Event) -> None:
        """One call event to every sink (each bounded by itself: none may block)."""
        for sink in self.sinks:
            sink(info, event)

    # -- borrowed by calls -------------------------------------------------------------

    def run_in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        """``fn`` in the daemon's worker threads; the Deferred fires on the reactor."""
        from twisted.internet.threads import deferToThreadPool

        if self._threads is None:
            self._threads = ThreadPool(0, self._settings.raw.limits.worker_threads, "voicews")
            self._threads.start()
        return deferToThreadPool(self.clock, self._threads, fn, *args, **kwargs)  # type: ignore[arg-type]

    def http(self) -> Any:
        """The shared treq HTTPClient (persistent connections), made on first use."""
        if self._http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            pool = self._http_pool = HTTPConnectionPool(self.clock, persistent=True)
            self._http = HTTPClient(Agent(self.clock, pool=pool))
        return self._http

    def stop(self) -> defer.Deferred[None]:
        """Release the threads, connections and speech engine calls borrowed (the daemon is
        stopping, its calls have ended)."""
        if self._threads is not None:
            self._threads.stop()
            self._threads = None
        waits = [engine.close() for engine in [self.tts, *self._retired]]
        self._retired = []
        if self._http_pool is not None:
            pool, self._http_pool, self._http = self._http_pool, None, None
            waits.append(pool.closeCachedConnections())
        done = defer.DeferredList(waits, consumeErrors=True)
        return done.addCallback(lambda _: None)
