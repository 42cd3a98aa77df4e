"""What `import resilient` costs, against `import tenacity` measured in the same run.

Each sample is a fresh interpreter (``python -X importtime -c "import NAME"``), the two
packages alternating so that a busy machine slows both alike; the figure is the median
of the cumulative import time the interpreter reports for the package (site and the
interpreter's own start-up are left out), both imported from cached bytecode.

A second figure keeps lazy loading honest: the import, then a decorated function
(a ``CircuitBreaker``; tenacity's ``@retry``) built and called once, timed with
``time.perf_counter`` in a fresh interpreter. What the import defers to first use shows
up there. Run it from the dev environment:

    .venv/bin/python benchmarks/import_time.py            # 21 samples each
    .venv/bin/python benchmarks/import_time.py --quick    # 3 each, a smoke run

Nothing is asserted about time: tests/test_import_cost.py checks what is imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

PACKAGES = ("resilient", "tenacity")

# Import, decorate a function, call it once: what a program's start pays for either.
FIRST_CALL = {
    "resilient": (
        "import resilient\n@resilient.CircuitBreaker('f')\ndef f(x):\n    return x\nf(1)\n"
    ),
    "tenacity": (
        "import tenacity\n"
        "@tenacity.retry(stop=tenacity.stop_after_attempt(3))\n"
        "def f(x):\n"
        "    return x\n"
        "f(1)\n"
    ),
}


def warm(name: str) -> None:
    """Import ``name`` once with bytecode writing on, so that both import from ``.pyc``.

    pip compiles an installed package's bytecode; an editable install (``src/``) is
    compiled on first import, and never cached where ``PYTHONDONTWRITEBYTECODE`` is
    set, which would time the compiler rather than the import.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", f"import {name}"], check=True, env=env)


def import_us(name: str) -> int:
    """Microseconds ``import name`` took in a fresh interpreter, as -X importtime says."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {name}"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in reversed(out.stderr.splitlines()):
        # Each line holds three columns: self time, cumulative time, the module.
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[2] == name:
            return int(parts[1])
    raise RuntimeError(f"no import time reported for {name}")


def first_call_us(name: str) -> int:
    """Microseconds to import ``name``, decorate a function and call it, fresh interpreter."""
    timed = "".join(f"    {line}\n" for line in FIRST_CALL[name].splitlines())
    script = (
        "import time\n"
        "def run():\n"
        f"{timed}"
        "start = time.perf_counter()\n"
        "run()\n"
        "print(round((time.perf_counter() - start) * 1e6))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 samples each (smoke run)")
    parser.add_argument("--samples", type=int, default=21)
    args = parser.parse_args()
    samples = 3 if args.quick else args.samples
    times: dict[str, list[int]] = {name: [] for name in PACKAGES}
    first: dict[str, list[int]] = {name: [] for name in PACKAGES}
    for name in PACKAGES:
        warm(name)
        import_us(name)  # and the file system cache
        first_call_us(name)
    for _ in range(samples):
        for name in PACKAGES:
            times[name].append(import_us(name))
            first[name].append(first_call_us(name))
    medians = {name: statistics.median(values) / 1000 for name, values in times.items()}
    for name, median in medians.items():
        print(f"import {name:<10} median {median:7.1f} ms over {samples} fresh interpreters")
    ratio = medians["resilient"] / medians["tenacity"]
    print(f"resilient / tenacity: {ratio:.2f}")
    calls = {name: statistics.median(values) / 1000 for name, values in first.items()}
    for name, median in calls.items():
        print(f"import, decorate, call once: {name:<10} median {median:7.1f} ms")
    print(f"resilient / tenacity: {calls['resilient'] / calls['tenacity']:.2f}")


if __name__ == "__main__":
    main()
