"""The daemon's shared state: the config in force, the plugin manager, the calls.

Webhooks and sockets read ``runtime.settings`` at the moment a request or call
starts, so a reload (SIGHUP) affects new calls only: a live call keeps the
PipelineSpec it started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pluggy
from twisted.internet.interfaces import IReactorTime

from voicews.config.settings import Settings
from voicews.runtime.calls import CallRegistry


@dataclass
class Runtime:
    settings: Settings
    pm: pluggy.PluginManager
    clock: IReactorTime
    calls: CallRegistry = field(default_factory=CallRegistry)
    draining: bool = False
