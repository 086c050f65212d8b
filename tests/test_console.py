"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real twistd on loopback.

The browser's "microphone" is the test reading (``--use-file-for-fake-audio-capture``),
so the softphone sends real speech: the echo comes back and is measured in the page (its
test hook: the softphone's ``data-output-rms``), and the ``listen`` pipeline's transcript
of it shows in the timeline.  Calls from ``voicews-call`` appear in the table and leave
it, and the page's Hang up ends one with close 1000.  One browser and one page for the
module; every test checks that the page logged no error (a CSP violation is one).

``VOICEWS_CONSOLE_SCREENSHOT=docs/console.png`` saves the picture in the docs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voicews.web.actions import ACTIONS

from audio_checks import write_tone
from conftest import Daemon, base_config, wait_for

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)",
                allow_module_level=True)

TOKEN = "console-browser-token"
SPEECH = Path(__file__).parent / "data" / "speech"
REFERENCE = (SPEECH / "two_cities.txt").read_text().split()
TRIGRAMS = {tuple(REFERENCE[i:i + 3]) for i in range(len(REFERENCE) - 2)}
CALL = str(Path(sys.executable).with_name("voicews-call"))
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    # Chromium reads a WAV at any rate and resamples it; it loops at the end.
    f"--use-file-for-fake-audio-capture={SPEECH / 'two_cities.wav'}",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("console-browser")
    (folder / "prompts").mkdir()
    write_tone(folder / "prompts" / "beep.wav", 16000, seconds=0.3, amplitude=0.3)
    write_tone(folder / "tone.wav", 16000, seconds=1.0, freq=440.0, amplitude=0.1)
    return folder


@pytest.fixture(scope="module")
def daemon(folder):
    config = base_config(
        security={"control_token": TOKEN}, control={"prompts": "prompts"},
        pipelines={
            "echo": ["echo"], "louder": ["echo", {"gain": {"db": 6}}],
            "welcome": ["echo", {"file-inject": {"path": "prompts/beep.wav", "mode": "mix"}}],
            "listen": ["vad", "transcribe"],
        },
        transcribe={"options": {"workers": 1}},
    )
    daemon = Daemon(folder, config).start()
    yield daemon
    assert daemon.stop() == 0


@pytest.fixture(scope="module")
def page(daemon):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
        page.set_default_timeout(10_000)
        page.goto(f"{daemon.base}/console/")
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector("#stream-state[data-kind=ok]")
        yield page
        browser.close()


@pytest.fixture(autouse=True)
def clean_page(request):
    """Each test leaves the page without errors (CSP violations are logged as errors), and
    the softphone idle for the next one."""
    yield
    if "page" in request.fixturenames:
        page = request.getfixturevalue("page")
        if page.get_attribute("#phone", "data-state") == "busy":
            page.click("#phone-hangup")
            page.wait_for_selector("#phone[data-state=idle]")
        assert page.errors == []


