"""An example text-to-speech engine plugin: speech from an HTTP service (a cloud TTS).

Copy it and change ``_request`` to your provider's API.  This one POSTs
``{"text": ..., "voice": ...}`` as JSON (with ``Authorization: Bearer <token>`` when a token
is set) and expects audio back in any format libsndfile reads (WAV, FLAC, OGG), at any rate:
it is resampled to the call's.

    plugins: [plugins/http_tts.py]
    tts:
      engine: http-tts
      voice: en-US-1
      options: {url: "https://tts.example.com/v1/speak", token: "${TTS_TOKEN}"}

What an engine must do (see voicews.engines.tts.TextToSpeech), and how this one does it:

- never block the reactor: the request is asynchronous (treq), decoding and resampling run
  in a thread;
- return int16 samples at the call's rate, or fail with ValueError (bad input) or
  SpeechError (the service failed or is too slow);
- cache repeated texts (SpeechCache), so a greeting said on every call is fetched once;
- ``check`` runs at config load; it only checks what it can offline, so a service that is
  down at start does not stop the daemon (its failures show at run time, in the logs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import treq
from twisted.internet import defer, threads

from voicews import hookimpl
from voicews.engines.tts import (
    SpeechCache,
    SpeechError,
    check_rate,
    clean_text,
    decode_audio,
    no_speech,
)


@dataclass(frozen=True)
class HttpTtsParams:
    """config.yaml's ``tts.options`` for this engine."""

    url: str
    token: str | None = None
    timeout: float = 10.0
    """Seconds for the whole request."""
    max_chars: int = 2000
    cache_bytes: int = 16 * 2**20


class HttpTts:
    """Speech from an HTTP service; one per daemon, shared by every call."""

    name = "http-tts"
    Params = HttpTtsParams

    def __init__(self, params: HttpTtsParams) -> None:
        if not params.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {params.url!r}")
        if not 0 < params.timeout <= 120:
            raise ValueError(f"timeout must be seconds above 0, at most 120, got {params.timeout}")
        self.params = params
        self.cache = SpeechCache(params.cache_bytes)
        self.requests = 0

    def check(self, voice: str | None = None, **options: object) -> None:
        if options:
            raise ValueError(f"http-tts takes no options, got {', '.join(sorted(options))}")

    def synthesize(self, text: str, rate: int, voice: str | None = None,
                   **options: object) -> defer.Deferred:
        try:
            text = clean_text(text, self.params.max_chars)
            check_rate(rate)
            self.check(voice, **options)
        except ValueError as exc:
            return defer.fail(exc)
        if not text:
            return defer.succeed(no_speech())
        key = (text, voice, rate)
        cached = self.cache.get(key)
        if cached is not None:
            return defer.succeed(cached)
        d = self._request(text, voice)
        d.addCallback(lambda audio: threads.deferToThread(decode, audio, rate))
        d.addCallback(self._keep, key)
        return d

    @defer.inlineCallbacks
    def _request(self, text: str, voice: str | None):
        self.requests += 1
        headers: dict[bytes | str, bytes | str] = (
            {"Authorization": f"Bearer {self.params.token}"} if self.params.token else {})
        try:
            response = yield treq.post(self.params.url, json={"text": text, "voice": voice},
                                       headers=headers, timeout=self.params.timeout)
            body = yield treq.content(response)
        except Exception as exc:  # connection refused, timeout, TLS...
            raise SpeechError(f"http-tts: {self.params.url}: {exc}") from None
        if response.code != 200:
            raise SpeechError(f"http-tts: {self.params.url} answered HTTP {response.code}: "
                              f"{body[:200].decode(errors='replace')}")
        return body

    def _keep(self, samples: np.ndarray, key: tuple) -> np.ndarray:
        samples.flags.writeable = False  # shared by every call that says this text
        self.cache.put(key, samples)
        return samples


def decode(audio: bytes, rate: int) -> np.ndarray:
    """Any audio file's bytes as int16 mono at `rate` (in a thread: ~1 ms a second)."""
    try:
        return decode_audio(audio, rate)
    except ValueError as exc:
        raise SpeechError(f"http-tts: the service sent no audio we can read: {exc}") from None


@hookimpl
def register_tts(register):
    register(HttpTts)
