"""Every Python example in README.md and docs/*.md runs, so the documentation cannot rot.

The convention, for anyone writing docs:

- A fenced block tagged ``python`` is an **example**: a complete program that runs as
  written, top to bottom, in a fresh process, and must exit with status 0 and write
  nothing to stderr (no traceback, no warning, no "Task was destroyed"). Keep it fast:
  use ``ManualClock`` and ``instant_retries()`` rather than real sleeps.
- A block that cannot run alone (a fragment, code for another library, a sketch of
  application code) is marked with the HTML comment ``<!-- no-run: reason -->`` on the
  line just before its fence. The comment does not show on the rendered page.
- Other fences: ``bash`` for shell commands, ``text`` or no tag for output,
  ``mermaid`` for diagrams, ``toml``/``json`` for configuration. Any other tag fails the
  test below, so a Python example cannot escape by being tagged ``py`` or ``python3``.

The examples run in children forked from one helper process (``tests/docs_runner.py``)
that has the heavy imports done already: about 5 s for every page instead of 30.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNER = Path(__file__).with_name("docs_runner.py")

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`]*)$")
NO_RUN = re.compile(r"^\s*<!-- no-run: \S.* -->\s*$")
ALLOWED_TAGS = {"python", "bash", "text", "", "mermaid", "toml", "json"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    path: str  # relative to the repository root, as shown in test ids and tracebacks
    line: int  # line number of the block's first line of code
    tag: str
    code: str
    runs: bool

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def parse(text: str, name: str) -> Iterator[Block]:
    """Every fenced block of a page; raise on a fence left open or a stray marker."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if NO_RUN.match(lines[i]) and not (
            i + 1 < len(lines) and lines[i + 1].startswith("```python")
        ):
            msg = f"{name}:{i + 1}: a no-run marker must sit just above a ```python fence"
            raise ValueError(msg)
        if opening is None:
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            msg = f"{name}:{i + 1}: fence never closed"
            raise ValueError(msg)
        marked = i > 0 and NO_RUN.match(lines[i - 1]) is not None
        tag = opening["info"].strip().split(" ")[0]
        yield Block(name, i + 2, tag, "\n".join(lines[i + 1 : end]) + "\n", not marked)
        i = end + 1


def blocks(page: Path) -> Iterator[Block]:
    """Every fenced block of a page of this repository."""
    return parse(page.read_text(encoding="utf-8"), page.relative_to(ROOT).as_posix())


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
EXAMPLES = [block for block in ALL_BLOCKS if block.tag == "python" and block.runs]


class Runner:
    """Talks to ``docs_runner.py``: one JSON line out, one JSON line back."""

    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, str(RUNNER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )

    def run(self, block: Block) -> dict[str, object]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        request = {"path": str(ROOT / block.path), "line": block.line, "code": block.code}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, "the docs runner died"
        result: dict[str, object] = json.loads(answer)
        return result

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.stdout.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    runner = Runner(tmp_path_factory.mktemp("docs"))
    yield runner
    runner.close()


def run_alone(block: Block, cwd: Path) -> dict[str, object]:
    """Where there is no fork (Windows): a new interpreter per example, slower."""
    padded = "\n" * (block.line - 1) + block.code
    code = f"exec(compile({padded!r}, {str(ROOT / block.path)!r}, 'exec'))"
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, check=False
    )
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


@pytest.mark.parametrize("block", EXAMPLES, ids=[block.id for block in EXAMPLES])
def test_example_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if hasattr(os, "fork"):
        result = request.getfixturevalue("runner").run(block)
    else:  # pragma: no cover - exercised on Windows only
        result = run_alone(block, tmp_path)
    detail = f"\n--- stdout\n{result['stdout']}\n--- stderr\n{result['stderr']}"
    assert result["returncode"] == 0, f"{block.id} exited with {result['returncode']}{detail}"
    assert not result["stderr"], f"{block.id} wrote to stderr{detail}"


def test_every_page_is_checked() -> None:
    assert (ROOT / "docs" / "index.md") in PAGES, "run the tests from a source checkout"
    assert len(EXAMPLES) >= 80  # a parser that silently finds nothing would pass


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[block.id for block in ALL_BLOCKS])
def test_fence_tags_follow_the_convention(block: Block) -> None:
    assert block.tag in ALLOWED_TAGS, f"{block.id}: unknown fence tag {block.tag!r}"


def test_the_parser() -> None:
    text = (
        "# Title\n\n```python\nprint(1)\n```\n\n<!-- no-run: a fragment -->\n"
        "```python\nfragment(\n```\n\n````text\n```\nnested\n````\n"
    )
    found = [(b.line, b.tag, b.runs, b.code) for b in parse(text, "page.md")]
    assert found == [
        (4, "python", True, "print(1)\n"),
        (9, "python", False, "fragment(\n"),
        (13, "text", True, "```\nnested\n"),
    ]
    with pytest.raises(ValueError, match="no-run marker"):
        list(parse("<!-- no-run: oops -->\n\ntext\n", "page.md"))
    with pytest.raises(ValueError, match="never closed"):
        list(parse("```python\nopen\n", "page.md"))


# -- examples must be right in every state they can meet ---------------------------------
# A snippet whose top-level `except CircuitOpenError` branch shows `retry_after` to the
# user runs once more with its breaker forced open, where `retry_after` is None: a
# long-lived breaker can be in any state when that branch runs. (Examples that assert
# one deterministic state are left alone.)

BREAKER = re.compile(r"^(\w+) = CircuitBreaker\(", re.MULTILINE)


def forced_open_variant(block: Block) -> Block | None:
    """``block`` with its breaker forced open just before its top-level ``try``, if any."""
    lines = block.code.splitlines()
    breakers = BREAKER.findall(block.code)
    handlers = [i for i, line in enumerate(lines) if line.startswith("except CircuitOpenError")]
    if not breakers or not handlers:
        return None
    branch = []
    for line in lines[handlers[0] + 1 :]:
        if line and not line.startswith(" "):
            break
        branch.append(line)
    shown = "\n".join(branch)
    if "retry_after" not in shown or "print(" not in shown:
        return None
    tries = [i for i, line in enumerate(lines[: handlers[0]]) if line == "try:"]
    if not tries:
        return None
    lines.insert(tries[-1], f"{breakers[0]}.force_open()")
    code = "\n".join(lines) + "\n"
    return Block(block.path, block.line, block.tag, code, block.runs)


FORCED_OPEN = [v for v in map(forced_open_variant, EXAMPLES) if v is not None]


def test_forced_open_variants_include_the_readme() -> None:
    assert any(block.path == "README.md" for block in FORCED_OPEN)


@pytest.mark.parametrize("block", FORCED_OPEN, ids=[block.id for block in FORCED_OPEN])
def test_example_handles_a_forced_open_breaker(
    block: Block, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if hasattr(os, "fork"):
        result = request.getfixturevalue("runner").run(block)
    else:  # pragma: no cover - exercised on Windows only
        result = run_alone(block, tmp_path)
    detail = f"\n--- code\n{block.code}\n--- stdout\n{result['stdout']}"
    detail += f"\n--- stderr\n{result['stderr']}"
    assert result["returncode"] == 0, f"{block.id} exited with {result['returncode']}{detail}"
    assert not result["stderr"], f"{block.id} wrote to stderr{detail}"
    assert result["stdout"], f"{block.id}: the except branch printed nothing{detail}"