def calls(daemon: Daemon) -> dict[str, dict]:
    status, _, body = daemon.request("/calls", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    return {call["uuid"]: call for call in json.loads(body)["calls"]}


def simulator(daemon: Daemon, folder: Path, uuid: str, seconds: float, *extra: str,
              play: Path | None = None):
    return subprocess.Popen(
        [CALL, daemon.ws, "--header", f"uuid={uuid}", "--header", "pipeline=echo",
         "--play", str(play or folder / "tone.wav"), "--seconds", str(seconds), "-q", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=daemon.env)


def row(page, uuid: str) -> str:
    return f'#calls tr[data-uuid="{uuid}"]'


def timeline(page) -> list[tuple[str, str]]:
    """(kind, text) of each entry of the selected call's timeline."""
    return [tuple(entry) for entry in page.eval_on_selector_all(
        "#timeline li", "items => items.map(li => [li.dataset.kind, li.children[2].textContent])")]


def level(page, selector: str) -> float | None:
    value = page.get_attribute(selector, "data-level")
    return float(value) if value else None


def test_a_voicews_call_is_listed_within_a_second_and_leaves_when_it_ends(page, daemon, folder):
    process = simulator(daemon, folder, "sim-listed", 3.0, "--dtmf", "7@1.0")
    wait_for(lambda: "sim-listed" in calls(daemon), what="the call in /calls")
    page.wait_for_selector(row(page, "sim-listed"), timeout=1000)  # within a second
    cells = page.eval_on_selector_all(f"{row(page, 'sim-listed')} td",
                                      "cells => cells.map(c => c.textContent)")
    assert cells[1:3] == ["echo", "16 kHz"] and cells[4] == calls(daemon)["sim-listed"]["worker"]
    # The meters read the tone (0.1 of full scale: -23 dBFS RMS) both ways, from /events.
    wait_for(lambda: level(page, f"{row(page, 'sim-listed')} [aria-label^=Input]") is not None,
         what="an input level")
    assert level(page, f"{row(page, 'sim-listed')} [aria-label^=Input]") == pytest.approx(
        -23.0, abs=1.0)
    assert level(page, f"{row(page, 'sim-listed')} [aria-label^=Output]") == pytest.approx(
        -23.0, abs=1.0)
    page.click(f"{row(page, 'sim-listed')} button")
    wait_for(lambda: ("dtmf", "DTMF 7 (260 ms)") in timeline(page), what="the DTMF in the timeline")
    assert process.wait(20) == 0
    page.wait_for_selector(row(page, "sim-listed"), state="detached", timeout=2000)
    assert timeline(page)[-1] == ("call_ended", "call ended: hangup")
    assert page.text_content("#call-uuid") == "sim-listed (ended)"
    assert page.is_disabled("#hangup")


def test_the_pages_actions_reach_a_call_and_hang_up_closes_it_1000(page, daemon, folder):
    process = simulator(daemon, folder, "sim-acted", 30.0)
    page.click(f"{row(page, 'sim-acted')} button")
    page.click("#play")
    page.wait_for_selector("#action-status:text('play: done (0.3 s)')")
    page.select_option("#switch-pipeline", "louder")
    page.click("#switch")
    page.wait_for_selector(f"{row(page, 'sim-acted')} td:nth-child(2):text-is('louder')")
    assert ("pipeline_switched", "pipeline echo → louder") in timeline(page)
    if "say" in ACTIONS:  # POST /calls/{uuid}/say, where this daemon has it
        page.fill("#say-text", "hello from the console")
        page.click("#say")
        page.wait_for_selector("#action-status:text('say: done')")
    else:
        assert page.is_disabled("#say") and page.is_disabled("#say-text")
    page.click("#hangup")
    output, _ = process.communicate(timeout=20)
    assert "close 1000 by server" in output, output
    assert calls(daemon).get("sim-acted") is None
    daemon.wait_log("call ended uuid=sim-acted pipeline=louder outcome=hangup_api")
    page.wait_for_selector(row(page, "sim-acted"), state="detached", timeout=2000)


def test_the_pages_resampler_keeps_the_voice_band_and_stops_aliases(page):
    """The softphone's sample-rate converter (resample.js), run in the page: a tone's gain
    in dB after conversion, for each (from, to, frequency)."""
    gains = page.evaluate("""async (cases) => {
        const {Resampler} = await import("./resample.js");
        return cases.map(([from, to, hz]) => {
            const resampler = new Resampler(from, to);
            const out = [];
            for (let block = 0; block < 100; block++) {
                const x = new Float32Array(128);
                for (let i = 0; i < 128; i++) {
                    x[i] = 0.5 * Math.sin(2 * Math.PI * hz * (block * 128 + i) / from);
                }
                out.push(...resampler.push(x));
            }
            const tail = out.slice(200);
            const rms = Math.sqrt(tail.reduce((sum, v) => sum + v * v, 0) / tail.length);
            return [out.length / (12800 * to / from), 20 * Math.log10(rms / (0.5 / Math.SQRT2))];
        });
    }""", [[48000, 8000, 1000], [48000, 8000, 5000], [44100, 16000, 9000],
           [48000, 24000, 3000], [8000, 48000, 1000], [24000, 44100, 6000]])
    for ratio, _ in gains:
        assert ratio == pytest.approx(1.0, abs=0.01)  # the rate is the rate asked for
    (voice8, alias8, alias16, voice24, up8, up24) = [gain for _, gain in gains]
    assert abs(voice8) < 0.1 and abs(voice24) < 0.1 and abs(up8) < 0.1 and abs(up24) < 0.1
    # Above the new Nyquist frequency: gone, not folded down into the voice band.
    assert alias8 < -50 and alias16 < -40  # (9 kHz is only 1 kHz past 16 kHz's Nyquist)


def phone_call(page, pipeline: str, rate: int) -> str:
    """Call `pipeline` from the softphone; the call's uuid once its row shows."""
    page.select_option("#phone-pipeline", pipeline)
    page.select_option("#phone-rate", str(rate))
    page.click("#phone-call")
    page.wait_for_selector("#phone[data-state=busy]")
    mine = page.wait_for_selector("#calls tr.mine")
    uuid = mine.get_attribute("data-uuid")
    assert uuid.startswith("console-")
    return uuid


def phone_hangup(page, daemon: Daemon, uuid: str) -> None:
    page.click("#phone-hangup")
    page.wait_for_selector("#phone[data-state=idle]")
    assert page.text_content("#phone-state").startswith("call ended (close 1000")
    (ended,) = [line for line in daemon.wait_log(f"call ended uuid={uuid} ").splitlines()
                if f"call ended uuid={uuid} " in line]
    assert "outcome=hangup " in ended and ended.endswith("code=1000"), ended
    page.wait_for_selector(row(page, uuid), state="detached", timeout=2000)


def rms(page, side: str) -> float:
    return float(page.get_attribute("#phone", f"data-{side}-rms"))


def test_the_softphone_calls_echo_and_hears_itself(page, daemon):
    uuid = phone_call(page, "echo", 16000)
    listed = wait_for(lambda: calls(daemon).get(uuid), what="the softphone's call in /calls")
    assert listed["rate"] == 16000 and listed["pipeline"] == "echo"
    heard, said = 0.0, 0.0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # the reading has pauses: keep the loudest 100 ms
        heard, said = max(heard, rms(page, "output")), max(said, rms(page, "input"))
        time.sleep(0.05)
    listed = calls(daemon)[uuid]
    assert listed["frames_in"] >= 150 and listed["frames_out"] >= 150, listed
    assert said > 0.01  # speech, not silence (about -40 dBFS and up)
    # What came back through the daemon and two resamplers is as loud as what went out.
    assert heard == pytest.approx(said, rel=0.3), (heard, said)
    page.click("#keypad [aria-label='Key 5']")
    wait_for(lambda: ("dtmf", "DTMF 5 (260 ms)") in timeline(page), what="DTMF from the keypad")
    phone_hangup(page, daemon, uuid)


def test_the_softphone_answers_notify_and_clear_like_vonage_at_8_and_24_khz(page, daemon):
    uuid = phone_call(page, "welcome", 8000)
    # file-inject asked for a notify behind its beep: the browser answers once it played.
    wait_for(lambda: any(kind == "played" for kind, _ in timeline(page)), what="played")
    (played,) = [text for kind, text in timeline(page) if kind == "played"]
    assert '"event":"finished"' in played and "beep.wav" in played
    page.click("#clear")  # the daemon sends clear; the browser answers cleared
    wait_for(lambda: ("cleared", "cleared (audio dropped)") in timeline(page), what="cleared")
    assert calls(daemon)[uuid]["rate"] == 8000
    wait_for(lambda: calls(daemon)[uuid]["frames_in"] >= 50, what="8 kHz frames")  # 1 s of them
    phone_hangup(page, daemon, uuid)

    uuid = phone_call(page, "echo", 24000)
    wait_for(lambda: calls(daemon).get(uuid, {}).get("frames_out", 0) >= 50, what="24 kHz frames")
    wait_for(lambda: rms(page, "output") > 0.003, what="the 24 kHz echo")
    phone_hangup(page, daemon, uuid)


def test_the_microphones_speech_is_transcribed_in_the_timeline(page, daemon, folder):
    beside = simulator(daemon, folder, "sim-beside", 20.0,  # a second row in the table
                       play=SPEECH / "two_cities.wav")
    uuid = phone_call(page, "listen", 16000)

    def said() -> list[str]:
        return page.eval_on_selector_all("#timeline li[data-final=true] .text",
                                          "items => items.map(i => i.textContent)")

    wait_for(lambda: [t for t in said() if len(t.split()) >= 4], timeout=20, what="a final")
    kinds = [kind for kind, _ in timeline(page)]
    assert "speech_started" in kinds and "speech_stopped" in kinds
    # Partials were replaced in place: at most the one being heard now is left.
    assert page.locator("#timeline li[data-final=false]").count() <= 1
    # The microphone is the reading (looped): what was recognised is pieces of its text,
    # which other speech would not be (most three-word runs of it are in the reading).
    words = " ".join(said()).split()
    runs = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    assert runs and sum(run in TRIGRAMS for run in runs) / len(runs) >= 0.5, said()
    if os.environ.get("VOICEWS_CONSOLE_SCREENSHOT"):
        page.screenshot(path=os.environ["VOICEWS_CONSOLE_SCREENSHOT"])
    phone_hangup(page, daemon, uuid)
    status, _, _ = daemon.request("/calls/sim-beside/hangup", data=b"", method="POST",
                                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and beside.wait(20) == 0
