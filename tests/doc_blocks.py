"""The shell blocks of README.md and docs/*.md, and what each is for: run, skipped (with the
reason), or not a command at all.  The convention (docs/development.md) is told in
test_doc_commands.py, which runs the pages; test_doc_convention.py checks the pages keep it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
QUICK_START = (
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd -n voicews -c config.yaml"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest"
)

SHELL_INFOS = {"sh", "bash", "shell", "console", "shell-session"}
COMMANDS = {
    "twistd", "voicews", "voicews-call", "python", "python3", "pip", "curl", "cd", "export",
    "mkdocs", "nginx", "systemctl", "journalctl", "useradd", "install", "cp", "kill", "openssl",
    "printf", "pytest", "ruff", "mypy", "apt-get", "git", "ngrok", "vonage", ".", "source",
    "systemd-socket-activate", "systemd-analyze", "py-spy", "ls", "cat",
}

# (page, the start of a block's first command line) -> why it does not run here.
SKIPPED: dict[tuple[str, str], str] = {
    ("README.md", QUICK_START): (
        "a pip install of the clone into a new venv, then the daemon: test_packaging installs "
        "the wheel into a fresh venv and runs twistd from it; every page here runs this daemon"),
    ("README.md", TEST_COMMAND): "the test suite itself: .ci/run runs it verbatim (see below)",
    ("docs/getting-started.md", "python3 -m venv venv && . venv/bin/activate"): (
        "installs a built wheel into a new venv: test_packaging does exactly this"),
    ("docs/getting-started.md", QUICK_START): "as in README.md",
    ("docs/index.md", "pip install ."): (
        "installs the package; its other two commands are run on the getting-started page"),
    ("docs/development.md", TEST_COMMAND): "the test suite itself: .ci/run runs it verbatim",
    ("docs/development.md", ".venv/bin/ruff check ."): (
        "lints the repository, not a reader's folder: the suite's own checks run ruff and mypy"),
    ("docs/development.md", "pip install '.[docs]'"): (
        "installs packages and serves the site until interrupted; tests/test_docs.py builds it "
        "with --strict and checks the generated reference"),
    ("docs/operations.md", "useradd --system"): (
        "a service install as root into /opt, /etc and systemd: test_ops_systemd verifies the "
        "units and runs the install layout of `voicews init /etc/voicews`"),
    ("docs/operations.md", "systemctl enable --now voicews"): "needs systemd as PID 1 and root",
    ("docs/operations.md", "systemctl disable --now voicews "): (
        "needs systemd as PID 1 and root; test_ops_systemd shares one socket between two "
        "workers with systemd-socket-activate"),
    ("docs/operations.md", "cp deploy/nginx.conf"): (
        "reconfigures the host's nginx as root: test_ops_nginx runs this nginx.conf on loopback "
        "in front of two daemons"),
    ("docs/processors.md", "voicews init --plugin noise-gate"): (
        "pip-installs the new package into the environment the tests run in; test_packaging "
        "installs a plugin package made by `voicews init --plugin` into a fresh venv"),
    ("docs/performance.md", ".venv/bin/pip install '.[bench]'"): (
        "installs packages, then loads the machine for minutes; tests/test_bench.py runs "
        "bench/run.py for a second"),
    ("docs/performance.md", ".venv/bin/python bench/micro.py --pipeline echo --instructions"): (
        "runs under valgrind for tens of seconds; tests/test_bench.py counts instructions too"),
    ("docs/events.md", "export VOICEWS_CONTROL_TOKEN=$(openssl rand -hex 24)"): (
        "the stream runs until interrupted; tests/test_events.py reads /events"),
    ("docs/events.md", "$ VOICEWS_CONTROL_TOKEN=... voicews-call"): (
        "a transcript with a placeholder token (...); tests/test_events.py runs "
        "voicews-call --events"),
    ("docs/bridge.md", "twistd -n voicews -c config.yaml"): (
        "two terminals in one block (the daemon in the foreground, then the call) and the bot "
        "of the page running; tests/test_bridge_processor.py runs this very example"),
    ("docs/console.md", "voicews-call ws://127.0.0.1:8080/socket --header uuid=demo"): (
        "a 30 s call to watch in the page: tests/test_console.py makes such a call and checks "
        "the page shows it"),
    ("docs/console.md", "VOICEWS_CONSOLE_SCREENSHOT=docs/console.png"): (
        "takes the docs' screenshot by running the browser tests: tests/test_console.py"),
    ("docs/voice-ai.md", "voicews-call --events --header pipeline=assistant"): (
        "needs a recording of the reader's voice (speech.wav): tests/test_assistant.py runs "
        "the assistant on clips of the test reading"),
}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    info: str
    text: str
    mark: str | None  # None: no marker; "", "daemon [URL]" or "file NAME"

    @property
    def first(self) -> str:
        """The first command line (or the first line): what SKIPPED names a block by."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        commands = [line for line in lines if not line.startswith("#")]
        return (commands or lines or [""])[0]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
MARK = re.compile(r"^<!--\s*run(?::\s*(?P<how>.*?))?\s*-->$")


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown page, with the run marker before each, if any."""
    found = []
    lines = path.read_text(encoding="utf-8").splitlines()
    page = str(path.relative_to(REPO))
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = "\n".join(line[indent:] for line in lines[i + 1 : end])
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARK.match(before)
        found.append(Block(page, i + 1, opening["info"].strip(), body,
                           (marker["how"] or "") if marker else None))
        i = end + 1
    return found


def skip_reason(block: Block) -> str | None:
    for (page, start), reason in SKIPPED.items():
        if block.page == page and block.first.startswith(start):
            return reason
    return None


def is_shell(block: Block) -> bool:
    if block.info:
        return block.info.split()[0] in SHELL_INFOS
    word = block.first.split()[0] if block.first.split() else ""
    return word in COMMANDS or "/bin/" in word


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


def runnable_pages() -> list[str]:
    return sorted({block.page for block in all_blocks() if block.mark is not None})


def logical_lines(text: str) -> list[str]:
    """Command lines with backslash continuations joined; comments and blank lines out."""
    out: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.strip().startswith("#"):
            out.append(line)
    return out
