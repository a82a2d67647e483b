"""/ui: the dashboard's pages, its live numbers and script, its retry button, its
sign-in cookie and its escaping."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any

import httpx
import pytest

from app.api.dashboard import FRAME, Series, chart, nice, throughput, window
from app.api.pages import when
from app.core.outcome import FailureKind
from app.dispatch.sender import Failure
from app.storage.base import Activity
from app.storage.counts import minute_of
from app.testing import FakeClock, FakeSender, Reply
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


def cell(html: str, target: str, field: str) -> str:
    """The text of a target's cell ``<td data-field="{field}">``, tags removed."""
    found = re.search(
        rf'<tr data-target="{re.escape(target)}">.*?<td[^>]*data-field="{re.escape(field)}"'
        r"[^>]*>(.*?)</td>",
        html,
        re.DOTALL,
    )
    assert found is not None, f"no {field} cell for {target}"
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
    # a request counted by the sender may not have been recorded yet: wait for the answers
    await eventually(
        lambda: all(getattr(live(n), "inflight", 1) == 0 for n in ("billing", "flaky", "slow"))
    )
    for _ in range(1000):
        backlog = await api.gateway.store.backlog_by_target()
        if not any(counts.get("running") for counts in backlog.values()):
            break
        await asyncio.sleep(0.01)

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
        r"flaky \S+ enabled open probes in \d+ s — 16 / 16 0 0 0 0 5 Disable",
        row(targets, "target", "flaky"),
    )
    assert re.fullmatch(
        rf"slow {slow} enabled closed in (11\d s|2 min) {limit} / 16 0 0 0 0 1 Disable",
        row(targets, "target", "slow"),
    )
    # times are relative, the exact time on hover
    assert f'<time datetime="{paused_until}" title="{paused_until}">' in targets
    assert row(targets, "target", "gone") == (
        f"gone {gone} disabled the target answered 410 Gone closed — 16 / 16 0 0 0 0 0 Enable"
    )
    assert "Sign out" not in page  # no keys, nobody signed in


async def test_throughput_counts_jobs_accepted_succeeded_and_failed_in_the_last_minutes(
    api_factory: ApiFactory,
) -> None:
    sender = FakeSender()
    sender.script(STRICT, [Reply(status=400)])
    # halfway through a minute, and held there: every count lands in that minute
    clock = FakeClock(start=minute_of(time.time()) + 30.0)
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target("billing", url=HOOK)
    await api.put_target("strict", url=STRICT)
    await api.put_target("idle", url=HOOK)
    for i in range(3):
        await post_job(api, None, f"b{i}", "billing")
    await post_job(api, None, "s1", "strict")
    await settled(api)

    flows = section((await api.client.get("/ui")).text, "throughput")
    # accepted, succeeded, failed: totals of the last 15 minutes, then their chart
    for name, totals in (("billing", "3 3 0"), ("strict", "1 0 1"), ("idle", "0 0 0")):
        assert " ".join(cell(flows, name, k) for k in ("accepted", "succeeded", "failed")) == totals
    assert 'aria-label="billing, last 15 minutes: 3 accepted, 3 succeeded, 0 failed"' in flows
    now = api.gateway.clock.now()
    last = time.strftime("%H:%M", time.gmtime(minute_of(now)))
    assert f"<title>{last} UTC: 3 accepted, 3 succeeded, 0 failed</title>" in flows
    assert f"<title>{last} UTC: 1 accepted, 0 succeeded, 1 failed</title>" in flows


def test_throughput_puts_each_count_in_its_minute() -> None:
    minutes = [60, 120, 180]
    rows = [
        Activity(target="billing", minute=60, accepted=8, succeeded=0, failed=0),
        Activity(target="billing", minute=180, accepted=1, succeeded=2, failed=1),
        Activity(target="old", minute=120, accepted=0, succeeded=0, failed=2),  # deleted
        Activity(target="billing", minute=600, accepted=0, succeeded=1, failed=0),  # outside
    ]
    series = throughput(rows, ["billing", "idle"], minutes)
    assert list(series) == ["billing", "idle"]
    assert series["billing"]["accepted"] == Series([8, 0, 1])
    assert series["billing"]["succeeded"] == Series([0, 0, 2])
    assert series["billing"]["failed"].per_minute == pytest.approx(1 / 3)
    assert series["idle"]["failed"].total == 0
    assert window(1_800_000_059.9) == [1_800_000_000 - 60 * i for i in range(14, -1, -1)]


