"""Every call event the app would get, with the wall-clock time it was published.

A test plugin (``plugins: [.../event_log.py]`` in config.yaml): it adds a sink to the
daemon's ``runtime.sinks`` (where HTTP callbacks and ``/events`` take events from) that
appends one JSON line per event to ``events.jsonl`` beside config.yaml, so a test on the
other side of the socket can tell when each event happened, not only that it did.
"""

from __future__ import annotations

import json
import time

from voicews import hookimpl


@hookimpl
def services(runtime):
    out = (runtime.settings.path.parent / "events.jsonl").open("a", buffering=1)

    def sink(info, event) -> None:
        out.write(json.dumps({"uuid": info.uuid, "pipeline": info.pipeline, "kind": event.kind,
                              "source": event.source, "time": event.time,
                              "data": dict(event.data), "wall": time.time()}) + "\n")

    runtime.sinks.append(sink)
