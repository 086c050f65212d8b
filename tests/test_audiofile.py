"""Decoding and resampling prompts: formats libsndfile reads, mixdown, the shared cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicews.audio import files as audiofile
from voicews.config.settings import ConfigError, load_settings

from audio_checks import peak_frequency, write_tone


@pytest.mark.parametrize(
    "name, rate, channels, fmt",
    [
        ("u8.wav", 8000, 1, {"subtype": "PCM_U8"}),
        ("s16.wav", 16000, 1, {"subtype": "PCM_16"}),
        ("s24.wav", 44100, 2, {"subtype": "PCM_24"}),
        ("float.wav", 48000, 1, {"subtype": "FLOAT"}),
        ("tone.flac", 22050, 2, {}),
        ("tone.ogg", 44100, 1, {}),
        ("tone.mp3", 44100, 2, {}),
    ],
)
def test_decodes_and_resamples_every_format(tmp_path, name, rate, channels, fmt):
    prompt = audiofile.load(Path(write_tone(tmp_path / name, rate, channels=channels, **fmt)))
    assert prompt.source_rate == rate and prompt.source_channels == channels
    for call_rate in (8000, 16000, 24000):
        samples = prompt.samples(call_rate)
        assert samples.dtype == np.dtype("<i2") and not samples.flags.writeable
        # MP3 adds encoder delay/padding; everything else keeps the length exactly.
        slack = call_rate // 10 if name.endswith("mp3") else 1
        assert abs(len(samples) - call_rate // 2) <= slack
        middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
        assert abs(peak_frequency(middle, call_rate) - 440) <= 4
        rms = np.sqrt(np.mean(middle.astype(float) ** 2))
        assert rms == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.05)


def test_stereo_is_mixed_down_not_left_only(tmp_path):
    t = np.arange(16000) / 16000
    left = 0.4 * np.sin(2 * np.pi * 300 * t)
    right = 0.4 * np.sin(2 * np.pi * 1200 * t)
    sf.write(str(tmp_path / "lr.wav"), np.column_stack([left, right]), 16000)
    samples = audiofile.load(tmp_path / "lr.wav").samples(16000)
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    freqs = np.fft.rfftfreq(len(samples), 1 / 16000)
    at = {f: spectrum[np.argmin(np.abs(freqs - f))] for f in (300, 1200)}
    assert at[300] == pytest.approx(at[1200], rel=0.05)


def test_one_buffer_per_file_and_rate_shared_by_every_load(tmp_path):
    path = Path(write_tone(tmp_path / "p.wav", 16000))
    first, second = audiofile.load(path), audiofile.load(tmp_path / "." / "p.wav")
    assert first is second
    assert first.samples(8000) is second.samples(8000)
    # A changed file is decoded again, and its old buffers are let go.
    before = audiofile.cache_size()
    write_tone(path, 16000, freq=880)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    third = audiofile.load(path)
    assert third is not first
    assert abs(peak_frequency(third.samples(16000), 16000) - 880) <= 4
    assert audiofile.cache_size() == before


def test_two_pipelines_with_one_file_share_the_buffer(tmp_path):
    write_tone(tmp_path / "p.wav", 16000)
    (tmp_path / "c.yaml").write_text(
        "pipelines:\n"
        "  echo: [echo]\n"
        "  a: [{file-inject: {path: p.wav}}]\n"
        "  b: [echo, {file-inject: {path: p.wav, mode: mix}}]\n"
    )
    settings = load_settings(tmp_path / "c.yaml")
    a = settings.pipelines["a"].steps[0].params.prompt
    b = settings.pipelines["b"].steps[1].params.prompt
    assert a is b
    again = load_settings(tmp_path / "c.yaml").pipelines["a"].steps[0].params.prompt
    assert again is a


@pytest.mark.parametrize(
    "content, problem",
    [(None, "no such file"), (b"this is not audio at all" * 10, "cannot decode")],
)
def test_missing_or_undecodable_file_is_a_config_error(tmp_path, content, problem):
    if content is not None:
        (tmp_path / "p.wav").write_bytes(content)
    (tmp_path / "c.yaml").write_text(
        "pipelines:\n  echo: [echo]\n  p: [echo, {file-inject: {path: p.wav}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "c.yaml")
    message = str(info.value)
    assert "pipelines.p[1].file-inject" in message and problem in message and "p.wav" in message
    assert "\n" not in message


def test_a_thousand_calls_on_one_prompt_share_one_decoded_buffer(tmp_path):
    import tracemalloc

    from voicews.testing import LocalCall, start

    write_tone(tmp_path / "p.wav", 16000, seconds=10.0)
    (tmp_path / "c.yaml").write_text(
        "pipelines:\n  echo: [echo]\n  p: [echo, {file-inject: {path: p.wav, mode: mix}}]\n"
    )
    spec = load_settings(tmp_path / "c.yaml").pipelines["p"]
    buffer = spec.steps[1].params.prompt.samples(16000)
    assert buffer.nbytes == 10 * 16000 * 2

    def call() -> LocalCall:
        return start(spec, rate=16000)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    calls = [call() for _ in range(1000)]
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    for one in calls:
        assert one.pipeline.processors[1].samples is buffer
    # A decoded copy per call would be 320 MB; the calls together hold a few MB.
    assert grown < 1000 * 10_000, f"{grown / 1000:.0f} bytes per call"
    for one in calls:
        one.pipeline.close("hangup")


def test_a_level_is_applied_once_and_shared(tmp_path):
    from voicews.audio.samples import db_to_factor, saturate

    write_tone(tmp_path / "p.wav", 16000, amplitude=0.9)
    (tmp_path / "c.yaml").write_text(
        "pipelines:\n"
        "  echo: [echo]\n"
        "  plain: [{file-inject: {path: p.wav}}]\n"
        "  soft: [{file-inject: {path: p.wav, level: -6}}]\n"
        "  soft2: [echo, {file-inject: {path: p.wav, mode: mix, level: -6}}]\n"
        "  loud: [{file-inject: {path: p.wav, level: 12}}]\n"
    )
    pipelines = load_settings(tmp_path / "c.yaml").pipelines

    def buffer(name, rate=8000):
        return pipelines[name].steps[-1].params.prompt.samples(rate)

    plain = buffer("plain")
    assert buffer("soft") is buffer("soft2")  # one scaled buffer per file and level
    assert buffer("soft").tolist() == saturate(plain * db_to_factor(-6)).tolist()
    loud = buffer("loud")
    assert loud.max() == 32767 and loud.min() == -32768  # +12 dB on a 0.9 tone saturates
    assert not buffer("soft").flags.writeable
