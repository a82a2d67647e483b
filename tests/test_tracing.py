"""Which tracing a gateway gets from the standard OTEL_* variables, and that a gateway
without an OTLP endpoint never imports the OpenTelemetry SDK or its exporter, even while it
carries trace context. (The OpenTelemetry API is FastAPI's own dependency: FastAPI imports
it, with or without csjd's tracing.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings, otlp_traces_configured
from app.tracing import UNTRACED, tracing_for

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("environ", "configured"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{ENDPOINT}/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "console,otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, False),  # no endpoint: nothing exported
    ],
)
def test_traces_are_exported_only_when_an_otlp_endpoint_is_set(
    environ: dict[str, str], configured: bool
) -> None:
    assert otlp_traces_configured(environ) is configured


def test_the_settings_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not Settings(_env_file=None).traces_exported  # type: ignore[call-arg]
    assert tracing_for(False) is UNTRACED
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ENDPOINT)
    assert Settings(_env_file=None).traces_exported  # type: ignore[call-arg]


@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_an_otlp_protocol_other_than_http_protobuf_is_refused(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    with pytest.raises(ValidationError, match="OTLP/HTTP"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert Settings(_env_file=None).traces_exported  # type: ignore[call-arg]


# A job with a traceparent through the whole app: intake, a delivery, stop.
_A_TRACED_JOB = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from app.main import create_app
    from app.settings import Settings
    from app.testing import FakeSender

    async def main() -> None:
        sender = FakeSender()
        settings = Settings(
            database_url="sqlite+aiosqlite:///" + sys.argv[1], allow_private_targets=True
        )
        app = create_app(settings, sender=sender)
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                put = await client.put("/targets/t", json={"url": "http://127.0.0.1:9/"})
                assert put.status_code == 201, put.text
                response = await client.post(
                    "/jobs",
                    json={"target": "t", "payload": {}},
                    headers={
                        "Idempotency-Key": "k",
                        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    },
                )
                assert response.status_code == 202, response.text
                for _ in range(1000):
                    if sender.requests:
                        break
                    await asyncio.sleep(0.01)
                sent = sender.requests[0].headers["traceparent"]
                assert sent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-"), sent
        sdk = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")
        print(sorted(name for name in sys.modules if name.startswith(sdk)))

    asyncio.run(main())
    """
)


def _otel_modules_after_a_traced_job(database: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CSJD_"))}
    result = subprocess.run(
        [sys.executable, "-c", _A_TRACED_JOB, str(database)],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_without_an_endpoint_the_sdk_and_exporter_are_never_imported(tmp_path: Path) -> None:
    assert _otel_modules_after_a_traced_job(tmp_path / "off.db") == "[]"
    # the same run with an endpoint does import it (so the check above can fail); the
    # endpoint is a closed port and the export gives up when the gateway stops
    exported = _otel_modules_after_a_traced_job(
        tmp_path / "on.db",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    assert "'opentelemetry.sdk.trace'" in exported