def test_the_chart_stacks_failed_on_succeeded_under_a_line_of_accepted_scaled_to_a_round_top() -> (
    None
):
    minutes = [0, 60, 120]
    series = {
        "accepted": Series([10, 0, 3]),
        "succeeded": Series([4, 6, 0]),
        "failed": Series([2, 0, 0]),
    }
    drawn = chart("billing", series, minutes)
    assert (
        drawn.top == 10
    )  # the busiest minute (10 accepted), rounded up to 1, 2 or 5 times a power of ten
    base, span = FRAME.baseline, FRAME.baseline - FRAME.top_y
    # a bar per minute: succeeded from the baseline, failed on top of it
    assert drawn.bars[0] == (base - 0.4 * span, 0.4 * span, base - 0.6 * span, 0.2 * span)
    assert drawn.bars[2] == (base, 0.0, base, 0.0)
    # the accepted line runs through each minute's middle, the busiest at the top
    assert drawn.accepted == f"10,{FRAME.top_y:g} 30,{base:g} 50,{base - 0.3 * span:g}"
    assert drawn.tips[0] == "00:00 UTC: 10 accepted, 4 succeeded, 2 failed"
    assert drawn.label == "billing, last 3 minutes: 13 accepted, 10 succeeded, 2 failed"
    assert [nice(n) for n in (0, 1, 3, 7, 11, 450, 501)] == [1, 1, 5, 10, 20, 500, 1000]
    svg = chart("<b>", series, minutes).svg()
    assert 'aria-label="&lt;b&gt;, last 3 minutes' in svg and "<b>" not in svg
    assert svg.count('<rect class="s"') == svg.count("<title>") == 3


@pytest.mark.parametrize(
    ("offset", "words"),
    [
        (-5.5, "5 s ago"),
        (0, "0 s ago"),
        (-150, "2 min ago"),
        (7300, "in 2 h"),
        (-3 * 86400, "3 days ago"),
    ],
)
def test_times_are_told_relative_to_now(offset: float, words: str) -> None:
    assert when(1000 + offset, 1000) == words


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
    assert page.count("<script") == 1  # the dashboard's own, and no other
    assert "&lt;script&gt;alert(&#39;key&#39;)&lt;/script&gt;" in page
    assert "alert(&#39;error&#39;)" not in page  # the failure's detail is for the log only
    assert "connection refused" in page


async def test_pages_run_only_their_own_script_and_allow_no_framing_and_no_caching(
    api: Api,
) -> None:
    response = await api.client.get("/ui")
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert policy == {
        "default-src": "'none'",
        "script-src": "'self'",
        "connect-src": "'self'",
        "style-src": "'unsafe-inline'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
    }
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    # one script, from here; without it the page reloads itself
    [src] = re.findall(r'<script src="([^"]+)" defer></script>', page)
    assert re.fullmatch(r"/ui/static/live\.js\?v=[0-9a-f]{12}", src)
    assert '<noscript><meta http-equiv="refresh" content="10"></noscript>' in page
    assert "<script>" not in page and " on" + "click=" not in page


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


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}],
)
async def test_without_keys_a_form_from_another_origin_is_refused_too(
    api_factory: ApiFactory, headers: dict[str, str]
) -> None:
    sender = FakeSender()
    sender.script(STRICT, [Reply(status=400)])
    api = await api_factory(sender=sender)
    await api.put_target("strict", url=STRICT)
    job_id = await post_job(api, None, "order-1", "strict")
    await settled(api)
    for path in (f"/ui/jobs/{job_id}/retry", "/ui/targets/strict/disable"):
        refused = await api.client.post(path, headers=headers)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"] == "application/problem+json"
    assert (await api.client.get(f"/jobs/{job_id}")).json()["state"] == "failed"
    assert (await api.client.get("/targets/strict")).json()["enabled"] is True
    # the dashboard's own forms, and clients that are not browsers, still work
    own = await api.client.post(f"/ui/jobs/{job_id}/retry", headers={"Origin": "http://csjd.test"})
    assert own.status_code == 303


# -- the live view: /ui/live.json and the script that polls it ---------------------------------


