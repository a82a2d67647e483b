"""Generated clients against a real gateway: the generators, their caches, the server.

Each client is generated at test time, into a temporary folder, from the
committed ``openapi.yaml``, by a pinned generator: openapi-python-client from
the ``dev`` extra, openapi-typescript and openapi-fetch from
``clients/typescript/package-lock.json``. The npm packages are installed once
per lock file into the system temp dir and reused by later runs.

Without a generator (no network outside CI) these tests skip and say why;
with ``CI=true`` they fail instead, so CI never passes without running them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.testing import Sink
from tests.clients.support import CLIENTS, NETWORK_TROUBLE, TOKEN, run, unavailable
from tests.e2e.gateway import ROOT, GatewayProcess


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A real ``csjd serve`` with API keys on; the clients must send the token."""
    gateway = GatewayProcess(
        tmp_path_factory.mktemp("gateway"), CSJD_API_KEYS=f"ops:{TOKEN}:admin"
    ).start()
    gateway.client.headers["Authorization"] = f"Bearer {TOKEN}"
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def python_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``csjd_client`` package generated from openapi.yaml; its parent folder."""
    try:
        import openapi_python_client  # noqa: F401
    except ImportError:
        unavailable("openapi-python-client is not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("python-client") / "out"
    bin_dir = str(Path(sys.executable).parent)
    output = run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(ROOT / "openapi.yaml"),
            "--config",
            str(CLIENTS / "python" / "config.yaml"),
            "--output-path",
            str(out),
        ],
        cwd=out.parent,
        timeout=120,
        # the generator formats its output with ruff, which it looks for on PATH
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    # A warning means part of the schema was left out of the client.
    assert "warning" not in output.lower(), output
    return out


def _npm_packages() -> Path:
    """``node_modules`` for clients/typescript, installed by ``npm ci`` once per lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("Node.js and npm are needed for the TypeScript client")
    project = CLIENTS / "typescript"
    lock = (project / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (project / "package.json").read_bytes()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"csjd-clients-npm-{digest}"
    ready = cache / "node_modules" / ".csjd-installed"
    cache.mkdir(exist_ok=True)
    with (cache / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another test run may be installing it now
        if not ready.exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(project / name, cache / name)
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                if any(sign in done.stderr for sign in NETWORK_TROUBLE):
                    unavailable(f"npm ci could not reach the registry:\n{done.stderr[-2000:]}")
                pytest.fail(f"npm ci failed:\n{done.stdout}\n{done.stderr}")
            ready.touch()
    return cache / "node_modules"


@pytest.fixture(scope="module")
def typescript_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clients/typescript laid out afresh, its ``src/generated/schema.d.ts`` made from openapi.yaml.

    The copy keeps the repository's layout (``openapi.yaml`` two folders up)
    so that the project's own ``npm run generate`` is what runs.
    """
    node_modules = _npm_packages()
    root = tmp_path_factory.mktemp("typescript-client")
    shutil.copyfile(ROOT / "openapi.yaml", root / "openapi.yaml")
    project = root / "clients" / "typescript"
    project.mkdir(parents=True)
    for name in ("package.json", "tsconfig.json", "smoke.ts"):
        shutil.copyfile(CLIENTS / "typescript" / name, project / name)
    (project / "node_modules").symlink_to(node_modules, target_is_directory=True)
    run(["npm", "run", "generate"], cwd=project, timeout=120)
    assert (project / "src" / "generated" / "schema.d.ts").is_file()
    return project
