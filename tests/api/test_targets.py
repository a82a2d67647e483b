"""/targets: registration, validation, masking, deletion."""

from __future__ import annotations

import pytest

from app.api.target_schemas import TargetIn
from app.core.target import SPEC_FIELDS, TargetSpec
from tests.conftest import Api, ApiFactory

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW_SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


async def test_put_creates_then_replaces_with_every_default(api: Api) -> None:
    created = await api.client.put("/targets/billing", json={"url": "http://127.0.0.1:9/a"})
    assert created.status_code == 201
    body = created.json()
    assert {
        k: body[k]
        for k in (
            "name",
            "url",
            "timeout_s",
            "max_concurrency",
            "rate_limit_per_s",
            "max_attempts",
            "backoff_initial_s",
            "backoff_max_s",
            "max_retry_duration_s",
            "secret",
            "headers",
            "enabled",
        )
    } == {
        "name": "billing",
        "url": "http://127.0.0.1:9/a",
        "timeout_s": 10.0,
        "max_concurrency": 16,
        "rate_limit_per_s": None,
        "max_attempts": 10,
        "backoff_initial_s": 1.0,
        "backoff_max_s": 600.0,
        "max_retry_duration_s": 86400.0,
        "secret": None,
        "headers": {},
        "enabled": True,
    }
    assert body["state"] == {
        "breaker": "closed",
        "breaker_reopens_at": None,
        "paused_until": None,
        "concurrency_limit": 16,
        "inflight": 0,
        "backlog": {"scheduled": 0, "queued": 0, "running": 0, "retrying": 0},
        "disabled_reason": None,
    }
    replaced = await api.client.put(
        "/targets/billing", json={"url": "http://127.0.0.1:9/b", "max_attempts": 3}
    )
    assert replaced.status_code == 200
    assert replaced.json()["url"].endswith("/b") and replaced.json()["max_attempts"] == 3
    listed = (await api.client.get("/targets")).json()
    assert [t["name"] for t in listed] == ["billing"]


async def test_secrets_and_header_values_are_never_returned(api: Api) -> None:
    response = await api.client.put(
        "/targets/billing",
        json={"url": "http://127.0.0.1:9/a", "secret": SECRET, "headers": {"X-Token": "t0p"}},
    )
    for body in (response.json(), (await api.client.get("/targets/billing")).json()):
        assert body["secret"] == "********"
        assert body["headers"] == {"X-Token": "********"}
    assert SECRET not in (await api.client.get("/targets")).text
    assert "t0p" not in (await api.client.get("/targets")).text


async def test_several_secrets_are_accepted_for_rotation_and_still_masked(api: Api) -> None:
    secrets = f"{NEW_SECRET} {SECRET}"
    response = await api.client.put(
        "/targets/billing", json={"url": "http://127.0.0.1:9/a", "secret": secrets}
    )
    assert response.status_code == 201, response.text
    assert response.json()["secret"] == "********"
    listed = (await api.client.get("/targets")).text
    assert SECRET not in listed and NEW_SECRET not in listed


