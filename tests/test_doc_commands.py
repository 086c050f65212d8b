"""Every command in README.md and docs/*.md runs as written, against a real daemon.

The convention (docs/development.md): a fenced block preceded by an HTML comment

    <!-- run -->                 is run; its exit status must be 0;
    <!-- run: daemon [URL] -->   its last line starts a daemon in the foreground: the block runs
                                 with that line in the background, and the page goes on once URL
                                 (default http://127.0.0.1:8080/health) answers;
    <!-- run: file NAME -->      (any block) is written to NAME, for the blocks after it.

Every other shell block (```sh, ```bash, ```console, or a bare fence whose first word is a
command) is in SKIPPED (tests/doc_blocks.py), with the reason it cannot run here; a block that
is neither fails test_doc_convention.py, and so does a SKIPPED entry that matches no block.

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
from doc_blocks import blocks, logical_lines, runnable_pages

DEFAULT_HEALTH = "http://127.0.0.1:8080/health"
PAGE_TIMEOUT = 180.0

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
