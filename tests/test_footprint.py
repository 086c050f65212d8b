"""What a daemon loads is what its config uses: an echo-only daemon carries no file codecs,
resamplers, HTTP client, Redis client, speech engines or JWT library in its memory.

Each case builds the daemon's service from a config the way ``twistd voicews`` does
(tap.makeService) in a fresh interpreter and lists the modules it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HEAVY = ("soundfile", "soxr", "treq", "txredisapi", "pocketsphinx", "webrtcvad", "jwt")

BUILD = """
import json, sys
from voicews.app.tap import Options, makeService
options = Options()
options.parseOptions(["-c", sys.argv[1], "--listen", "tcp:0:interface=127.0.0.1"])
makeService(options)
heavy = tuple(json.loads(sys.argv[2]))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules if m.startswith(heavy)})))
"""


def loaded(tmp_path: Path, config: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    done = subprocess.run([sys.executable, "-c", BUILD, str(path), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_echo_daemon_loads_nothing_heavy(tmp_path):
    assert loaded(tmp_path, "pipelines:\n  echo: [echo]\n") == []


def test_a_pipeline_that_plays_a_file_loads_the_decoder(tmp_path):
    """The same check sees a library a config does use (the file is decoded at load)."""
    import numpy as np

    from voicews.audio.files import write_wav

    write_wav(tmp_path / "tone.wav", np.zeros(1600, dtype=np.int16), 8000)
    config = "default_pipeline: hold\npipelines:\n  hold: [echo, {file-inject: {path: tone.wav}}]\n"
    found = loaded(tmp_path, config)
    assert "soundfile" in found
    assert [m for m in found if m != "soundfile" and m != "soxr"] == []
