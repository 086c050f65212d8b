"""The builtin text-to-speech engine, eSpeak NG, registered like any plugin's engine.

config.yaml: ``tts: {engine: espeak-ng, voice: en-us, options: {max_processes: 2, ...}}``;
``options`` are :class:`voicews.engines.espeak.EspeakParams`.
"""

from __future__ import annotations

from voicews import hookimpl
from voicews.engines.espeak import Espeak, EspeakParams


class EspeakEngine(Espeak):
    """eSpeak NG as ``register_tts`` sees it: a name, its Params, made from them."""

    Params = EspeakParams

    def __init__(self, params: EspeakParams | None = None) -> None:
        super().__init__(params)


@hookimpl
def register_tts(register):
    register(EspeakEngine)
