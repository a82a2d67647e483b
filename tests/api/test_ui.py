"""/ui: the dashboard's pages, its retry button, its sign-in cookie and its escaping."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import httpx
import pytest

from app.api.routes.ui import Series, throughput
from app.core.outcome import FailureKind
from app.dispatch.sender import Failure
from app.storage.base import Activity
from app.testing import FakeSender, Reply
from tests.conftest import Api, ApiFactory

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef012"
OPS = "ops-token-0123456789abcdef0123"
KEYS = f"alice:{ALICE}:producer,bob:{BOB}:producer,ops:{OPS}:admin"
HOOK = "http://127.0.0.1:9/hook"
STRICT = "http://127.0.0.1:9/strict"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def row(html: str, attribute: str, value: str) -> str:
    """The text of the first row ``<tr data-{attribute}="{value}">``, tags removed."""
    found = re.search(rf'<tr data-{attribute}="{re.escape(value)}">(.*?)</tr>', html, re.DOTALL)
    assert found is not None, f"no row for {attribute}={value}"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def section(html: str, table_id: str) -> str:
    start = html.index(f'<table id="{table_id}">')
    return html[start : html.index("</table>", start)]


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        await asyncio.sleep(0.01)


async def post_job(api: Api, token: str | None, key: str, target: str) -> str:
    headers = {"Idempotency-Key": key, **(bearer(token) if token else {})}
    response = await api.client.post(
        "/jobs", json={"target": target, "payload": {"n": 1}}, headers=headers
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def settled(api: Api) -> None:
    """Wait until no job is left to deliver (every test job finishes on its first answer)."""
    await eventually(lambda: api.gateway.store.active == 0)


@pytest.fixture
async def secured(api_factory: ApiFactory, sender: FakeSender) -> Api:
    """Keys on; ``strict`` answers 400 (the job fails) until a test says otherwise."""
    sender.script(STRICT, [Reply(status=400, body=b"no such order")] * 3)
    api = await api_factory(sender=sender, api_keys=KEYS)
    for name, url in (("billing", HOOK), ("strict", STRICT)):
        created = await api.client.put(f"/targets/{name}", json={"url": url}, headers=bearer(OPS))
        assert created.status_code == 201, created.text
    return api


async def signed_in(api: Api, token: str = OPS) -> httpx.Response:
    response = await api.client.post("/ui/login", data={"token": token})
    assert response.status_code == 303, response.text
    return response


# -- what the page shows ---------------------------------------------------------------


async def test_the_page_shows_each_targets_breaker_pause_limit_backlog_and_status(
    api_factory: ApiFactory,
) -> None:
    sender = FakeSender()
    flaky, slow, gone = (f"http://127.0.0.1:9/{n}" for n in ("flaky", "slow", "gone"))
    sender.script(flaky, [Reply(status=500)] * 5)
    sender.script(slow, [Reply(status=429, headers={"Retry-After": "120"})])
    sender.script(gone, [Reply(status=410)])
    api = await api_factory(sender=sender)
    await api.put_target("billing", url=HOOK, max_concurrency=4)
    await api.put_target("flaky", url=flaky, backoff_initial_s=60, backoff_max_s=60)
    await api.put_target("slow", url=slow)
    await api.put_target("gone", url=gone)
    for i in range(5):
        await post_job(api, None, f"flaky-{i}", "flaky")
    for name in ("slow", "gone", "billing"):
        await post_job(api, None, f"{name}-1", name)
    await eventually(lambda: len(sender.requests) == 8)
    live = api.gateway.dispatcher.live_state
    await eventually(lambda: getattr(live("flaky"), "breaker", "") == "open")
    await eventually(lambda: getattr(live("slow"), "concurrency_limit", 16) < 16)

    response = await api.client.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    targets = section(page, "targets")
    paused_until = (await api.client.get("/targets/slow")).json()["state"]["paused_until"]
    limit = live("slow").concurrency_limit  # type: ignore[union-attr]
    # name url, status, breaker, paused until, limit / max, in flight, then the backlog:
    # scheduled, queued, running, retrying; then the button that switches it
    assert row(targets, "target", "billing") == (
        "billing http://127.0.0.1:9/hook enabled closed — 4 / 4 0 0 0 0 0 Disable"
    )
    assert re.fullmatch(
        r"flaky \S+ enabled open probes at \S+Z — 16 / 16 0 0 0 0 5 Disable",
        row(targets, "target", "flaky"),
    )
    assert row(targets, "target", "slow") == (
        f"slow {slow} enabled closed {paused_until} {limit} / 16 0 0 0 0 1 Disable"
    )
    assert row(targets, "target", "gone") == (
        f"gone {gone} disabled the target answered 410 Gone closed — 16 / 16 0 0 0 0 0 Enable"
    )
    assert "Sign out" not in page  # no keys, nobody signed in


async def test_throughput_counts_jobs_accepted_succeeded_and_failed_in_the_last_minutes(
    api_factory: ApiFactory,
) -> None:
    sender = FakeSender()
    sender.script(STRICT, [Reply(status=400)])
    api = await api_factory(sender=sender)
    await api.put_target("billing", url=HOOK)
    await api.put_target("strict", url=STRICT)
    for i in range(3):
        await post_job(api, None, f"b{i}", "billing")
    await post_job(api, None, "s1", "strict")
    await settled(api)

    flows = section((await api.client.get("/ui")).text, "throughput")
    quiet = "·" * 14
    # accepted, then succeeded, then failed: each a total and a per-minute line
    assert row(flows, "target", "billing") == f"billing 3 {quiet}█ 3 {quiet}█ 0 {quiet}·"
    assert row(flows, "target", "strict") == f"strict 1 {quiet}█ 0 {quiet}· 1 {quiet}█"


def test_throughput_puts_each_count_in_its_minute_and_scales_the_line_to_the_busiest() -> None:
    rows = [
        Activity(target="billing", kind="accepted", bucket=0, count=8),
        Activity(target="billing", kind="accepted", bucket=2, count=1),
        Activity(target="old", kind="failed", bucket=1, count=2),
        Activity(target="billing", kind="succeeded", bucket=9, count=1),  # out of the window
    ]
    series = throughput(rows, ["billing", "idle"], buckets=3)
    assert list(series) == ["billing", "idle", "old"]  # a deleted target's jobs still count
    assert series["billing"]["accepted"] == Series([8, 0, 1])
    assert series["billing"]["accepted"].spark == "█·▁"
    assert series["billing"]["succeeded"].total == 0
    assert series["idle"]["failed"].spark == "···"
    assert series["old"]["failed"].per_minute == pytest.approx(2 / 3)


async def test_failed_jobs_of_every_caller_are_listed_newest_first_with_a_retry_button(
    secured: Api,
) -> None:
    alice = await post_job(secured, ALICE, "order-1", "strict")
    await settled(secured)
    bob = await post_job(secured, BOB, "order-1", "strict")
    await settled(secured)
    await post_job(secured, BOB, "order-2", "billing")  # succeeds: not listed
    await settled(secured)

    page = (await secured.client.get("/ui", headers=bearer(OPS))).text
    failed = section(page, "failed")
    assert failed.index(bob) < failed.index(alice)
    assert re.fullmatch(
        rf"{bob} key: order-1 bob strict 1 / 10 \d+ s ago permanent_status 400 HTTP 400 Retry",
        row(failed, "job", bob),
    )
    assert row(failed, "job", alice).startswith(f"{alice} key: order-1 alice strict")
    assert f'action="/ui/jobs/{alice}/retry"' in failed
    assert failed.count('class="retry"') == 2
    assert "signed in as <strong>ops</strong>" in page


async def test_the_retry_button_queues_a_failed_job_again_for_its_caller_and_says_so(
    secured: Api, sender: FakeSender
) -> None:
    job_id = await post_job(secured, ALICE, "order-1", "strict")
    await settled(secured)
    await signed_in(secured)
    sender.script(STRICT, [])  # the target is fixed: 200 from now on

    retried = await secured.client.post(f"/ui/jobs/{job_id}/retry")
    assert (retried.status_code, retried.headers["location"]) == (303, "/ui")
    page = (await secured.client.get("/ui")).text
    assert 'class="flash ok"' in page
    assert f"Job {job_id} is queued again for alice." in page
    assert 'id="flash"' not in (await secured.client.get("/ui")).text  # told once

    await settled(secured)
    job = (await secured.client.get(f"/jobs/{job_id}", headers=bearer(ALICE))).json()
    assert (job["state"], job["attempts"]) == ("succeeded", 1)
    assert 'id="no-failed"' in (await secured.client.get("/ui")).text


async def test_a_retry_that_cannot_be_done_says_why(secured: Api) -> None:
    parked = {"url": HOOK, "enabled": False}  # its job stays queued: not finished
    await secured.client.put("/targets/billing", json=parked, headers=bearer(OPS))
    job_id = await post_job(secured, ALICE, "order-1", "billing")
    await signed_in(secured)

    refused = await secured.client.post(f"/ui/jobs/{job_id}/retry")
    assert refused.status_code == 303
    page = (await secured.client.get("/ui")).text
    assert 'class="flash error"' in page
    assert f"Job {job_id} was not retried: a queued job cannot be retried" in page

    await secured.client.post("/ui/jobs/00000000-0000-7000-8000-000000000000/retry")
    assert (
        "There is no job 00000000-0000-7000-8000-000000000000."
        in (await secured.client.get("/ui")).text
    )


async def test_what_callers_sent_is_shown_escaped_and_what_the_network_said_not_at_all(
    api_factory: ApiFactory,
) -> None:
    sender = FakeSender()
    sender.default = Failure(
        kind=FailureKind.CONNECTION_REFUSED, message="<script>alert('error')</script>"
    )
    api = await api_factory(sender=sender)
    await api.put_target("billing", url=HOOK, max_attempts=1)
    await post_job(api, None, "<script>alert('key')</script>", "billing")
    await settled(api)

    page = (await api.client.get("/ui")).text
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#39;key&#39;)&lt;/script&gt;" in page
    assert "alert(&#39;error&#39;)" not in page  # the failure's detail is for the log only
    assert "connection refused" in page


async def test_pages_allow_no_script_no_framing_and_no_caching(api: Api) -> None:
    response = await api.client.get("/ui")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    assert response.headers["cache-control"] == "no-store"


async def test_the_dashboard_is_not_part_of_the_api_schema(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/ui")]


# -- signing in and out -----------------------------------------------------------------


async def test_without_keys_there_is_no_sign_in(api: Api) -> None:
    for method in ("GET", "POST"):
        response = await api.client.request(method, "/ui/login")
        assert (response.status_code, response.headers["location"]) == (303, "/ui")
    assert (await api.client.get("/ui")).status_code == 200
    assert (await api.client.post("/ui/jobs/x/retry")).status_code == 303


async def test_a_page_asked_for_without_an_admin_credential_redirects_to_the_sign_in_form(
    secured: Api,
) -> None:
    for headers in ({}, bearer("not-a-key"), bearer(ALICE)):
        response = await secured.client.get("/ui", headers=headers)
        assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    form = await secured.client.get("/ui/login")
    assert form.status_code == 200
    assert 'name="token" type="password"' in form.text and 'action="/ui/login"' in form.text
    assert (await secured.client.get("/ui", headers=bearer(OPS))).status_code == 200


async def test_a_post_without_an_admin_credential_is_a_problem(secured: Api) -> None:
    for headers, status in (({}, 401), (bearer("not-a-key"), 401), (bearer(ALICE), 403)):
        response = await secured.client.post("/ui/jobs/x/retry", headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"


async def test_signing_in_with_an_admin_token_sets_a_strict_http_only_cookie_for_ui_only(
    secured: Api,
) -> None:
    response = await signed_in(secured)
    assert response.headers["location"] == "/ui"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("csjd_ui=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back

    page = await secured.client.get("/ui")
    assert page.status_code == 200 and "signed in as <strong>ops</strong>" in page.text
    # the cookie opens the dashboard, not the API
    assert secured.client.cookies.get("csjd_ui")
    assert (await secured.client.get("/targets")).status_code == 401
    assert (
        await secured.client.get("/targets", headers={"Cookie": f"csjd_ui={OPS}"})
    ).status_code == 401


async def test_over_https_the_cookie_is_secure(secured: Api) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=secured.app), base_url="https://csjd.test"
    ) as client:
        response = await client.post("/ui/login", data={"token": OPS})
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower().split("; ")


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        (ALICE, 403, "The API key &#39;alice&#39; is a producer key"),
        ("not-a-key", 401, "That token is not a known API key."),
        ("", 401, "That token is not a known API key."),
    ],
)
async def test_signing_in_with_any_other_token_is_refused_and_says_why(
    secured: Api, token: str, status: int, message: str
) -> None:
    response = await secured.client.post("/ui/login", data={"token": token})
    assert response.status_code == status
    assert message in response.text
    assert "set-cookie" not in response.headers
    assert (await secured.client.get("/ui")).status_code == 303


async def test_signing_out_clears_the_cookie(secured: Api) -> None:
    await signed_in(secured)
    response = await secured.client.post("/ui/logout")
    assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    assert not secured.client.cookies.get("csjd_ui")
    assert (await secured.client.get("/ui")).status_code == 303


async def test_a_cookie_whose_key_is_unknown_is_dropped_on_the_way_to_the_sign_in_form(
    secured: Api,
) -> None:
    secured.client.cookies.set(
        "csjd_ui", "removed-key-0123456789abcdef", domain="csjd.test", path="/ui"
    )
    response = await secured.client.get("/ui")
    assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    assert response.headers["set-cookie"].startswith('csjd_ui=""')
    assert (await secured.client.post("/ui/jobs/x/retry")).status_code == 401


async def test_a_producer_token_in_the_cookie_opens_nothing(secured: Api) -> None:
    secured.client.cookies.set("csjd_ui", ALICE, domain="csjd.test", path="/ui")
    assert (await secured.client.post("/ui/jobs/x/retry")).status_code == 403
    assert (await secured.client.get("/ui")).status_code == 303


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.csjd.test:9999"},
        {"Origin": "null"},
    ],
)
async def test_a_form_from_another_origin_is_refused_even_with_the_cookie(
    secured: Api, sender: FakeSender, headers: dict[str, str]
) -> None:
    job_id = await post_job(secured, ALICE, "order-1", "strict")
    await settled(secured)
    await signed_in(secured)
    sender.script(STRICT, [])
    refused = await secured.client.post(f"/ui/jobs/{job_id}/retry", headers=headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    job = (await secured.client.get(f"/jobs/{job_id}", headers=bearer(ALICE))).json()
    assert job["state"] == "failed"
    # the dashboard's own forms still work, as a browser labels them
    for own in ({"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://csjd.test"}):
        assert (
            await secured.client.post(f"/ui/jobs/{job_id}/retry", headers=own)
        ).status_code == 303
