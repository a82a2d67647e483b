"""Hypothesis keeps its files (examples, cached constants) out of the repository."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Read when Hypothesis first needs storage, which is after collection; CI may point it elsewhere.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "csjd-hypothesis")
)
