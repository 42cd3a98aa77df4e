"""The former name of ``peers.py``, kept so that ``python benchmarks/compare.py`` still works.

Every option is ``peers.py``'s (``--rounds``, ``--sample-ms``, ``--gc``, ``--cpu-time``,
``--json``, ...); see its docstring.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import main

if __name__ == "__main__":
    sys.exit(main())
