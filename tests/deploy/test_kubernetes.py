"""The Kubernetes example: it parses, its probes and its shutdown timings fit csjd."""

from __future__ import annotations

import copy
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from app.core.access import parse_keys_document
from app.serve import SHUTDOWN_MARGIN_S, shutdown_budget_s
from app.settings import Settings
from tests.deploy.kit import KUBERNETES, ROOT, kubernetes_objects

Objects = list[dict[str, Any]]


def one(kind: str, objects: Objects | None = None) -> dict[str, Any]:
    found = [o for o in objects or kubernetes_objects() if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects: Objects | None = None) -> dict[str, Any]:
    containers = one("Deployment", objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def environment(objects: Objects | None = None) -> dict[str, str]:
    """The container's environment: its ConfigMaps (envFrom), then its own env."""
    objects = objects or kubernetes_objects()
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container(objects).get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container(objects).get("env", []) if "value" in e})
    return env


def seconds(name: str, objects: Objects | None = None) -> float:
    """A CSJD_*_S setting as the container gets it, or csjd's default."""
    value = environment(objects).get(name)
    if value is None:
        field = name.removeprefix("CSJD_").lower()
        return float(Settings.model_fields[field].default)
    return float(value)


def prestop_sleep(objects: Objects | None = None) -> float:
    hook = container(objects)["lifecycle"]["preStop"]
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def shutdown_problems(objects: Objects) -> list[str]:
    """Where the example's timings fail csjd's shutdown bound (``shutdown_budget_s``)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        shutdown_delay_s=seconds("CSJD_SHUTDOWN_DELAY_S", objects),
        drain_timeout_s=seconds("CSJD_DRAIN_TIMEOUT_S", objects),
    )
    budget = shutdown_budget_s(settings)
    grace = one("Deployment", objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    prestop = prestop_sleep(objects)
    liveness = container(objects)["livenessProbe"]
    problems = []
    if prestop <= 0:
        problems.append("no preStop sleep for the endpoints to catch up")
    if grace < prestop + budget:
        problems.append(
            f"terminationGracePeriodSeconds {grace} < preStop {prestop:g} + "
            f"csjd's shutdown bound {budget:g} (delay + drain + {SHUTDOWN_MARGIN_S:g})"
        )
    # a draining pod (listener closed) must not be restarted by its liveness probe
    if liveness["periodSeconds"] * liveness["failureThreshold"] <= budget:
        problems.append(f"the liveness probe gives up within the shutdown bound {budget:g}")
    return problems


def test_the_manifests_parse_and_kustomize_lists_them_all() -> None:
    kinds = Counter(o["kind"] for o in kubernetes_objects())
    assert kinds == {
        "Deployment": 1,
        "Service": 1,
        "PersistentVolumeClaim": 1,
        "Secret": 1,
        "ConfigMap": 1,
    }
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_one_replica_recreated_on_the_sqlite_volume() -> None:
    """csjd refuses a second process on one SQLite file: never two pods at once."""
    spec = one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    env = environment()
    url = env["CSJD_DATABASE_URL"]
    assert url.startswith("sqlite+aiosqlite:////"), url
    database_dir = PurePosixPath(url.removeprefix("sqlite+aiosqlite:///")).parent
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    data = mounts[str(database_dir)]
    assert not data.get("readOnly", False)
    claim = volumes[data["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == one("PersistentVolumeClaim")["metadata"]["name"]


def test_the_configuration_is_valid_for_csjd(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CSJD_")]:
        monkeypatch.delenv(name)
    for name, value in environment().items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.drain_timeout_s == seconds("CSJD_DRAIN_TIMEOUT_S")


def test_the_api_keys_file_is_the_mounted_secret_and_holds_only_hashes() -> None:
    keys_file = PurePosixPath(environment()["CSJD_API_KEYS_FILE"])
    mount = next(m for m in container()["volumeMounts"] if m["mountPath"] == str(keys_file.parent))
    assert mount["readOnly"]
    volume = next(
        v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )  # fmt: skip
    secret = one("Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    document = yaml.safe_load(secret["stringData"][keys_file.name])
    assert len(parse_keys_document(document, "secret.yaml")) >= 1
    for entry in document:
        assert set(entry) == {"name", "role", "token_sha256"}


def test_the_probes_ask_readyz_and_healthz_on_the_container_port() -> None:
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ports or get["port"] in ports.values(), probe
    service_port = one("Service")["spec"]["ports"][0]["targetPort"]
    assert service_port in ports or service_port in ports.values()


def test_the_grace_period_covers_prestop_and_the_whole_shutdown() -> None:
    assert shutdown_problems(kubernetes_objects()) == []


def _drain_of(drain_s: int) -> Callable[[Objects], None]:
    def change(objects: Objects) -> None:
        one("ConfigMap", objects)["data"]["CSJD_DRAIN_TIMEOUT_S"] = str(drain_s)

    return change


def _grace_of(grace_s: int) -> Callable[[Objects], None]:
    def change(objects: Objects) -> None:
        one("Deployment", objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = (
            grace_s
        )

    return change


@pytest.mark.parametrize(
    "change",
    [
        # 5 (preStop) + 5 (delay) + 20 (drain) + 5 (margin) = 35 is needed
        _grace_of(34),
        _grace_of(31),  # more than preStop + delay + drain, but nothing for the margin
        _drain_of(31),
    ],
    ids=["grace-one-short", "grace-without-margin", "drain-raised-alone"],
)
def test_an_inconsistent_example_is_caught(change: Callable[[Objects], None]) -> None:
    objects = copy.deepcopy(kubernetes_objects())
    change(objects)
    assert shutdown_problems(objects)


def test_the_container_serves_on_all_interfaces_of_the_image_port() -> None:
    c = container()
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    argv = c.get("command", []) + c.get("args", []) or yaml.safe_load(cmd.group(1))
    assert argv[:2] == ["csjd", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    port = int(argv[argv.index("--port") + 1])
    assert port in {p["containerPort"] for p in c["ports"]}
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.MULTILINE)


def test_it_runs_unprivileged_on_a_read_only_root() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    c = container()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
