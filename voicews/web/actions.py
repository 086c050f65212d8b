"""What the control API does to a live call held by this worker.

One piece of code for every way an action arrives: an HTTP request on this worker, or
one routed here through Redis by another worker (voicews.cluster calls :meth:`handle`).
Each action goes through the call's own session (``record.pipeline.session``, the head
of the mix bus), as an application would: ``play`` mixes a prompt into what the caller
hears, ``notify``/``clear`` are the Vonage commands, ``hangup`` closes the socket 1000
with outcome ``hangup_api``, ``pipeline`` switches the call's steps between two frames,
``say`` speaks a text with the daemon's text-to-speech engine (``session.say``) and, unless
asked not to wait, answers with how it ended once Vonage has played it.

Every answer is ``(http_status, json_dict)``; nothing here raises for bad input.
Prompts: only files inside ``control.prompts`` (resolved at config load).  A request's
path must be relative, without ``..``, and must still lie inside the folder once
symlinks are resolved; it is decoded off the reactor (``voicews.audio.files.load`` in
the daemon's worker threads: its cache is shared with file-inject, so a prompt decodes
once per file version, and a long decode never stalls other calls' frames).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from voicews.audio import files
from voicews.engines.tts import SpeechError
from voicews.pipeline.pipeline import SwitchFailed, SwitchRefused

if TYPE_CHECKING:
    from voicews.runtime.calls import CallRecord
    from voicews.runtime.state import Runtime

log = Logger(namespace="voicews.web.control")

Reply = tuple[int, dict[str, Any]]

# action -> {key: (type, required)}: bodies are checked before anything is routed or done.
BODIES: dict[str, dict[str, tuple[type, bool]]] = {
    "info": {},
    "play": {"path": (str, True), "replace": (bool, False)},
    "clear": {},
    "notify": {"payload": (dict, True)},
    "hangup": {"reason": (str, False)},
    "pipeline": {"name": (str, True)},
    "say": {"text": (str, True), "voice": (str, False), "wait": (bool, False)},
}
ACTIONS = tuple(action for action in BODIES if action != "info")
"""What ``POST /calls/{uuid}/{action}`` may ask."""
MAX_UUID = 128
MAX_REASON = 100  # a close frame's reason is at most 123 bytes


class Refusal(Exception):
    """An action that cannot be done: the HTTP status and the reason the client gets."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_body(action: str, body: Any) -> dict[str, Any]:
    """`body` for `action`, or Refusal(404 unknown action / 400 with what is wrong)."""
    if action not in BODIES:
        raise Refusal(404, f"unknown action {action[:40]!r} (actions: {', '.join(ACTIONS)})")
    if not isinstance(body, dict):
        raise Refusal(400, "the body must be a JSON object")
    fields = BODIES[action]
    for key in body:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise Refusal(400, f"unknown key {str(key)[:40]!r} for {action} (keys: {known})")
    for key, (kind, required) in fields.items():
        if key not in body:
            if required:
                raise Refusal(400, f"{action} needs {key!r}")
            continue
        value = body[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            wanted = {str: "a string", bool: "true or false", dict: "a JSON object"}[kind]
            raise Refusal(400, f"{key!r} must be {wanted}")
        if isinstance(value, str) and not value.strip():
            raise Refusal(400, f"{key!r} must not be empty")
    if len(body.get("reason", "")) > MAX_REASON:
        raise Refusal(400, f"'reason' is longer than {MAX_REASON} characters")
    return body


_UUID = re.compile(rf"[A-Za-z0-9._:@+-]{{1,{MAX_UUID}}}")


def check_uuid(uuid: str) -> None:
    """Refusal(400) unless `uuid` looks like a call uuid (so logs and Redis keys stay sane)."""
    if not _UUID.fullmatch(uuid):
        raise Refusal(400, f"a call uuid is 1 to {MAX_UUID} of A-Z a-z 0-9 . _ : @ + -")


def prompt_path(folder: Path | None, given: str) -> Path:
    """The file `given` names inside `folder`, or Refusal(400) saying why not.

    Relative, no ``..``, and inside the folder once every symlink is resolved: no path
    from a request reaches the file system outside it.  (Runs in a worker thread: it
    touches the disk.)
    """
    if folder is None:
        raise Refusal(400, "play is off: set control.prompts (a folder of audio files) in "
                           "config.yaml")
    if "\x00" in given or "\\" in given:
        raise Refusal(400, "the path holds a character paths here may not use")
    relative = PurePosixPath(given)
    if relative.is_absolute() or given.startswith("~"):
        raise Refusal(400, "the path must be relative to the prompts folder")
    if ".." in relative.parts:
        raise Refusal(400, "the path must not contain '..'")
    try:
        path = (folder / relative).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise Refusal(400, f"the path cannot be resolved: {exc.__class__.__name__}") from None
    if not path.is_relative_to(folder):
        raise Refusal(400, "the path leads outside the prompts folder")
    if not path.is_file():
        raise Refusal(400, f"no prompt file {given[:100]!r} in the prompts folder")
    return path


def _load_prompt(folder: Path | None, given: str) -> files.Prompt:
    path = prompt_path(folder, given)
    try:
        return files.load(path)
    except (ValueError, OSError) as exc:
        raise Refusal(400, f"cannot play {given[:100]!r}: {str(exc).replace(str(folder), '')}"
                      ) from None


def _can_say(tts: Any, voice: str | None) -> None:
    """Refusal(503) when the call's engine cannot speak at all (espeak-ng not installed),
    Refusal(400) when it cannot in `voice`.  (Runs in a worker thread.)"""
    if tts is None:
        raise Refusal(503, "say is off: no text-to-speech engine is configured")
    try:
        tts.check()
    except ValueError as exc:
        raise Refusal(503, f"text to speech is unavailable: {exc}") from None
    if voice is not None:
        try:
            tts.check(voice)
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None


def _unsaid(failure: Any, uuid: str) -> None:
    """A say not waited for failed: nobody is left to answer, so it is logged."""
    log.warn("control say uuid={uuid} failed: {error}", uuid=uuid,
             error=failure.getErrorMessage())


def _actionable(record: CallRecord) -> bool:
    """Its first message chose a pipeline, and it is not ending."""
    return record.pipeline is not None and not record.ending and not record.pipeline.closed


class CallActions:
    """This worker's live calls: their descriptions, and the actions on them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.changed: Callable[[], None] = lambda: None
        """Called when a call's description changed (its pipeline): the cluster relists."""

    def find(self, uuid: str) -> CallRecord | None:
        """The live call `uuid` on this worker (one that is not ending), or None."""
        record = self.runtime.calls.find(uuid)
        return record if record is not None and _actionable(record) else None

    def describe(self, record: CallRecord) -> dict[str, Any]:
        assert record.pipeline is not None
        pipeline = record.pipeline
        info = pipeline.info
        return {
            "uuid": info.uuid, "conversation_uuid": info.conversation_uuid,
            "pipeline": info.pipeline, "rate": info.rate, "started": info.started.isoformat(),
            "frames_in": pipeline.frames_in, "frames_out": pipeline.frames_out,
            "worker": self.runtime.worker,
        }

    def local_calls(self) -> list[dict[str, Any]]:
        """Every live call here that has a uuid (the ones an action can name)."""
        return [self.describe(record) for record in self.runtime.calls
                if record.uuid is not None and _actionable(record)]

    def handle(self, uuid: str, action: str, body: dict[str, Any]) -> defer.Deferred[Reply]:
        """Do `action` on local call `uuid`; fires with (status, body), never fails."""
        d: defer.Deferred[Reply] = defer.maybeDeferred(self._act, uuid, action, body)

        def refused(failure: Any) -> Reply:
            failure.trap(Refusal)
            return failure.value.status, {"error": failure.value.reason, "uuid": uuid}

        return d.addErrback(refused)

    def _act(self, uuid: str, action: str, body: Any) -> Any:
        """(status, body), or a Deferred of it; a Refusal for what cannot be done."""
        check_uuid(uuid)
        body = check_body(action, body)
        record = self._live(uuid)
        if action == "info":
            return 200, self.describe(record)
        if action == "play":
            return self._play(uuid, body)
        if action == "say":
            return self._say(uuid, body)
        assert record.pipeline is not None
        session = record.pipeline.session
        done = {"uuid": uuid, "action": action, "worker": self.runtime.worker}
        if action in ("clear", "notify"):
            if action == "clear":
                session.clear()
            else:
                session.notify(body["payload"])
        elif action == "hangup":
            record.end(1000, body.get("reason") or "hung up through the control API",
                       "hangup_api")
            done["outcome"] = "hangup_api"
        elif action == "pipeline":
            return self._switch(record, body["name"], done)
        return 200, done

    def _live(self, uuid: str) -> CallRecord:
        record = self.find(uuid)
        if record is None:
            raise Refusal(404, "no such call")
        return record

    @defer.inlineCallbacks
    def _play(self, uuid: str, body: dict[str, Any]):
        prompt = yield self.runtime.run_in_thread(
            _load_prompt, self.runtime.settings.prompts, body["path"])
        record = self._live(uuid)  # the call may have ended while the file was decoded
        assert record.pipeline is not None
        samples = prompt.samples(record.pipeline.info.rate)
        record.pipeline.session.play(samples, replace=body.get("replace", False))
        return 200, {"uuid": uuid, "action": "play", "path": body["path"],
                     "seconds": round(len(samples) / record.pipeline.info.rate, 3),
                     "worker": self.runtime.worker}

    @defer.inlineCallbacks
    def _say(self, uuid: str, body: dict[str, Any]):
        record = self._live(uuid)
        assert record.pipeline is not None
        voice = body.get("voice")
        # The engine's check may run it (espeak-ng: once per voice): off the reactor.
        yield self.runtime.run_in_thread(_can_say, record.pipeline.services.tts, voice)
        record = self._live(uuid)  # the call may have ended meanwhile
        assert record.pipeline is not None
        said = record.pipeline.session.say(body["text"], voice=voice)
        done = {"uuid": uuid, "action": "say", "worker": self.runtime.worker}
        if not body.get("wait", True):
            said.addErrback(_unsaid, uuid)
            return 200, {**done, "queued": True}
        try:
            playback = yield said
        except ValueError as exc:  # the text is too long, an option is refused
            raise Refusal(400, f"cannot say it: {exc}") from None
        except SpeechError as exc:  # the engine failed, hung or is busy
            raise Refusal(503, f"text to speech failed: {exc}") from None
        return 200, {**done, "outcome": playback.outcome, "heard": round(playback.heard, 3),
                     "seconds": round(playback.seconds, 3)}

    @defer.inlineCallbacks
    def _switch(self, record: CallRecord, name: str, done: dict[str, Any]):
        spec = self.runtime.settings.pipelines.get(name)
        if spec is None:
            known = ", ".join(sorted(self.runtime.settings.pipelines))
            raise Refusal(400, f"no pipeline named {name[:60]!r} (pipelines: {known})")
        assert record.pipeline is not None
        previous = record.pipeline.info.pipeline
        try:
            closed = record.pipeline.switch(spec)
        except SwitchRefused as exc:
            raise Refusal(409, str(exc)) from None
        except SwitchFailed as exc:
            raise Refusal(500, str(exc)) from None
        self.changed()
        yield closed  # the old steps have closed (bounded by limits.close_timeout)
        return 200, {**done, "pipeline": name, "previous": previous}
