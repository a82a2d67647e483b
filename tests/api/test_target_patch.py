"""PATCH /targets/{name}: a JSON merge patch that changes only what it names."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest

from app.api.routes.targets import PATCH_TRIES
from app.core.signing import sign
from app.core.target import TargetRecord
from app.testing import FakeSender, Reply
from tests.conftest import Api, ApiFactory

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
URL = "http://127.0.0.1:9/hook"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


async def patch(api: Api, body: Any, name: str = "billing", **headers: str) -> httpx.Response:
    """``body`` as a merge patch (``headers`` may name another content type)."""
    return await api.client.patch(f"/targets/{name}", json=body, headers={**MERGE_PATCH, **headers})


async def stored(api: Api, name: str = "billing") -> TargetRecord:
    record: TargetRecord | None = await api.gateway.store.get_target(name)
    assert record is not None
    return record


async def registered(api: Api, **fields: Any) -> TargetRecord:
    """``billing`` as a PUT with ``fields`` made it, secret and a header included."""
    await api.put_target(secret=SECRET, headers={"X-Token": "t0p", "X-Team": "blue"}, **fields)
    return await stored(api)


async def test_a_patch_changes_only_what_it_names_and_deliveries_keep_secret_and_headers(
    api: Api, sender: FakeSender
) -> None:
    before = await registered(api, max_attempts=3)
    response = await patch(api, {"timeout_s": 2.5, "url": "http://127.0.0.1:9/new"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["timeout_s"], body["url"], body["max_attempts"]) == (
        2.5,
        "http://127.0.0.1:9/new",
        3,
    )
    assert body["secret"] == "********"
    assert body["headers"] == {"X-Token": "********", "X-Team": "********"}
    assert body["created_at"] == (await api.client.get("/targets/billing")).json()["created_at"]
    after = await stored(api)
    assert after.spec.secret == SECRET and after.updated_at > before.updated_at

    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    [request] = sender.requests
    assert request.url == "http://127.0.0.1:9/new"
    assert request.headers["X-Token"] == "t0p" and request.headers["X-Team"] == "blue"
    expected = sign(SECRET, job["id"], int(request.headers["webhook-timestamp"]), request.body)
    assert request.headers["webhook-signature"] == expected


async def test_headers_are_merged_by_name_whatever_the_case(api: Api) -> None:
    await registered(api)
    response = await patch(
        api, {"headers": {"x-token": "n3w", "X-Team": None, "X-Region": "eu", "X-Gone": None}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["headers"] == {"x-token": "********", "X-Region": "********"}
    assert dict((await stored(api)).spec.headers) == {"x-token": "n3w", "X-Region": "eu"}

    cleared = await patch(api, {"headers": None})
    assert cleared.json()["headers"] == {}
    assert dict((await stored(api)).spec.headers) == {}


async def test_null_puts_a_field_back_to_its_default(api: Api) -> None:
    await registered(api, timeout_s=3, rate_limit_per_s=5, enabled=False)
    response = await patch(
        api, {"secret": None, "timeout_s": None, "rate_limit_per_s": None, "enabled": None}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["secret"], body["timeout_s"], body["rate_limit_per_s"], body["enabled"]) == (
        None,
        10.0,
        None,
        True,
    )
    assert body["state"]["disabled_reason"] is None
    record = await stored(api)
    assert record.spec.secret is None and record.disabled_reason is None
    assert dict(record.spec.headers) == {"X-Token": "t0p", "X-Team": "blue"}


async def test_put_still_replaces_everything_the_secret_and_headers_included(api: Api) -> None:
    await registered(api)
    response = await api.client.put("/targets/billing", json={"url": URL})
    assert response.status_code == 200
    assert (response.json()["secret"], response.json()["headers"]) == (None, {})
    record = await stored(api)
    assert record.spec.secret is None and dict(record.spec.headers) == {}


async def test_an_empty_patch_changes_nothing_not_even_updated_at(api: Api) -> None:
    before = await registered(api)
    response = await patch(api, {})
    assert response.status_code == 200
    assert await stored(api) == before


async def test_a_target_disabled_by_a_gone_answer_keeps_its_reason_until_enabled(
    api: Api, sender: FakeSender
) -> None:
    await registered(api)
    sender.default = Reply(status=410)
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
    gone = "the target answered 410 Gone"
    assert (await stored(api)).disabled_reason == gone
    kept = await patch(api, {"max_attempts": 4})
    assert (kept.json()["enabled"], kept.json()["state"]["disabled_reason"]) == (False, gone)
    operator = await patch(api, {"enabled": False})
    assert operator.json()["state"]["disabled_reason"] == "disabled by an operator"
    enabled = await patch(api, {"enabled": True})
    assert (enabled.json()["enabled"], enabled.json()["state"]["disabled_reason"]) == (True, None)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"timeout_s": 0.01}, "timeout_s: Input should be greater than or equal to 0.1"),
        ({"max_concurrency": 0}, "max_concurrency: Input should be greater than or equal to 1"),
        # below the stored backoff_initial_s: only the merged target shows it
        ({"backoff_max_s": 5}, "backoff_max_s must be at least backoff_initial_s"),
        ({"secret": "plain"}, "secret: Value error, a secret starts with 'whsec_'"),
        ({"secret": f"{SECRET} whsec_c2hvcnQ="}, "secret 2 of 2: a secret holds at least 24"),
        ({"headers": {"Host": "evil"}}, "'Host' is set by csjd or is hop-by-hop"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "'x-a' is given twice"),
        ({"headers": {"X-A": "1", "x-a": None}}, "a header is named twice"),
        ({"url": None}, "url: Field required"),
        ({"url": "ftp://127.0.0.1/a"}, "a target URL uses http or https"),
        ({"url": "http://user:pw@127.0.0.1/a"}, "may not carry credentials"),
        ({"name": "other"}, "the body names target 'other' but the path names 'billing'"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        # RFC 7396 reads an array or a string as "replace the whole target": not one
        ([{"op": "replace", "path": "/timeout_s", "value": 1}], "body: Input should be a valid"),
        ("timeout_s", "body: Input should be a valid"),
    ],
)
async def test_a_patch_whose_result_a_put_would_refuse_is_422_and_changes_nothing(
    api: Api, body: Any, detail: str
) -> None:
    before = await registered(api, backoff_initial_s=10, backoff_max_s=20)
    response = await patch(api, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert SECRET not in response.text and "whsec_c2hvcnQ" not in response.text
    assert await stored(api) == before


async def test_a_patch_to_a_private_address_is_refused_unless_allowed(
    api_factory: ApiFactory,
) -> None:
    strict = await api_factory(allow_private_targets=False)
    put = await strict.client.put("/targets/out", json={"url": "https://93.184.216.34/a"})
    assert put.status_code == 201
    response = await patch(strict, {"url": "http://10.0.0.8/a"}, name="out")
    assert response.status_code == 422
    assert response.json()["type"].endswith("/refused-url")
    assert (await stored(strict, "out")).spec.url == "https://93.184.216.34/a"


async def test_a_target_whose_stored_address_is_now_refused_can_still_be_switched_off(
    api_factory: ApiFactory,
) -> None:
    # e.g. its host name moved to a private address since it was registered
    strict = await api_factory(allow_private_targets=False)
    put = await strict.client.put("/targets/out", json={"url": "https://93.184.216.34/a"})
    assert put.status_code == 201
    record = await stored(strict, "out")
    moved = replace(record.spec, url="http://10.0.0.8/a")
    store = strict.gateway.store
    now = strict.gateway.clock.now()
    assert await store.replace_target(moved, disabled_reason=None, seen=record.updated_at, now=now)
    response = await patch(strict, {"enabled": False}, name="out")
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is False
    # naming the URL is still checked
    response = await patch(strict, {"url": "http://10.0.0.9/a"}, name="out")
    assert response.status_code == 422


async def test_an_unknown_target_is_404(api: Api) -> None:
    response = await patch(api, {"timeout_s": 2}, name="nobody")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert await api.gateway.store.get_target("nobody") is None


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/xml"])
async def test_a_patch_in_another_media_type_is_415_naming_the_one_taken(
    api: Api, content_type: str
) -> None:
    before = await registered(api)
    response = await api.client.patch(
        "/targets/billing", content=b'{"timeout_s": 2}', headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["accept-patch"] == "application/merge-patch+json"
    assert "application/merge-patch+json" in response.json()["detail"]
    assert await stored(api) == before


async def test_a_patch_without_a_content_type_is_read_as_a_merge_patch(api: Api) -> None:
    await registered(api)
    # what `curl -X PATCH -d` sends: a form type, meaning the JSON it carries
    response = await api.client.patch(
        "/targets/billing",
        content=b'{"timeout_s": 2}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert (await stored(api)).spec.timeout_s == 2


async def test_a_patch_that_is_not_json_is_400(api: Api) -> None:
    before = await registered(api)
    response = await api.client.patch(
        "/targets/billing", content=b'{"timeout_s": ', headers=MERGE_PATCH
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert await stored(api) == before


class Interloper:
    """Changes the target through the store between a PATCH's read and its write,
    ``times`` times, as a concurrent PUT (another operator, another replica) would."""

    def __init__(self, api: Api, times: int) -> None:
        self.store = api.gateway.store
        self.clock = api.gateway.clock
        self.left = times
        self.read = self.store.get_target
        self.store.get_target = self.get_target  # type: ignore[method-assign]

    async def get_target(self, name: str) -> TargetRecord | None:
        record = await self.read(name)
        if record is not None and self.left > 0:
            self.left -= 1
            spec = replace(record.spec, max_attempts=record.spec.max_attempts + 1)
            await self.store.put_target(spec, self.clock.now())
        return record


async def test_a_change_made_between_a_patchs_read_and_write_is_kept(api: Api) -> None:
    await registered(api, max_attempts=3)
    Interloper(api, times=1)
    response = await patch(api, {"timeout_s": 2})
    assert response.status_code == 200, response.text
    # the patch was merged into the newer target, not written over it
    assert (response.json()["max_attempts"], response.json()["timeout_s"]) == (4, 2.0)
    record = await stored(api)
    assert (record.spec.max_attempts, record.spec.timeout_s) == (4, 2.0)


async def test_a_target_that_keeps_changing_under_a_patch_is_409_without_the_patch(
    api: Api,
) -> None:
    await registered(api, max_attempts=3)
    interloper = Interloper(api, times=100)
    response = await patch(api, {"timeout_s": 2})
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in response.headers
    interfered, interloper.left = 100 - interloper.left, 0
    assert interfered == PATCH_TRIES
    record = await stored(api)
    assert (record.spec.timeout_s, record.spec.max_attempts) == (10.0, 3 + interfered)


async def test_concurrent_patches_of_different_headers_lose_none(api: Api) -> None:
    await registered(api)
    responses = await asyncio.gather(
        *(patch(api, {"headers": {f"X-N{i}": str(i)}}) for i in range(8))
    )
    assert {r.status_code for r in responses} <= {200, 409}
    landed = {f"X-N{i}" for i, r in enumerate(responses) if r.status_code == 200}
    assert landed and landed <= set((await stored(api)).spec.headers)
