"""voicews-call mistakes found in issue 12 (item 18)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from voicews.simulator.socket import echo_lag

from conftest import REPO

SPEECH = "/work/shared/data/speech/two_cities.wav"


@pytest.mark.parametrize("start_s", [0, 1, 3, 6, 20])
@pytest.mark.parametrize("delay", [0, 320, 800])
def test_echo_lag_of_a_call_no_longer_than_the_file(start_s, delay):
    """`--play hello.wav --seconds 1` reported "lag 14000" for a bit-exact echo: a lag whose
    overlap was a few samples correlated perfectly.  Now a lag needs half the audio to overlap."""
    speech, rate = sf.read(SPEECH, dtype="int16")
    sent = speech[start_s * rate : (start_s + 1) * rate]
    received = np.concatenate((np.zeros(delay, "int16"), sent))[: len(sent)]
    assert echo_lag(sent, received, rate) == delay


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voicews.simulator", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--header", "pipeline=louder"], "--header"),
        (["--content-type", "audio/l16;rate=8000"], "--content-type"),
    ],
)
def test_socket_only_options_with_an_answer_url_are_refused(args, option):
    """They were ignored silently: the answer URL's NCCO decides both."""
    result = run_cli("http://127.0.0.1:9/webhooks/answer", *args)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"voicews-call: {option} applies to a socket URL (ws:// or wss://) only; with an "
        "answer URL the NCCO sets the headers and the content type"
    ), result.stderr
