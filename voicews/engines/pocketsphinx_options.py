"""The PocketSphinx engine's options, and the checks of grammars and keywords.

Apart from voicews.engines.pocketsphinx so config loading can validate an engine's settings
and a pipeline's phrases without the process pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicews.engines.asr import phrase_words
from voicews.engines.sphinxworker.wire import Settings

MAX_PHRASES = 500
_THRESHOLD = re.compile(r"^(?P<phrase>.*?)\s*/(?P<threshold>[^/]+)/\s*$")


@dataclass(frozen=True)
class PocketSphinxOptions:
    """The pool's settings (config.yaml's ``transcribe`` engine options)."""

    workers: int = 0
    """Worker processes; 0: one per core."""
    streams_per_worker: int = 6
    """Decoders a worker may hold at once: a core decodes about six callers talking without
    pause at 16 kHz (0.16 s of CPU a second of speech), more when they also listen."""
    spare_decoders: int = 1
    """Decoders each worker makes ahead, when idle, so a new call does not wait for one."""
    partial_interval: float = 0.3
    """Seconds of speech between partial transcripts (sent only when the text changed)."""
    max_backlog: float = 5.0
    """Seconds of a stream's audio that may wait for its worker before audio is dropped:
    a worker stalls for its second pass at the end of each utterance (0.5 s of CPU after a
    9 s sentence), for every stream that ends one at once."""
    vad_mode: int = 0
    """Aggressiveness of PocketSphinx's endpointer, 0 (loose) to 3 (strict)."""
    window: float = 0.3
    ratio: float = 0.9
    """The endpointer cuts after `ratio` of a `window` (seconds) of non-speech."""
    keyword_threshold: float = 1e-10
    """Detection threshold of a keyword without its own (``"billing /1e-20/"``): larger
    misses more, smaller makes up more.  Short words need larger ones."""
    stop_timeout: float = 5.0
    """Seconds a worker has to flush its streams and exit at stop before it is killed."""
    nice: int = 5
    """Workers' niceness: on busy cores the reactor (every call's audio) runs first."""

    def __post_init__(self) -> None:
        checks = [
            ("workers", 0 <= self.workers <= 64),
            ("streams_per_worker", 1 <= self.streams_per_worker <= 64),
            ("spare_decoders", 0 <= self.spare_decoders <= self.streams_per_worker),
            ("partial_interval", 0.05 <= self.partial_interval <= 10),
            ("max_backlog", 0.1 <= self.max_backlog <= 60),
            ("vad_mode", self.vad_mode in (0, 1, 2, 3)),
            ("window", 0.06 <= self.window <= 5),
            ("ratio", 0 < self.ratio < 1),
            ("keyword_threshold", 0 < self.keyword_threshold <= 1),
            ("stop_timeout", 0 < self.stop_timeout <= 120),
            ("nice", 0 <= self.nice <= 19),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"pocketsphinx: {name} out of range: {getattr(self, name)!r}")

    def settings(self) -> Settings:
        return Settings(
            max_streams=self.streams_per_worker, spare_decoders=self.spare_decoders,
            partial_interval=self.partial_interval, vad_mode=self.vad_mode,
            window=self.window, ratio=self.ratio, keyword_threshold=self.keyword_threshold,
            nice=self.nice)


def parse_phrases(grammar: list[str] | None,
                  keywords: list[str] | None) -> tuple[list[str] | None, list[list[Any]] | None]:
    """Grammar phrases and (keyword, threshold or None) pairs in the form the worker takes,
    else ValueError with a one-line reason."""
    if grammar and keywords:
        raise ValueError("give a grammar or keywords, not both")
    for what, given in (("grammar", grammar), ("keywords", keywords)):
        if given is not None and (not isinstance(given, list) or not 0 < len(given) <= MAX_PHRASES):
            raise ValueError(f"{what} must be a list of 1 to {MAX_PHRASES} phrases")
    phrases = [" ".join(phrase_words(p, "grammar phrases")) for p in grammar] if grammar else None
    spotted: list[list[Any]] | None = None
    if keywords:
        spotted = []
        for keyword in keywords:
            threshold = None
            match = _THRESHOLD.match(keyword) if isinstance(keyword, str) else None
            if match:
                try:
                    threshold = float(match["threshold"])
                except ValueError:
                    threshold = -1.0
                if not 0 < threshold <= 1:
                    raise ValueError(f"keyword {keyword!r}: threshold must be in (0, 1]")
                keyword = match["phrase"]
            spotted.append([" ".join(phrase_words(keyword, "keywords")), threshold])
    return phrases, spotted


def known_words(dictionary: Path, wanted: set[str]) -> set[str]:
    """Which of `wanted` the pronunciation dictionary has (one pass over its 135k lines)."""
    found = set()
    if wanted:
        with dictionary.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                word = line.split(" ", 1)[0].split("(", 1)[0]
                if word in wanted:
                    found.add(word)
    return found
