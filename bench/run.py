"""Entry point of the end-to-end benchmark behind ``make bench``: ``python
bench/run.py [flags]`` (``--help`` lists the flags, ``bench/README.md``
explains them). Run as a script, Python puts ``bench/`` itself first on
``sys.path``; this swaps it for the repository root, so that the package's
modules are found only as ``bench.*``, and hands over to ``bench.cli``.
Imported, it does nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from bench.cli import main

    raise SystemExit(main())
