"""The daemon's speech recognizer: one engine for every call, as a Twisted service.

Made only when the config has a step that needs it (``Settings.transcriber``), so a daemon
without speech recognition starts no worker process and loads no model.  Started with the
daemon (the engine's workers load while the first calls may already arrive: those wait,
see ``TranscriberService.when_ready``) and stopped after the last call has ended, so open
streams deliver their final transcripts first.

A reload (SIGHUP) that leaves the ``transcribe:`` section as it was keeps the running
engine.  One that changes it starts a new engine for new calls; the old one keeps serving
the calls that were live at the reload and is stopped once they have all ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from voicews.engines.asr import TranscriberService

if TYPE_CHECKING:
    from voicews.config.transcribe import ConfiguredTranscriber
    from voicews.runtime.calls import CallRecord, CallRegistry

log = Logger(namespace="voicews.runtime.transcription")

RETIRE_CHECK_SECONDS = 1.0
"""How often a replaced engine looks whether the calls that may use it have ended."""


class Transcription(MultiService):
    """Holds the engine new calls get (``current``) and the replaced ones still in use."""

    def __init__(self, configured: ConfiguredTranscriber | None, calls: CallRegistry,
                 clock: Any) -> None:
        super().__init__()
        self.setName("transcription")
        self.calls = calls
        self.clock = clock
        self.configured = configured
        self.current: TranscriberService | None = None
        self._retiring: dict[TranscriberService, list[CallRecord]] = {}
        self._check: task.LoopingCall | None = None
        self._made = 0
        if configured is not None:
            self.current = self._add(configured)

    def _add(self, configured: ConfiguredTranscriber) -> TranscriberService:
        """A service for `configured`'s engine, started now if the daemon runs."""
        service = TranscriberService(configured.engine)
        self._made += 1
        if self._made > 1:  # one name per child: a replaced engine may still be stopping
            service.setName(f"{service.name}-{self._made}")
        service.setServiceParent(self)
        return service

    def use(self, configured: ConfiguredTranscriber | None) -> None:
        """A reloaded config's recognizer: kept if configured alike, else replaced."""
        if configured is not None and configured.same_as(self.configured):
            return
        old, self.configured = self.current, configured
        self.current = None
        if configured is not None:
            self.current = self._add(configured)
            log.info("speech recognizer {engine} configured anew: new calls use a new one",
                     engine=configured.name)
        if old is not None:
            self._retiring[old] = list(self.calls)
            if self._check is None:
                self._check = task.LoopingCall(self._retire_unused)
                self._check.clock = self.clock
                self._check.start(RETIRE_CHECK_SECONDS, now=True)

    def _retire_unused(self) -> None:
        """Stop each replaced engine none of whose calls is live any more."""
        live = {id(call) for call in self.calls}
        for service, users in list(self._retiring.items()):
            if not any(id(call) in live for call in users):
                del self._retiring[service]
                log.info("stopping the replaced speech recognizer {engine}",
                         engine=service.transcriber.name)
                done = service.disownServiceParent()
                if isinstance(done, Deferred):
                    done.addErrback(lambda f: log.failure("stopping a replaced speech "
                                                          "recognizer failed", f))
        if not self._retiring and self._check is not None:
            self._check.stop()
            self._check = None

    def stopService(self) -> Deferred[Any]:  # noqa: N802
        if self._check is not None:
            self._check.stop()
            self._check = None
        self._retiring.clear()
        return super().stopService()
