"""Every command in README.md and docs/*.md runs as written, against a real daemon.

The convention (docs/development.md): a fenced block preceded by an HTML comment

    <!-- run -->                 is run; its exit status must be 0;
    <!-- run: daemon [URL] -->   its last line starts a daemon in the foreground: the block runs
                                 with that line in the background, and the page goes on once URL
                                 (default http://127.0.0.1:8080/health) answers;
    <!-- run: file NAME -->      (any block) is written to NAME, for the blocks after it.

Every other shell block (```sh, ```bash, ```console, or a bare fence whose first word is a
command) is in SKIPPED below, with the reason it cannot run here; a block that is neither
fails the test, and so does a SKIPPED entry that matches no block.

A page runs as a reader would run it in a terminal, as one bash session: in a fresh folder laid
out like a clone (config.yaml, prompts/ and plugins/ from voicews/examples, .venv -> this
interpreter's environment, bench/, deploy/, systemd/), with `twistd -n voicews -c config.yaml`
running there on 127.0.0.1:8080 (unless the page's first block starts its own daemon), its bin
folder first on PATH, VOICEWS_*/VONAGE_* variables unset. Each block starts in that folder;
what a block exports stays for the next ones. A daemon block stops the page's daemon first; the
last daemon must exit 0 when the page is done (a clean drain). `curl` gets --fail-with-body, so
an HTTP error is a failure. After a block that leaves a command in the background (`cmd &`)
the page waits a second, as a reader would before typing the next command.

Pages run in private network namespaces (`unshare -rn`), so port 8080 is theirs and several
pages run at once; without unshare they run one after another on the host's 8080, if it is
free.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
QUICK_START = (
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd -n voicews -c config.yaml"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest"
)
DEFAULT_HEALTH = "http://127.0.0.1:8080/health"
PAGE_TIMEOUT = 180.0

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


# -- the convention holds -------------------------------------------------------------------

def test_every_shell_block_is_run_or_skipped_with_a_reason():
    unaccounted, both = [], []
    for block in all_blocks():
        if not is_shell(block):
            continue
        skipped = skip_reason(block) is not None
        if block.mark is None and not skipped:
            unaccounted.append(f"{block.where}: {block.first}")
        if block.mark is not None and skipped:
            both.append(block.where)
    assert not unaccounted, (
        "shell blocks with neither a <!-- run --> marker nor a SKIPPED entry in "
        "tests/test_doc_commands.py:\n" + "\n".join(unaccounted))
    assert not both, f"marked to run and skipped: {both}"


def test_every_skip_names_a_block_that_exists():
    shell = [block for block in all_blocks() if is_shell(block)]
    stale = [(page, start) for page, start in SKIPPED
             if not any(b.page == page and b.first.startswith(start) for b in shell)]
    assert not stale, f"SKIPPED entries that match no shell block: {stale}"


def test_markers_are_well_formed():
    for block in all_blocks():
        if block.mark is None:
            continue
        how = block.mark.split()
        assert not how or how[0] in ("daemon", "file"), f"{block.where}: run: {block.mark}"
        if how and how[0] == "file":
            assert len(how) == 2, f"{block.where}: run: file needs one NAME"
            continue
        assert is_shell(block) and block.info.split()[0] != "console", (
            f"{block.where}: only ```sh blocks run (console blocks are transcripts)")
        if how and how[0] == "daemon":
            last = logical_lines(block.text)[-1]
            assert "#" not in last, f"{block.where}: a daemon line must end without a comment"


def test_the_readme_quick_start_is_what_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"```sh\n{QUICK_START}\n```" in readme
    assert f"```sh\n{TEST_COMMAND}\n```" in readme
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == TEST_COMMAND, ".ci/run must end with the README's test command, verbatim"


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if re.match(r"https?://", target):
            continue
        path, _, anchor = target.partition("#")
        assert (REPO / path).exists(), f"README links to {path}, which is not there"
        if anchor:
            assert anchor in heading_slugs(REPO / path), f"README: {target}: no such heading"


def test_the_worked_example_in_the_processors_guide_is_the_shipped_file():
    page = (REPO / "docs" / "processors.md").read_text(encoding="utf-8")
    shipped = (REPO / "voicews" / "examples" / "plugins" / "utterances.py").read_text()
    assert f"```python\n{shipped.rstrip()}\n```" in page


def heading_slugs(path: Path) -> set[str]:
    """GitHub's (and MkDocs's) anchors of a page's headings."""
    slugs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#{1,6} (.+)$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading[1].replace("`", "").lower())
            slugs.add(text.strip().replace(" ", "-"))
    return slugs


# -- running the pages -----------------------------------------------------------------------

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


HELPERS = r"""
set -eo pipefail
curl() { command curl --fail-with-body "$@"; }
DAEMON=
DLOG=
wait_daemon() {
    local url=$1 i
    for i in $(seq 1 300); do
        if "$DOCTEST_PY" -c 'import ssl, sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2, context=ssl._create_unverified_context()).read()' \
                "$url" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$DAEMON" 2>/dev/null; then
            echo "DOCTEST: the daemon exited before $url answered:"; cat "$DLOG"; return 1
        fi
        sleep 0.1
    done
    echo "DOCTEST: $url did not answer:"; cat "$DLOG"; return 1
}
stop_daemon() {
    [ -n "$DAEMON" ] || return 0
    local status=0
    kill -TERM "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" || status=$?
    DAEMON=
    if [ "$status" -ne 0 ]; then
        echo "DOCTEST: the daemon exited $status:"; cat "$DLOG"; return 1
    fi
}
finish() {
    local status=$?
    trap - EXIT
    if [ -n "$DAEMON" ]; then kill -TERM "$DAEMON" 2>/dev/null || true; wait "$DAEMON" || true; fi
    for job in $(jobs -p); do kill "$job" 2>/dev/null || true; done
    wait || true
    exit $status
}
trap finish EXIT
"""

