"""record through a real twistd: valid WAVs whose content matches, after a normal hang-up,
an abrupt disconnect and SIGTERM; safe file names; bad paths."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import soundfile as sf

from voicews.config.settings import ConfigError, load_settings

from audio_checks import tone
from conftest import base_config
from wire import Call


def wait_wav(path, frames, timeout=10.0):
    """The WAV at `path` once it holds `frames` frames (it is valid at every moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= 44:  # the header is written just after open
            info = sf.info(str(path))
            if info.frames >= frames:
                data, _ = sf.read(str(path), dtype="int16", always_2d=True)
                return info, data
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {frames} frames")


def rec_config(tmp_path, what="both", path=None):
    path = path or str(tmp_path / "rec" / "{pipeline}-{uuid}-{conversation_uuid}.wav")
    return base_config(pipelines={
        "echo": ["echo"],
        "rec": ["echo", {"gain": {"db": 6}}, {"record": {"path": path, "what": what}}],
    })


@pytest.mark.parametrize("what", ["both", "inbound", "outbound"])
def test_record_writes_what_the_caller_said_and_heard(start_daemon, tmp_path, what):
    d = start_daemon(rec_config(tmp_path, what))
    voice = tone(440, 1.0, 16000, amplitude=6000)
    headers = {"uuid": "u-1", "conversation_uuid": "CON-9"}
    with Call(d.ws, pipeline="rec", **headers) as call:
        heard = call.exchange(voice)
    info, data = wait_wav(tmp_path / "rec" / "rec-u-1-CON-9.wav", 16000)
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 16000)
    assert info.frames == 16000
    expected = {"inbound": [voice], "outbound": [heard], "both": [voice, heard]}[what]
    assert data.shape[1] == len(expected)
    for channel, samples in enumerate(expected):
        np.testing.assert_array_equal(data[:, channel], samples)
    d.wait_log("recording finished uuid=u-1")


def test_record_survives_an_abrupt_disconnect(start_daemon, tmp_path):
    d = start_daemon(rec_config(tmp_path))
    voice = tone(300, 0.6, 16000)
    call = Call(d.ws, pipeline="rec", uuid="gone")
    call.exchange(voice)  # every frame has been through the pipeline
    call.abort()
    info, data = wait_wav(tmp_path / "rec" / "rec-gone-none.wav", len(voice))
    assert info.frames == len(voice)
    np.testing.assert_array_equal(data[:, 0], voice)
    d.wait_log("recording finished uuid=gone")


def test_record_is_finished_before_the_daemon_exits_on_sigterm(start_daemon, tmp_path):
    d = start_daemon(rec_config(tmp_path))
    voice = tone(300, 0.7, 16000)  # 35 frames: the last 10 are handed over only at close
    call = Call(d.ws, pipeline="rec", uuid="term")
    call.exchange(voice)
    d.signal(signal.SIGTERM)
    assert call.wait_closed()[0] == 1001
    assert d.proc.wait(20) == 0
    assert "recording finished uuid=term" in d.log()
    info = sf.info(str(tmp_path / "rec" / "rec-term-none.wav"))
    assert info.frames == len(voice)
    data, _ = sf.read(str(tmp_path / "rec" / "rec-term-none.wav"), dtype="int16")
    np.testing.assert_array_equal(data[:, 0], voice)


def test_header_values_cannot_escape_the_recording_folder(start_daemon, tmp_path):
    d = start_daemon(rec_config(tmp_path))
    headers = {"uuid": "../../escape", "conversation_uuid": "/etc/passwd"}
    with Call(d.ws, pipeline="rec", **headers) as call:
        call.exchange(np.zeros(320, "<i2"))
    name = "rec-_.._escape-_etc_passwd"  # "/" became "_": one file name, in the folder
    wait_wav(tmp_path / "rec" / f"{name}.wav", 320)
    with Call(d.ws, pipeline="rec", **headers) as call:  # same name: not overwritten
        call.exchange(np.zeros(640, "<i2"))
    wait_wav(tmp_path / "rec" / f"{name}-2.wav", 640)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav")) == [
        f"rec/{name}-2.wav", f"rec/{name}.wav"]


def test_a_path_that_cannot_be_written_logs_and_the_call_goes_on(start_daemon, tmp_path):
    d = start_daemon(rec_config(tmp_path, path="/proc/voicews-no/{uuid}.wav"))
    voice = tone(300, 0.6, 16000)
    with Call(d.ws, pipeline="rec", uuid="nowhere") as call:
        heard = call.exchange(voice)
    np.testing.assert_array_equal(heard, np.rint(voice * 10 ** (6 / 20)).astype("<i2"))
    log = d.wait_log("cannot record uuid=nowhere to /proc/voicews-no/nowhere.wav")
    assert log.count("cannot record uuid=nowhere") == 1


@pytest.mark.parametrize(
    "path, problem",
    [("{uuid}-{caller}.wav", "unknown field {caller}"), ("{uuid!r}.wav", "takes no format"),
     ("{uuid.wav", "bad path template")],
)
def test_bad_path_templates_are_config_errors(tmp_path, path, problem):
    (tmp_path / "c.yaml").write_text(
        f"pipelines:\n  echo: [echo]\n  r: [echo, {{record: {{path: '{path}'}}}}]\n"
    )
    with pytest.raises(ConfigError, match=r"pipelines\.r\[1\]\.record: .*" + problem):
        load_settings(tmp_path / "c.yaml")


def test_a_stalled_disk_costs_recordings_audio_not_the_daemon_memory(tmp_path):
    """The writer thread blocked (a disk that stops answering cannot be made here, so its
    writes wait on an Event): the backlog stops at the bound, the recording says once that
    it is losing audio, and once the disk answers everything queued is written."""
    import threading

    from twisted.logger import globalLogPublisher

    from voicews.processors.record import Writer

    class StalledDisk(Writer):
        answering = threading.Event()

        def _write(self, file_id, data):
            self.answering.wait(30)
            super()._write(file_id, data)

    warnings: list[dict] = []

    def observe(event):
        if event.get("log_namespace") == "voicews.processors.record":
            warnings.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        writer = StalledDisk(max_backlog=64_000)
        file_id = writer.open(tmp_path / "r.wav", 1, 8000, "stalled-1")
        half_second = np.full(4000, 1000, dtype="<i2").tobytes()  # 8 KB
        for _ in range(20):  # 160 KB offered, 64 KB may wait
            writer.write(file_id, half_second)
        assert writer.backlog() <= 64_000
        assert writer.dropped_bytes == 20 * len(half_second) - writer.backlog()
        losing = [e for e in warnings if "losing audio" in e["log_format"]]
        assert [e["uuid"] for e in losing] == ["stalled-1"]
        writer.answering.set()
        writer.close(file_id)
        info, _ = wait_wav(tmp_path / "r.wav", 64_000 // 2)
        deadline = time.monotonic() + 10
        while writer.backlog() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.backlog() == 0
        assert sf.info(str(tmp_path / "r.wav")).frames == 8 * 4000  # what was kept: 4 s
    finally:
        globalLogPublisher.removeObserver(observe)
