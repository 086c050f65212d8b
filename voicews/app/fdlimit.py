"""Open-file limits: raise ours at start, and say when ``limits.max_calls`` cannot fit.

Every call holds one descriptor (its socket), a recording one more, and webhooks and
/health take one per connection.  A process that runs out (EMFILE) cannot accept, so
the soft ``RLIMIT_NOFILE`` (often 1024) is raised to the hard one at start, and one
warning says when ``max_calls`` still needs more than the limit allows.
"""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING

from twisted.logger import Logger

if TYPE_CHECKING:
    from voicews.config.settings import Settings

log = Logger(namespace="voicews.app.fdlimit")

PROCESS_FILES = 32
"""Descriptors the process holds whatever the calls: standard streams, the log, the
reactor's epoll and wakers, the listening socket, Twisted's EMFILE reserve, plugins' files."""

HTTP_FILES = 64
"""Room for webhooks, /health and /metrics connections at once, on top of the calls."""

CEILING = 1 << 20
"""Where the soft limit goes when the hard one is unlimited (Linux's default nr_open)."""


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def files_per_call(settings: Settings) -> int:
    """1 for the call's socket, 2 when any pipeline records (its WAV file)."""
    records = any(
        step.name == "record" for spec in settings.pipelines.values() for step in spec.steps
    )
    return 2 if records else 1


def files_needed(settings: Settings) -> int:
    return PROCESS_FILES + HTTP_FILES + settings.raw.limits.max_calls * files_per_call(settings)


def open_file_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return CEILING if soft == resource.RLIM_INFINITY else soft


def warn_if_short(settings: Settings) -> bool:
    """One warning when max_calls cannot fit in the open-file limit; whether it warned.

    Call it at start and after a reload (``limits.max_calls`` may have changed).
    """
    needed, limit = files_needed(settings), open_file_limit()
    if needed <= limit:
        return False
    per_call = files_per_call(settings)
    log.warn(
        "limits.max_calls {max_calls} needs about {needed} open files ({per_call} per call, "
        "{http} for HTTP, {process} for the process) but the limit is {limit}: raise "
        "LimitNOFILE (systemd) or ulimit -n, or lower limits.max_calls; past the limit new "
        "connections get 503",
        max_calls=settings.raw.limits.max_calls, needed=needed, per_call=per_call,
        http=HTTP_FILES, process=PROCESS_FILES, limit=limit,
    )
    return True


def prepare(settings: Settings) -> None:
    """At start: raise the limit (logged when it changed), then warn if still short."""
    before, after = raise_open_file_limit()
    if after != before:
        log.info("raised the open-file limit from {before} to {after}", before=before,
                 after=after)
    warn_if_short(settings)
