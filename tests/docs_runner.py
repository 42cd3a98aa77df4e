"""Run documentation examples, each in a fresh process, without paying for imports each time.

``tests/test_docs_examples.py`` starts this script once. It imports the heavy modules a
documentation example may use (resilient, anyio, trio, tenacity), then reads one JSON
request per line on stdin, ``{"path": ..., "line": ..., "code": ...}`` (``line``: the
number of the code's first line in its file). For each request it forks: the child
runs the code as ``__main__`` in a fresh namespace, with its stdout and stderr sent to
files, and exits; the parent answers with one JSON line on stdout:
``{"returncode": ..., "stdout": ..., "stderr": ...}``.

Forking a process that has already imported everything costs milliseconds, where a new
interpreter costs about 0.2 s: that is the difference between a few seconds and half a
minute for the whole documentation. A fork gives every example the isolation of a
separate program (its own event loops, logging configuration, threads, listeners),
and this process is single-threaded, so forking it is safe. The code is compiled with
the Markdown file's name and line numbers, so a traceback points into the page.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path

# Imported once here, inherited by every child (that is the point of this script).
import anyio  # noqa: F401
import tenacity  # noqa: F401
import trio  # noqa: F401

import resilient.testing  # noqa: F401

# Longest an example may run before its process is killed (it has hung).
LIMIT_SECONDS = 60


def run_child(code: str, path: str, line: int, out: str, err: str) -> None:
    """In the forked child: run one example and exit with its status."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(LIMIT_SECONDS)
    sys.stdin.close()
    for fd, name in ((1, out), (2, err)):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    status = 0
    try:
        # Pad with newlines so that line numbers in tracebacks are the Markdown file's.
        compiled = compile("\n" * (line - 1) + code, path, "exec", dont_inherit=True)
        exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})  # noqa: S102
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main() -> None:
    """Serve requests until stdin closes."""
    workdir = Path(tempfile.mkdtemp(prefix="resilient-docs-"))
    out, err = str(workdir / "stdout"), str(workdir / "stderr")
    for request_line in sys.stdin:
        request = json.loads(request_line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            run_child(request["code"], request["path"], request["line"], out, err)
        _, wait_status = os.waitpid(pid, 0)
        answer = {
            "returncode": os.waitstatus_to_exitcode(wait_status),
            "stdout": Path(out).read_text(encoding="utf-8", errors="replace"),
            "stderr": Path(err).read_text(encoding="utf-8", errors="replace"),
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