LOOPBACK_UP = r"""
"$DOCTEST_PY" -c 'import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))'
"""


def compose(page: str, folder: Path, logs: Path, private_network: bool) -> str:
    """The page's runnable blocks as one bash script."""
    marked = [block for block in blocks(REPO / page) if block.mark is not None]
    parts = [HELPERS, LOOPBACK_UP if private_network else "", f"cd {shlex.quote(str(folder))}"]
    first = next((block for block in marked if block.mark.split()[:1] != ["file"]), None)
    if first is not None and first.mark.split()[:1] != ["daemon"]:
        log = logs / "daemon-0.log"
        parts.append(f"twistd -n voicews -c config.yaml > {shlex.quote(str(log))} 2>&1 &\n"
                     f"DAEMON=$!; DLOG={shlex.quote(str(log))}; wait_daemon {DEFAULT_HEALTH}")
    for number, block in enumerate(marked, start=1):
        how = block.mark.split()
        parts.append(f"echo {shlex.quote(f'### {block.where}')}")
        parts.append(f"cd {shlex.quote(str(folder))}")
        if how[:1] == ["file"]:
            parts.append(f"cat > {shlex.quote(how[1])} <<'DOCTEST_EOF'\n{block.text}\nDOCTEST_EOF")
        elif how[:1] == ["daemon"]:
            url = how[1] if len(how) > 1 else DEFAULT_HEALTH
            lines = block.text.splitlines()
            daemon_line = logical_lines(block.text)[-1]
            # Everything before the daemon's own line, as written, then the daemon in the
            # background (its line may span several lines with backslashes).
            start = max(i for i, line in enumerate(lines) if line.strip() and
                        not line.strip().startswith("#") and
                        (i == 0 or not lines[i - 1].rstrip().endswith("\\")))
            log = logs / f"daemon-{number}.log"
            parts.append("stop_daemon")
            parts.append("\n".join(lines[:start]))
            parts.append(f"{daemon_line} > {shlex.quote(str(log))} 2>&1 &\n"
                         f"DAEMON=$!; DLOG={shlex.quote(str(log))}; wait_daemon {shlex.quote(url)}")
        else:
            parts.append(block.text)
            if logical_lines(block.text)[-1].rstrip().endswith("&"):
                parts.append("sleep 1")
    parts.append("stop_daemon")
    parts.append("echo '### done'")
    return "\n".join(parts) + "\n"


def lay_out(folder: Path) -> None:
    """A reader's clone: the shipped config with its prompts and plugins, and the venv."""
    examples = REPO / "voicews" / "examples"
    folder.mkdir(parents=True)
    shutil.copy(examples / "config.yaml", folder / "config.yaml")
    shutil.copytree(examples / "prompts", folder / "prompts")
    shutil.copytree(examples / "plugins", folder / "plugins",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".venv").symlink_to(Path(sys.prefix))
    for name in ("bench", "deploy", "systemd"):
        (folder / name).symlink_to(REPO / name)


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("VOICEWS_", "VONAGE_", "PYTEST_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["DOCTEST_PY"] = sys.executable
    return env


def private_network_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        done = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def port_8080_is_free() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
        except OSError:
            return False
    return True


@dataclass
class PageRun:
    returncode: int
    output: str


def run_page(page: str, root: Path, private_network: bool) -> PageRun:
    folder = root / page.replace("/", "_").removesuffix(".md")
    lay_out(folder)
    logs = folder / ".doctest"
    logs.mkdir()
    script = logs / "page.sh"
    script.write_text(compose(page, folder, logs, private_network))
    command = ["bash", str(script)]
    if private_network:
        command = [shutil.which("unshare") or "unshare", "-rn", *command]
    proc = subprocess.Popen(command, cwd=folder, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the page's own process group: its shell and what it started
        output, _ = proc.communicate()
        output += f"\nDOCTEST: the page took more than {PAGE_TIMEOUT:.0f} s"
    return PageRun(proc.returncode, output)


class PageRunner:
    """Runs every page once: at once in private networks, one by one on the host's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.private = private_network_works()
        self.pool = ThreadPoolExecutor(max_workers=3 if self.private else 1)
        self.futures: dict[str, Future[PageRun]] = {}
        self.lock = threading.Lock()
        if self.private:
            for page in runnable_pages():
                self.submit(page)

    def submit(self, page: str) -> Future[PageRun]:
        with self.lock:
            if page not in self.futures:
                self.futures[page] = self.pool.submit(run_page, page, self.root, self.private)
            return self.futures[page]

    def result(self, page: str) -> PageRun:
        if not self.private and not port_8080_is_free():
            pytest.skip("no private network namespace (unshare -rn) and port 8080 is taken")
        return self.submit(page).result()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    runner = PageRunner(tmp_path_factory.mktemp("doc-commands"))
    yield runner
    runner.pool.shutdown(wait=True)


@pytest.mark.parametrize("page", runnable_pages())
def test_the_commands_of_the_page_run_as_written(pages, page):
    run = pages.result(page)
    assert run.returncode == 0 and run.output.rstrip().endswith("### done"), run.output
