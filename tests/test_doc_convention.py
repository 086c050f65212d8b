"""The docs keep the convention of test_doc_commands.py: every shell block is run or skipped
with a reason (tests/doc_blocks.py's SKIPPED), markers are well formed, and the README is the
front door CI follows.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO
from doc_blocks import (
    QUICK_START,
    SKIPPED,
    TEST_COMMAND,
    all_blocks,
    is_shell,
    logical_lines,
    skip_reason,
)


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
        "tests/doc_blocks.py:\n" + "\n".join(unaccounted))
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
