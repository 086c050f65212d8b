"""The builtin speech recognizer, PocketSphinx, registered like any plugin's engine.

config.yaml: ``transcribe: {engine: pocketsphinx, options: {workers: 2, ...}}``; ``options``
are :class:`voicews.engines.pocketsphinx_options.PocketSphinxOptions`.  Importing this
module loads neither PocketSphinx nor its model: the daemon's worker processes do, and only
when a pipeline transcribes.
"""

from __future__ import annotations

from voicews import hookimpl
from voicews.engines.pocketsphinx import PocketSphinx, PocketSphinxOptions


class PocketSphinxEngine(PocketSphinx):
    """PocketSphinx as ``register_transcribers`` sees it: a name, its Params, made from them."""

    Params = PocketSphinxOptions

    def __init__(self, params: PocketSphinxOptions | None = None) -> None:
        super().__init__(params)


@hookimpl
def register_transcribers(register):
    register(PocketSphinxEngine)
