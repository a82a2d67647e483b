from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.testing import Sink
from tests.e2e.gateway import GatewayProcess


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture
def gateway_factory(tmp_path: Path, sink: Sink) -> Iterator[Callable[..., GatewayProcess]]:
    """Gateways that stop before the test's sink does: a sink stopped under a
    gateway still delivering would cut connections it has not answered."""
    started: list[GatewayProcess] = []

    def make(**env: str) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path, **env)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory().start()
