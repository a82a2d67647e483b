"""Entry point of the dashboard's cost measurement: ``python bench/dashboard.py
[flags]``, the same as ``python bench/run.py --scenario dashboard [flags]``
(``--stored 1000,1000000``, ``--requests 30``; ``bench/scenarios/dashboard.py``
says what it does, ``bench/README.md`` what it prints). Run as a script,
Python puts ``bench/`` itself first on ``sys.path``; this swaps it for the
repository root and hands over to ``bench.cli``. Imported, it does nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from bench.cli import main

    raise SystemExit(main(["--scenario", "dashboard", *sys.argv[1:]]))