async def test_a_bad_secret_in_the_list_is_named_without_repeating_any(api: Api) -> None:
    response = await api.client.put(
        "/targets/billing",
        json={"url": "http://127.0.0.1:9/a", "secret": f"{SECRET} whsec_c2hvcnQ="},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret 2 of 2: a secret holds at least 24 bytes" in response.json()["detail"]
    assert SECRET not in response.text and "c2hvcnQ" not in response.text


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("Bad_Name", {"url": "http://127.0.0.1:9/a"}),
        ("-dash", {"url": "http://127.0.0.1:9/a"}),
        ("a" * 64, {"url": "http://127.0.0.1:9/a"}),
        ("ok", {}),
        ("ok", {"url": "ftp://127.0.0.1/a"}),
        ("ok", {"url": "not a url"}),
        ("ok", {"url": "http://user:pw@127.0.0.1/a"}),
        ("ok", {"url": "http://a b/hook"}),
        ("ok", {"url": "http://\u00e9\u0000/"}),
        ("ok", {"url": "http://bad..name/hook"}),
        ("ok", {"url": "http://-leading.example/hook"}),
        ("ok", {"url": "http://127.0.0.1:9/a", "timeout_s": 0.01}),
        ("ok", {"url": "http://127.0.0.1:9/a", "timeout_s": 301}),
        ("ok", {"url": "http://127.0.0.1:9/a", "max_concurrency": 0}),
        ("ok", {"url": "http://127.0.0.1:9/a", "secret": "plain"}),
        ("ok", {"url": "http://127.0.0.1:9/a", "secret": f"{SECRET} whsec_c2hvcnQ="}),
        ("ok", {"url": "http://127.0.0.1:9/a", "secret": f"plain {SECRET}"}),
        ("ok", {"url": "http://127.0.0.1:9/a", "headers": {"Host": "evil"}}),
        ("ok", {"url": "http://127.0.0.1:9/a", "backoff_initial_s": 10, "backoff_max_s": 5}),
        ("ok", {"url": "http://127.0.0.1:9/a", "name": "other"}),
        ("ok", {"url": "http://127.0.0.1:9/a", "colour": "red"}),
    ],
)
async def test_invalid_targets_are_422_and_change_nothing(
    api: Api, name: str, body: dict[str, object]
) -> None:
    response = await api.client.put(f"/targets/{name}", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (await api.client.get("/targets")).json() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a",
        "http://localhost/a",
        "http://127.1/a",
        "http://0x7f000001/a",
        "http://2130706433/a",
        "http://0177.0.0.1/a",
        "http://[::1]/a",
        "http://[::ffff:127.0.0.1]/a",
        "http://169.254.169.254/latest",
        "http://10.0.0.8/a",
        "http://192.168.1.1/a",
        "http://100.64.0.1/a",
        "http://[fd00::1]/a",
        "http://[fec0::1]/a",
    ],
)
async def test_private_addresses_are_refused_unless_allowed(
    api_factory: ApiFactory, url: str
) -> None:
    strict = await api_factory(allow_private_targets=False)
    response = await strict.client.put("/targets/inside", json={"url": url})
    assert response.status_code == 422
    assert response.json()["type"].endswith("/refused-url")
    assert (await strict.client.get("/targets")).json() == []


async def test_a_local_use_nat64_address_is_refused_at_registration(
    api_factory: ApiFactory,
) -> None:
    strict = await api_factory(allow_private_targets=False)
    # it carries a public IPv4 address, but the translator is the operator's own
    url = "http://[64:ff9b:1::5db8:d822]/a"
    response = await strict.client.put("/targets/nat64", json={"url": url})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/refused-url")
    assert "a local-use NAT64 address" in response.json()["detail"]
    assert (await strict.client.get("/targets")).json() == []


async def test_public_addresses_are_accepted_when_private_ones_are_not(
    api_factory: ApiFactory,
) -> None:
    strict = await api_factory(allow_private_targets=False)
    response = await strict.client.put("/targets/out", json={"url": "https://93.184.216.34/a"})
    assert response.status_code == 201


async def test_delete_is_204_then_404_and_409_while_jobs_are_unfinished(api: Api) -> None:
    await api.put_target(enabled=False)
    job = (await api.post_job()).json()
    busy = await api.client.delete("/targets/billing")
    assert busy.status_code == 409
    assert busy.json()["unfinished_jobs"] == 1
    await api.client.post(f"/jobs/{job['id']}/cancel")
    assert (await api.client.delete("/targets/billing")).status_code == 204
    assert (await api.client.delete("/targets/billing")).status_code == 404
    assert (await api.client.get("/targets/billing")).status_code == 404


async def test_backlog_counts_show_on_the_target(api: Api) -> None:
    await api.put_target(enabled=False)
    await api.post_job("a")
    await api.post_job("b", {"target": "billing", "payload": 1, "delay_s": 600})
    state = (await api.client.get("/targets/billing")).json()["state"]
    assert state["backlog"] == {"scheduled": 1, "queued": 1, "running": 0, "retrying": 0}
    assert state["disabled_reason"] == "disabled by an operator"


def test_the_api_takes_exactly_the_specs_fields_with_the_specs_defaults() -> None:
    declared = TargetIn.model_fields
    assert list(declared) == ["name", *SPEC_FIELDS]
    spec = TargetSpec(name="billing", url="http://127.0.0.1:9/hook")
    for name in SPEC_FIELDS:
        if not declared[name].is_required():
            assert declared[name].get_default(call_default_factory=True) == getattr(spec, name)
