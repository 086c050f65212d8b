"""``/console``: the web console, served by the daemon itself (docs/console.md).

The page (HTML, CSS and JavaScript modules in ``voicews/web/console/``, shipped in the
wheel, no build step) is public static files: they hold no data and no secret, the same
bytes as in the package.  Everything the page shows or does is a request that carries
the control token as ``Authorization: Bearer`` (``/calls``, ``/events``, the two
routes below): the person types the token into the page once, and it is kept in the
tab's ``sessionStorage``, never in a cookie (so no other site can make the browser use
it: no CSRF) and never in a URL (so no log or history holds it).  The page runs no
inline script and writes event data as text only, under a Content-Security-Policy that
allows nothing but this origin, so what a call's events carry cannot run as code.

- ``GET /console/``, ``GET /console/<file>``: the page (``/console`` redirects to
  ``/console/``: the page's URLs are relative to it);
- ``GET /console/api/setup``: what the page needs to know (pipelines, rates, prompts,
  actions, how the softphone passes socket authorization);
- ``POST /console/api/ticket``: a one-use ticket for the softphone's ``/socket``
  handshake when ``security.websocket_auth`` is not ``none`` (voicews.web.tickets).

Like the control API, the console is off (403, saying how to turn it on) without
``security.control_token``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from klein import Klein
from twisted.web.iweb import IRequest

from voicews import __version__
from voicews.web import auth, tickets
from voicews.web.actions import ACTIONS, Refusal, prompt_path
from voicews.web.levels import INTERVAL
from voicews.web.origin import valid_host

if TYPE_CHECKING:
    from voicews.runtime.state import Runtime

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = ("default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
"""Scripts, styles, fetches, sockets, worklets and images from this origin only; no inline
code, no plugins, not inside anyone's frame."""
RATES = (8000, 16000, 24000)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au"}
MAX_PROMPTS = 500
OFF = ("the console is off: set security.control_token in config.yaml (the shipped config "
       "reads it from VOICEWS_CONTROL_TOKEN) to turn it on")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files() -> dict[str, StaticFile]:
    """Every file of the page, read once from the installed package."""
    found: dict[str, StaticFile] = {}
    for entry in (resources.files("voicews.web") / "console").iterdir():
        suffix = Path(entry.name).suffix
        if entry.is_file() and suffix in TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            found[entry.name] = StaticFile(body, TYPES[suffix], etag)
    return found


def list_prompts(folder: Path | None) -> list[str]:
    """The audio files ``/play`` accepts, as paths relative to the prompts folder (in a
    worker thread: it walks the disk)."""
    if folder is None:
        return []
    names = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        name = path.relative_to(folder).as_posix()
        try:
            prompt_path(folder, name)  # the same rule as /play: inside once resolved
        except Refusal:
            continue
        names.append(name)
        if len(names) >= MAX_PROMPTS:
            break
    return names


def _csp(request: IRequest) -> str:
    """CSP, with this host's ws:/wss: named as well: CSP 3 counts them as 'self', and
    naming them keeps the softphone working in a browser that does not."""
    host = auth.header(request, "host") or ""
    if not valid_host(host):  # (limits.py answers 400 to such a request before routing)
        return CSP
    return CSP.replace("default-src 'self';",
                       f"default-src 'self'; connect-src 'self' ws://{host} wss://{host};")


def _headers(request: IRequest, content_type: str, cache: str) -> None:
    request.setHeader("content-type", content_type)
    request.setHeader("cache-control", cache)
    request.setHeader("content-security-policy", _csp(request))
    request.setHeader("x-content-type-options", "nosniff")
    request.setHeader("referrer-policy", "no-referrer")
    request.setHeader("x-frame-options", "DENY")


class Console:
    """The routes under ``/console``."""

    app = Klein()

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.files = load_files()

    @app.handle_errors(auth.Refused)
    def refused(self, request: IRequest, failure: Any) -> bytes:
        return auth.refuse(request, failure.value)

    def _on(self) -> str:
        token = self.runtime.settings.raw.security.control_token
        if not token:
            raise auth.Refused(403, OFF, "console_off")
        return token

    def _allow(self, request: IRequest) -> str:
        token = self._on()
        auth.check_bearer(request, token, "console")
        return token

    # -- the page ---------------------------------------------------------------------

    @app.route("/", methods=["GET"], strict_slashes=False)
    def index(self, request: IRequest) -> bytes:
        self._on()
        return self._serve(request, "index.html")

    @app.route("/<string:name>", methods=["GET"])
    def asset(self, request: IRequest, name: str) -> bytes:
        self._on()
        return self._serve(request, name)

    def _serve(self, request: IRequest, name: str) -> bytes:
        found = self.files.get(name)
        if found is None:
            request.setResponseCode(404)
            _headers(request, "text/plain; charset=utf-8", "no-store")
            return b"no such file\n"
        # Revalidated each time (the names carry no version): an upgrade is seen at once,
        # an unchanged file costs a 304.
        _headers(request, found.content_type, "no-cache")
        request.setHeader("etag", found.etag)
        if auth.header(request, "if-none-match") == found.etag:
            request.setResponseCode(304)
            return b""
        return found.body

    # -- what the page asks -----------------------------------------------------------

    @app.route("/api/setup", methods=["GET"])
    async def setup(self, request: IRequest) -> bytes:
        self._allow(request)
        settings = self.runtime.settings
        raw = settings.raw
        prompts = await self.runtime.run_in_thread(list_prompts, settings.prompts)
        return _json(request, {
            "version": __version__,
            "worker": self.runtime.worker,
            "pipelines": sorted(settings.pipelines),
            "default_pipeline": raw.default_pipeline,
            "pipeline_header": raw.pipeline_header,
            "rates": list(RATES),
            "default_rate": settings.rate,
            "socket_auth": raw.security.websocket_auth,
            "ticket": raw.security.websocket_auth != "none",
            "prompts": prompts,
            "actions": list(ACTIONS),
            "levels_interval": INTERVAL,
        })

    @app.route("/api/ticket", methods=["POST"])
    def ticket(self, request: IRequest) -> bytes:
        token = self._allow(request)
        return _json(request, {"ticket": tickets.issue(token), "expires_in": tickets.TTL})


def _json(request: IRequest, body: dict[str, Any]) -> bytes:
    _headers(request, "application/json", "no-store")
    return json.dumps(body).encode("utf-8")
