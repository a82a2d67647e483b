"""What a test needs from the machine: missing here, it skips; under ``CI=true``, it fails.

``.ci/run`` installs every tool and starts every server the suite uses (and sets
``CI=true``), so in CI nothing may be skipped for want of one: a test that can
run there must. On a developer's machine a missing tool skips, and says how to
get it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(what: str, *, in_ci: str) -> NoReturn:
    """Skip for want of ``what`` (how to get it included), or, under ``CI=true``, fail
    saying why CI must run it (``in_ci``)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: {in_ci})")
    pytest.skip(what)
