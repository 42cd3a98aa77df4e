"""The release checks: build the package, test the built wheel on every Python, build the docs.

Run it from the dev environment (``.venv/bin/nox``); ``nox`` alone runs every session:

- ``nox -s build``: wheel and sdist into ``dist/``, then a check that the wheel holds
  every file of the package (``py.typed`` included) and the sdist no stray files;
- ``nox -s tests``: the test suite on CPython 3.10 to 3.13 against the wheel in
  ``dist/``, installed (not editable) in a fresh virtual environment, so a file missing
  from the package fails here even though it is in the source tree (and first, the
  wheel alone, without its ``otel`` and ``tenacity`` extras, imported and used);
  ``nox -s tests-3.13`` for one version, and pytest options after ``--``;
- ``nox -s docs``: ``mkdocs build --strict``.

Interpreters are looked up on ``PATH`` as ``python3.10`` and so on. pyenv's shims only
answer for the selected versions, so every installed pyenv CPython 3.10-3.13 is put on
``PATH`` first.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
DIST = ROOT / "dist"
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True  # a version left out must fail, not skip
nox.options.sessions = ["build", "tests", "docs"]


def _put_pyenv_pythons_on_path() -> None:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = [
        bin_dir
        for version in PYTHONS
        for bin_dir in sorted(root.glob(f"{version}.*/bin"), reverse=True)[:1]
        if (bin_dir / f"python{version}").exists()
    ]
    os.environ["PATH"] = os.pathsep.join([*map(str, found), os.environ.get("PATH", "")])


_put_pyenv_pythons_on_path()


def _version() -> str:
    text = (ROOT / "src" / "resilient" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    if match is None:  # pragma: no cover - the file is ours
        msg = "no __version__ in src/resilient/_version.py"
        raise RuntimeError(msg)
    return match.group(1)


def _wheel() -> Path:
    return DIST / f"resilient_kit-{_version()}-py3-none-any.whl"


def _sdist() -> Path:
    return DIST / f"resilient_kit-{_version()}.tar.gz"


def _check_dist(session: nox.Session) -> None:
    """Fail on a package file missing from the wheel, or a stray file in the sdist."""
    package = sorted(
        path.relative_to(ROOT / "src").as_posix()
        for path in (ROOT / "src" / "resilient").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    with zipfile.ZipFile(_wheel()) as wheel:
        in_wheel = set(wheel.namelist())
    missing = [name for name in package if name not in in_wheel]
    if missing or "resilient/py.typed" not in in_wheel:
        session.error(f"missing from the wheel: {missing}")
    with tarfile.open(_sdist()) as sdist:
        in_sdist = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
    stray = [
        name
        for name in in_sdist
        if (name.startswith((".", "dist/", "site/", "build/")) and name != ".gitignore")
        or "__pycache__" in name
        or "/." in name
    ]
    if stray:
        session.error(f"stray files in the sdist: {stray}")
    for needed in ("LICENSE", "README.md", "pyproject.toml", "src/resilient/py.typed"):
        if needed not in in_sdist:
            session.error(f"missing from the sdist: {needed}")
    session.log(f"{_wheel().name}: {len(in_wheel)} files; {_sdist().name}: {len(in_sdist)}")


@nox.session
def build(session: nox.Session) -> None:
    """Build the wheel and sdist into dist/ and check what they contain."""
    session.install("build")
    shutil.rmtree(DIST, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(DIST), str(ROOT))
    _check_dist(session)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed wheel (run `nox -s build` first)."""
    wheel = _wheel()
    if not wheel.exists():
        session.error(f"{wheel.name} not found: run `nox -s build` first")
    newest_source = max(path.stat().st_mtime for path in (ROOT / "src").rglob("*.py"))
    if wheel.stat().st_mtime < newest_source:
        session.error(f"{wheel.name} is older than the source: run `nox -s build` again")
    # First without extras: the package must import and guard calls without
    # opentelemetry-api and tenacity, and say which extra `instrument` needs.
    session.install(str(wheel))
    session.run(
        "python",
        "-c",
        "import resilient; b = resilient.CircuitBreaker('b'); assert b.call(len, 'ab') == 2\n"
        "try:\n    resilient.instrument\n"
        "except ImportError as e:\n    assert 'resilient-kit[otel]' in str(e), e\n"
        "else:\n    raise SystemExit('instrument imported without opentelemetry-api')",
    )
    session.install(f"{wheel}[test]")
    # From the repository root, `src/` is not importable (src layout), so `resilient`
    # can only come from the wheel; say where it came from, and fail if that is not it.
    session.run(
        "python",
        "-c",
        "import pathlib, sys, resilient; p = pathlib.Path(resilient.__file__).resolve();"
        " print('resilient', resilient.__version__, 'from', p, 'on', sys.version.split()[0]);"
        " sys.exit('site-packages' not in p.parts)",
    )
    session.run(
        "python", "-m", "pytest", "-p", "no:cacheprovider", "--no-cov", "-q", *session.posargs
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(ROOT / "site"),
        env={"NO_MKDOCS_2_WARNING": "1"},  # mkdocs-material's notice about its successor
    )
