"""eSpeak NG text to speech (voicews.engines.espeak): real espeak-ng processes, real reactor.

Written as twisted.trial TestCases, which pytest runs as it runs unittest classes: each test
returns a Deferred and trial spins the global reactor until it fires, with SIGCHLD handled
(child processes are reaped), and fails the test if a timer or a child process is left
behind — which is how these tests prove that timeouts kill their child and clean up.
No plugin is needed, and no thread or sleep.

A script standing in for espeak-ng plays a hanging, failing or endless child.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from voicews.audio.samples import RATES, frame_samples
from voicews.engines.espeak import MISSING, Espeak, EspeakParams
from voicews.engines.tts import SpeechError, TextToSpeech
from voicews.engines.vad import VoiceActivity

from audio_checks import level_db
from inprocess import give_back_signals  # noqa: F401 - an autouse fixture

SENTENCE = "Hello, this is a test of the speech engine. Thank you for calling."
WORDS_PER_MINUTE = 175  # eSpeak's default speed
HAVE_ESPEAK = shutil.which("espeak-ng") is not None


def expected_seconds(text: str, wpm: int = WORDS_PER_MINUTE) -> float:
    return len(text.split()) * 60 / wpm


def speech_spans(samples: np.ndarray, rate: int) -> list[tuple[str, float]]:
    vad = VoiceActivity(rate)
    n = frame_samples(rate)
    got = []
    for i in range(len(samples) // n):
        got += vad.feed(samples[i * n:(i + 1) * n])
    return [(t.kind, t.time) for t in got + vad.finish()]


class EspeakCase(unittest.TestCase):
    if not HAVE_ESPEAK:
        skip = "espeak-ng is not installed (Debian package espeak-ng; .ci/run installs it)"

    def mktemp(self) -> str:
        """A fresh path in a temporary folder (trial's own would make one in the cwd)."""
        if not hasattr(self, "_tmp"):
            self._tmp = Path(tempfile.mkdtemp(prefix="voicews-tts-"))
            self.addCleanup(shutil.rmtree, self._tmp, True)
        self._made = getattr(self, "_made", 0) + 1
        return str(self._tmp / f"t{self._made}")

    def stand_in(self, script: str) -> str:
        """An executable shell script to run in espeak-ng's place."""
        path = Path(self.mktemp())
        path.write_text("#!/bin/sh\n" + script + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    @defer.inlineCallbacks
    def wait_for(self, path: Path, timeout: float = 5.0):
        """Turn the reactor until a stand-in has written `path` (it runs in another process)."""
        deadline = reactor.seconds() + timeout
        while not path.exists():
            self.assertLess(reactor.seconds(), deadline, f"{path} never appeared")
            yield task.deferLater(reactor, 0.01, lambda: None)

    def failure_of(self, d: defer.Deferred, kind: type[Exception]) -> defer.Deferred:
        """Fires with the exception when `d` fails with `kind`; fails the test otherwise."""
        return self.assertFailure(d, kind)


class SpeechTests(EspeakCase):
    @defer.inlineCallbacks
    def test_audible_speech_of_plausible_length_at_every_rate(self):
        engine = Espeak()
        self.assertIsInstance(engine, TextToSpeech)
        engine.check()
        lengths = []
        for rate in RATES:
            samples = yield engine.synthesize(SENTENCE, rate)
            self.assertEqual(samples.dtype, np.int16)
            self.assertEqual(samples.ndim, 1)
            self.assertFalse(samples.flags.writeable)
            seconds = len(samples) / rate
            lengths.append(seconds)
            # Length: 12 words at eSpeak's 175 words a minute is 4.1 s; allow 0.6-1.5x.
            expected = expected_seconds(SENTENCE)
            self.assertTrue(0.6 * expected <= seconds <= 1.5 * expected, (rate, seconds))
            # Audible: about -21 dBFS overall, most 20 ms frames above -50 dBFS (silence has
            # none), and the VAD finds one utterance starting in the first half second.
            self.assertGreater(level_db(samples), -30)
            n = frame_samples(rate)
            frames = samples[: len(samples) // n * n].reshape(-1, n)
            loud = np.mean([level_db(f) > -50 for f in frames])
            self.assertGreater(loud, 0.6, rate)
            spans = speech_spans(samples, rate)
            self.assertEqual([k for k, _ in spans], ["speech_started", "speech_stopped"], spans)
            self.assertLess(spans[0][1], 0.5)
            self.assertGreater(spans[1][1] - spans[0][1], 0.6 * expected)
        # One text, one length, whatever the rate (resampled, not re-spoken differently).
        self.assertLess(max(lengths) - min(lengths), 0.002)

    @defer.inlineCallbacks
    def test_options_change_the_speech(self):
        engine = Espeak()
        normal = yield engine.synthesize(SENTENCE, 8000)
        fast = yield engine.synthesize(SENTENCE, 8000, speed=350)
        quiet = yield engine.synthesize(SENTENCE, 8000, amplitude=25)
        self.assertTrue(0.35 <= len(fast) / len(normal) <= 0.7, len(fast) / len(normal))
        self.assertLess(abs(level_db(quiet) - level_db(normal) + 12), 3)  # a quarter: -12 dB

    @defer.inlineCallbacks
    def test_text_starting_with_a_dash_is_spoken_not_parsed(self):
        engine = Espeak()
        # As options, --help would print text (no WAV: SpeechError) and -w would write a file.
        written = self.mktemp()
        for text in ("--help", f"-w {written} -v xx --version minus sign"):
            samples = yield engine.synthesize(text, 16000)
            self.assertGreater(len(samples) / 16000, 0.4, text)
            self.assertGreater(level_db(samples), -35, text)
            self.assertEqual([k for k, _ in speech_spans(samples, 16000)][:1],
                             ["speech_started"], text)
        self.assertFalse(os.path.exists(written))

    @defer.inlineCallbacks
    def test_control_characters_and_empty_text(self):
        engine = Espeak()
        empty = yield engine.synthesize(" \n\t\x00 ", 8000)
        self.assertEqual(len(empty), 0)
        self.assertEqual(engine.processes_started, 0)
        samples = yield engine.synthesize("one\x00two\x1bthree", 8000)
        self.assertGreater(len(samples) / 8000, 0.6)


class CacheAndLimitTests(EspeakCase):
    @defer.inlineCallbacks
    def test_a_repeated_text_is_the_same_buffer_without_a_new_process(self):
        engine = Espeak()
        first = yield engine.synthesize(SENTENCE, 16000)
        self.assertEqual(engine.processes_started, 1)
        again = yield engine.synthesize(SENTENCE, 16000)
        self.assertIs(again, first)
        # Extra white space is the same text; another rate, voice or option is not.
        spaced = yield engine.synthesize("  " + SENTENCE.replace(" ", "  "), 16000)
        self.assertIs(spaced, first)
        self.assertEqual(engine.processes_started, 1)
        yield engine.synthesize(SENTENCE, 8000)
        yield engine.synthesize(SENTENCE, 16000, speed=200)
        yield engine.synthesize(SENTENCE, 16000, voice="en-us+f3")
        self.assertEqual(engine.processes_started, 4)
        self.assertEqual((engine.cache.hits, len(engine.cache)), (2, 4))

    @defer.inlineCallbacks
    def test_the_cache_is_bounded_by_bytes(self):
        engine = Espeak(EspeakParams(cache_bytes=400_000))
        for i in range(12):
            yield engine.synthesize(f"prompt number {i}", 24000)  # ~60 kB each
            self.assertLessEqual(engine.cache.bytes, 400_000)
        self.assertLess(len(engine.cache), 12)
        newest = yield engine.synthesize("prompt number 11", 24000)
        self.assertEqual(engine.processes_started, 12)  # the newest is still held
        oldest = yield engine.synthesize("prompt number 0", 24000)
        self.assertEqual(engine.processes_started, 13)  # the oldest was dropped
        self.assertGreater(len(newest), 0)
        self.assertGreater(len(oldest), 0)

    @defer.inlineCallbacks
    def test_many_callers_share_a_few_processes(self):
        engine = Espeak(EspeakParams(max_processes=2))
        same = [engine.synthesize("Welcome to the service.", 8000) for _ in range(50)]
        different = [engine.synthesize(f"caller {i}", 8000) for i in range(20)]
        # One process for the 50 identical texts, 20 for the others: 2 run, 19 wait.
        self.assertEqual(engine.processes_started, 2)
        self.assertEqual(len(engine._limit.waiting), 19)
        results = yield defer.gatherResults(same + different)
        self.assertEqual(engine.processes_started, 21)
        self.assertTrue(all(r is results[0] for r in results[:50]))
        self.assertTrue(all(len(r) > 0.3 * 8000 for r in results))

    @defer.inlineCallbacks
    def test_a_full_queue_answers_busy_at_once(self):
        engine = Espeak(EspeakParams(binary=self.stand_in("exec sleep 30"), max_processes=1,
                                     max_waiting=2))
        waiting = [engine.synthesize(f"text {i}", 8000) for i in range(3)]
        busy = yield self.failure_of(engine.synthesize("one more", 8000), SpeechError)
        self.assertEqual(str(busy), "espeak-ng is busy: 2 texts waiting")
        for d in waiting:
            d.cancel()
        for d in waiting:
            yield self.failure_of(d, defer.CancelledError)
        yield engine.close()  # the running one was killed: wait for it to end
        self.assertEqual(engine.processes_started, 1)  # the queued ones never started


class FailureTests(EspeakCase):
    @defer.inlineCallbacks
    def test_a_hanging_process_is_killed_after_the_timeout(self):
        pidfile = Path(self.mktemp())
        hang = self.stand_in(f"echo $$ > {pidfile}.new; mv {pidfile}.new {pidfile}; "
                             "exec sleep 30")
        engine = Espeak(EspeakParams(binary=hang, timeout=0.5))
        started = reactor.seconds()
        exc = yield self.failure_of(engine.synthesize("hello", 8000), SpeechError)
        self.assertEqual(str(exc), "espeak-ng gave no result within 0.5 s: killed")
        self.assertLess(abs(reactor.seconds() - started - 0.5), 0.4)
        with self.assertRaises(ProcessLookupError):  # reaped: not even a zombie
            os.kill(int(pidfile.read_text()), 0)
        # The slot was given back: the engine still works with a real binary after it.
        engine._path = shutil.which("espeak-ng")
        samples = yield engine.synthesize("hello", 8000)
        self.assertGreater(len(samples), 0)

    @defer.inlineCallbacks
    def test_a_failing_process_fails_with_its_stderr(self):
        engine = Espeak(EspeakParams(binary=self.stand_in("echo 'no sound card' >&2; exit 3")))
        exc = yield self.failure_of(engine.synthesize("hello", 8000), SpeechError)
        self.assertIn("exit code 3", str(exc))
        self.assertIn("no sound card", str(exc))
        garbage = Espeak(EspeakParams(binary=self.stand_in("echo not a wav")))
        exc = yield self.failure_of(garbage.synthesize("hello", 8000), SpeechError)
        self.assertIn("espeak-ng wrote no usable WAV (10 bytes)", str(exc))

    @defer.inlineCallbacks
    def test_endless_output_is_cut_at_max_seconds(self):
        engine = Espeak(EspeakParams(binary=self.stand_in("exec cat /dev/zero"),
                                     max_seconds=1.0))
        exc = yield self.failure_of(engine.synthesize("hello", 8000), SpeechError)
        self.assertEqual(str(exc), "espeak-ng spoke for more than max_seconds (1 s): killed")

    @defer.inlineCallbacks
    def test_cancelling_a_running_synthesis_kills_it_and_frees_its_slot(self):
        pidfile = Path(self.mktemp())
        # Hangs on "hello"; speaks anything else with the real espeak-ng.
        first_hangs = self.stand_in(
            'read -r text; if [ "$text" != hello ]; then\n'
            '  printf %s "$text" | espeak-ng "$@"; exit; fi\n'
            f"echo $$ > {pidfile}.new; mv {pidfile}.new {pidfile}; exec sleep 30")
        engine = Espeak(EspeakParams(binary=first_hangs, max_processes=1))
        running = engine.synthesize("hello", 8000)
        queued = engine.synthesize("world", 8000)
        self.assertEqual(engine.processes_started, 1)
        yield self.wait_for(pidfile)
        running.cancel()
        yield self.failure_of(running, defer.CancelledError)
        samples = yield queued  # ran once the cancelled child had ended
        self.assertGreater(len(samples), 0)
        self.assertEqual(engine.processes_started, 2)
        with self.assertRaises(ProcessLookupError):
            os.kill(int(pidfile.read_text()), 0)

    @defer.inlineCallbacks
    def test_close_fails_waiting_callers_and_kills_children(self):
        engine = Espeak(EspeakParams(binary=self.stand_in("exec sleep 30"), max_processes=1))
        pending = [engine.synthesize(f"text {i}", 8000) for i in range(3)]
        yield engine.close()
        for d in pending:
            exc = yield self.failure_of(d, SpeechError)
            self.assertEqual(str(exc), "espeak-ng engine closed")
        exc = yield self.failure_of(engine.synthesize("after", 8000), SpeechError)
        self.assertEqual(str(exc), "espeak-ng engine closed")

    @defer.inlineCallbacks
    def test_bad_input_fails_the_deferred_with_a_reason(self):
        engine = Espeak(EspeakParams(max_chars=20))
        cases = [
            (("x" * 21, 8000), {}, "text is 21 characters, more than max_chars (20)"),
            ((b"bytes", 8000), {}, "text must be a string, got bytes"),
            (("hi", 44100), {}, "rate must be one of 8000, 16000, 24000, got 44100"),
            (("hi", 8000), {"volume": 3}, "unknown espeak-ng option 'volume' (known: amplitude"),
            (("hi", 8000), {"speed": 9000}, "speed must be a whole number from 80 to 450"),
            (("hi", 8000), {"voice": "-x"}, "not an espeak-ng voice name: '-x'"),
            (("hi", 8000), {"voice": "nosuch"}, "espeak-ng has no voice 'nosuch'"),
        ]
        for args, kwargs, reason in cases:
            exc = yield self.failure_of(engine.synthesize(*args, **kwargs), ValueError)
            self.assertTrue(str(exc).startswith(reason), (str(exc), reason))


class CheckTests(EspeakCase):
    def test_missing_binary_names_the_debian_package(self):
        self.patch(os, "environ", {**os.environ, "PATH": self.mktemp()})
        with self.assertRaises(ValueError) as caught:
            Espeak().check()
        self.assertEqual(str(caught.exception), MISSING)
        self.assertEqual(MISSING, "espeak-ng not found: install the Debian package espeak-ng")
        with self.assertRaises(ValueError) as caught:
            Espeak(EspeakParams(binary="/opt/none/espeak-ng")).check()
        self.assertIn("/opt/none/espeak-ng not found: install the Debian package espeak-ng",
                      str(caught.exception))

    def test_unknown_voice_or_variant_is_named(self):
        engine = Espeak()
        engine.check()
        engine.check("en-gb")
        engine.check("gmw/en-US+f3", speed=200)
        for voice, reason in (("xx-nowhere", "espeak-ng has no voice 'xx-nowhere'"),
                              ("en-us+nosuch", "espeak-ng has no voice variant 'nosuch'"),
                              ("--help", "not an espeak-ng voice name: '--help'")):
            with self.assertRaises(ValueError) as caught:
                engine.check(voice)
            self.assertTrue(str(caught.exception).startswith(reason), str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            Espeak(EspeakParams(voice="xx-nowhere")).check()
        self.assertIn("'xx-nowhere'", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            engine.check(pitch=100)
        self.assertEqual(str(caught.exception), "pitch must be a whole number from 0 to 99, "
                         "got 100")

    def test_bad_parameters_are_refused(self):
        for params, reason in ((EspeakParams(max_processes=0), "max_processes must be"),
                               (EspeakParams(timeout=0), "timeout must be seconds above 0"),
                               (EspeakParams(cache_bytes=-1), "cache_bytes must be")):
            with self.assertRaises(ValueError) as caught:
                Espeak(params)
            self.assertTrue(str(caught.exception).startswith(reason), str(caught.exception))