async def test_live_json_has_each_targets_state_backlog_and_minutes(
    api_factory: ApiFactory,
) -> None:
    sender = FakeSender()
    sender.script(STRICT, [Reply(status=400)])
    api = await api_factory(sender=sender)
    await api.put_target("billing", url=HOOK, max_concurrency=4)
    await api.put_target("strict", url=STRICT)
    await api.put_target("parked", url=HOOK, enabled=False)
    await post_job(api, None, "b1", "billing")
    failed = await post_job(api, None, "s1", "strict")
    await post_job(api, None, "p1", "parked")
    await post_job(api, None, "p2", "parked")
    await settled_but(api, 2)

    response = await api.client.get("/ui/live.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    live = response.json()
    now = api.gateway.clock.now()
    assert abs(datetime.fromisoformat(live["now"]).timestamp() - now) < 5
    assert len(live["minutes"]) == 15
    assert datetime.fromisoformat(live["minutes"][-1]).timestamp() == minute_of(now)
    assert [t["name"] for t in live["targets"]] == ["billing", "parked", "strict"]
    billing, parked, strict = live["targets"]
    assert (billing["enabled"], billing["breaker"], billing["max_concurrency"]) == (
        True,
        "closed",
        4,
    )
    assert billing["backlog"] == {"scheduled": 0, "queued": 0, "running": 0, "retrying": 0}
    assert billing["throughput"]["succeeded"]["counts"] == [0] * 14 + [1]
    assert (parked["enabled"], parked["backlog"]["queued"]) == (False, 2)
    assert parked["throughput"]["accepted"]["total"] == 2
    assert strict["throughput"]["failed"] == {
        "counts": [0] * 14 + [1],
        "total": 1,
        "per_minute": 0.1,
    }
    chart = strict["chart"]
    assert (chart["top"], len(chart["bars"]), len(chart["tips"])) == (1, 15, 15)
    assert chart["label"] == "strict, last 15 minutes: 1 accepted, 0 succeeded, 1 failed"
    assert live["newest_failed"] == failed


async def settled_but(api: Api, waiting: int) -> None:
    """Wait until only ``waiting`` jobs are left unfinished."""
    await eventually(lambda: api.gateway.store.active == waiting)


class Reads:
    """The app's store, with a record of what is asked of it."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not callable(found):
            return found

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return found(*args, **kwargs)

        return recorded


async def test_the_live_numbers_read_no_job_but_the_newest_failed_one(api: Api) -> None:
    """What keeps a refresh's cost to the targets': counts kept per target and
    minute, and one failed job, however many jobs are stored."""
    await api.put_target("billing")
    reads = Reads(api.gateway.store)
    api.gateway.store = reads
    try:
        assert (await api.client.get("/ui/live.json")).status_code == 200
    finally:
        api.gateway.store = reads._store
    assert [name for name, _ in reads.calls] == [
        "list_targets",
        "backlog_by_target",
        "activity",
        "list_jobs",
    ]
    assert reads.calls[-1][1]["limit"] == 1


async def test_the_live_numbers_and_the_script_are_for_admins_only(secured: Api) -> None:
    for path in ("/ui/live.json", "/ui/static/live.js"):
        for headers in ({}, bearer(ALICE)):
            response = await secured.client.get(path, headers=headers)
            assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
        assert (await secured.client.get(path, headers=bearer(OPS))).status_code == 200
    await signed_in(secured)
    assert (await secured.client.get("/ui/live.json")).json()["targets"][0]["name"] == "billing"


async def test_the_script_is_served_from_the_package_and_kept_by_its_version(api: Api) -> None:
    page = (await api.client.get("/ui")).text
    [src] = re.findall(r'<script src="([^"]+)"', page)
    response = await api.client.get(src)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    shipped = resources.files("app").joinpath("static", "live.js").read_bytes()
    assert response.content == shipped
    assert hashlib.sha256(shipped).hexdigest()[:12] == src.rsplit("=", 1)[1]
    assert (await api.client.get("/ui/static/other.js")).status_code == 404


async def test_the_page_marks_what_the_script_redraws(api_factory: ApiFactory) -> None:
    api = await api_factory(sender=FakeSender())
    await api.put_target("billing", url=HOOK)
    page = (await api.client.get("/ui")).text
    assert 'data-live="/ui/live.json" data-poll-s="5"' in page
    targets = section(page, "targets")
    for field in ("status", "breaker", "paused", "limit", "inflight", "backlog.queued", "switch"):
        assert f'data-field="{field}"' in targets
    chart = section(page, "throughput")
    assert chart.count('<rect class="s"') == chart.count('<rect class="f"') == 15
    assert chart.count("<polyline") == 1 and "<title>" in chart
    assert re.search(r'<span id="updated"><time datetime="[^"]+Z" title="[^"]+Z">', page)


async def test_the_page_lists_each_schedule_with_its_next_and_last_fire(
    api_factory: ApiFactory,
) -> None:
    clock = FakeClock(1_800_000_000.0 - 90)  # 2027-01-15T07:58:30Z
    api = await api_factory(clock=clock)
    await api.put_target("billing")
    await api.put_target("parked", enabled=False)
    cron = {"cron": "*/5 * * * *", "target": "billing", "payload": {"n": 1}}
    assert (await api.client.put("/schedules/reports", json=cron)).status_code == 201
    skipping = {**cron, "target": "parked", "cron": "0 8 * * *"}
    assert (await api.client.put("/schedules/parked-run", json=skipping)).status_code == 201
    off = {**cron, "enabled": False}
    assert (await api.client.put("/schedules/off", json=off)).status_code == 201
    clock.t = 1_800_000_000.0 - 1_800_000_000.0 % 300 + 1
    await api.gateway.scheduler.tick()
    html = (await api.client.get("/ui")).text
    reports = (await api.client.get("/schedules/reports")).json()
    assert row(html, "schedule", "reports").startswith("reports */5 * * * * UTC billing in ")
    assert f'href="/ui/jobs/{reports["last_job_id"]}"' in html
    assert "skipped: the target &#39;parked&#39; is disabled" in html
    assert row(html, "schedule", "off").startswith("off */5 * * * * UTC billing disabled never")


async def test_without_schedules_the_page_says_how_to_make_one(api: Api) -> None:
    html = (await api.client.get("/ui")).text
    assert 'id="no-schedules"' in html and "PUT /schedules/{name}" in html
