"""Running the client toolchains from tests: commands, and skipping without them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from tests.e2e.gateway import ROOT
from tests.needs import missing

CLIENTS = ROOT / "clients"
TOKEN = "client-token-3f2a9c71d04e8b56a1c9e2f7"
NETWORK_TROUBLE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "network")


def unavailable(reason: str) -> NoReturn:
    missing(reason, in_ci="the generated clients must be tested")


def run(command: list[str], *, cwd: Path, timeout: float, fails: bool = False, **env: str) -> str:
    """Run ``command``; its output, or a test failure that shows it.

    With ``fails``, the command must exit non-zero instead.
    """
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if (done.returncode != 0) != fails:
        pytest.fail(
            f"{' '.join(command)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done.stdout + done.stderr
