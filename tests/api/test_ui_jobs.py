"""/ui/jobs: the job page, the job list and its filters, retrying every job a filter
matches, and the targets' enable and disable buttons; with keys on and off."""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from typing import Any

import pytest

from app.api.cursors import encode_cursor
from app.api.routes import ui_job, ui_jobs
from app.api.routes.ui_jobs import BulkRetry
from app.core.job import JobState
from app.core.target import TargetSpec
from app.core.timeline import timeline
from app.storage.base import JobFilter
from app.testing import FakeClock, FakeSender, Reply
from tests.api.test_ui import (
    ALICE,
    BOB,
    HOOK,
    KEYS,
    OPS,
    STRICT,
    bearer,
    eventually,
    post_job,
    settled,
    signed_in,
)
from tests.conftest import Api, ApiFactory

FINAL = ("succeeded", "failed", "cancelled")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: what a target answered and a caller sent, each trying to become markup
EVIL = "<script>alert('x')</script>"


def rows(page: str, table_id: str) -> list[str]:
    """The text of each body row of ``<table id="{table_id}">``, tags removed."""
    table = re.search(rf'<table[^>]* id="{table_id}">(.*?)</table>', page, re.DOTALL)
    assert table is not None, f"no table #{table_id}"
    body = re.sub(r"<thead>.*?</thead>", "", table.group(1), flags=re.DOTALL)
    found = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.DOTALL)
    return [html.unescape(" ".join(re.sub(r"<[^>]+>", " ", r).split())) for r in found]


def listed(page: str) -> list[str]:
    """The job ids of the job list, in the order shown."""
    if 'id="no-jobs"' in page:
        return []
    return re.findall(r'<tr data-job="([^"]+)">', page)


def link(page: str, link_id: str) -> str:
    found = re.search(rf'<a\b[^>]*\bid="{link_id}"[^>]*>', page)
    assert found is not None, f"no link #{link_id}"
    href = re.search(r'href="([^"]*)"', found.group(0))
    assert href is not None
    return html.unescape(href.group(1))


def flash(page: str) -> str:
    found = re.search(r'<p class="flash (\w+)" role="status" id="flash">(.*?)</p>', page)
    assert found is not None, "no flash"
    return f"{found.group(1)}: {html.unescape(found.group(2))}"


def hidden(page: str) -> dict[str, str]:
    """The hidden fields of the page's form, as a browser would post them."""
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)
    return {name: html.unescape(value) for name, value in found}


async def press(api: Api, confirm_at: str) -> str:
    """Open the confirmation page, confirm it; where the answer leads, and its flash."""
    confirm = (await api.client.get(confirm_at)).text
    done = await api.client.post("/ui/jobs/retry-all", data=hidden(confirm))
    assert done.status_code == 303
    location = str(done.headers["location"])
    return f"{location} {flash((await api.client.get(location)).text)}"


@pytest.fixture
async def ops(api_factory: ApiFactory, sender: FakeSender) -> Api:
    """Keys on, an admin signed in; ``billing`` takes every job, ``strict`` (with a
    secret and a header) refuses them (400) until a test scripts it otherwise."""
    sender.script(STRICT, [Reply(status=400, body=b"no such order")] * 20)
    api = await api_factory(sender=sender, api_keys=KEYS)
    await put(api, "billing", url=HOOK)
    await put(api, "strict", url=STRICT, secret=SECRET, headers={"X-Tenant": "t-very-private"})
    await signed_in(api)
    return api


async def put(api: Api, name: str, **body: Any) -> None:
    answer = await api.client.put(f"/targets/{name}", json=body, headers=bearer(OPS))
    assert answer.status_code in (200, 201), answer.text


async def state_of(api: Api, job_id: str, state: str) -> dict[str, Any]:
    """The job once it is in ``state`` (and finished, if that is a final state)."""
    deadline = time.monotonic() + 10
    while True:
        job: dict[str, Any] = await api_json(api, f"/jobs/{job_id}")
        if job["state"] == state and (job["completed_at"] or state not in FINAL):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} never got to {state}: {job}")
        await asyncio.sleep(0.01)


async def held(api: Api, job_id: str) -> None:
    """Once the dispatcher has seen the target disabled, its job is held by it."""
    deadline = time.monotonic() + 10
    while (await api_json(api, f"/jobs/{job_id}"))["held_by"] != "disabled":
        assert time.monotonic() < deadline, "the job was never held"
        await asyncio.sleep(0.01)


async def api_json(api: Api, path: str) -> Any:
    answer = await api.client.get(path, headers=bearer(OPS))
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- the job page ------------------------------------------------------------------------


async def test_the_job_page_shows_the_job_its_attempts_and_the_timeline_the_api_tells(
    ops: Api, sender: FakeSender
) -> None:
    sender.script(
        STRICT,
        [
            Reply(status=500, body=b"busy"),
            Reply(status=400, body=EVIL.encode(), headers={"Content-Type": "text/html"}),
        ],
    )
    await put(ops, "strict", url=STRICT, secret=SECRET, headers={"X-Tenant": "t-very-private"},
              backoff_initial_s=0.01, backoff_max_s=0.01)  # fmt: skip
    sent = await ops.client.post(
        "/jobs",
        json={
            "target": "strict",
            "payload": {"order": 7, "note": EVIL},
            "headers": {"X-Ref": EVIL},
        },
        headers={"Idempotency-Key": "order-7", **bearer(ALICE)},
    )
    job_id = sent.json()["id"]
    await settled(ops)

    response = await ops.client.get(f"/ui/jobs/{job_id}")
    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = response.text
    assert "<script" not in page  # nothing a caller or a target sent is markup
    assert 'id="state">failed</span>' in page
    summary = rows(page, "summary")
    assert summary[0] == "Now failed: permanent_status"
    assert "Caller alice" in summary and "Attempts 2 / 10" in summary
    assert "Idempotency key order-7" in summary and "Failure reason permanent_status" in summary
    assert "Last answer 400 HTTP 400" in summary
    created = (await api_json(ops, f"/jobs/{job_id}"))["created_at"]
    # a relative time, the exact one on hover
    assert re.search(rf'<time datetime="{created}" title="{created}">\d+ s ago</time>', page)

    # the payload as pretty JSON, escaped
    assert '<pre class="block" id="payload">{\n  &#34;order&#34;: 7,' in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    # the job's own header values shown; the target's masked, its secret never
    assert rows(page, "job-headers") == [f"X-Ref {EVIL}"]
    assert rows(page, "target-headers") == ["X-Tenant ********", "signing secret ********"]
    assert "t-very-private" not in page and SECRET not in page

    attempts = await api_json(ops, f"/jobs/{job_id}/attempts")
    first, second = rows(page, "attempts")
    assert re.fullmatch(r"1 \d+ s ago [\d.]+ ms 500 retryable HTTP 500 4 busy", first)
    assert re.fullmatch(
        rf"2 \d+ s ago [\d.]+ ms 400 permanent HTTP 400 text/html {len(EVIL)} {re.escape(EVIL)}",
        second,
    )
    # the timeline the CLI tells, from the API's own answers
    detail = await api_json(ops, f"/jobs/{job_id}")
    told = [f"{e.at or ''} {e.what} {e.detail}".strip() for e in timeline(detail, attempts)]
    shown = [re.sub(r" \d+ s ago", "", r) for r in rows(page, "timeline")]
    assert shown == told
    assert told[-1].endswith("failed permanent_status") and len(told) == 6

    # what can be done: retry, not cancel
    assert 'id="retry">Retry</button>' in page and 'id="cancel"' not in page
    assert '<a href="/ui/jobs?target=strict">strict</a>' in page


async def test_a_job_held_back_says_why_and_can_be_cancelled_then_retried(ops: Api) -> None:
    await put(ops, "billing", url=HOOK, enabled=False)
    job_id = await post_job(ops, BOB, "order-1", "billing")
    here = f"/ui/jobs/{job_id}"
    await held(ops, job_id)

    page = (await ops.client.get(here)).text
    summary = rows(page, "summary")
    assert summary[0] == "Now queued, due: held: the target is disabled"
    assert "Held the target is disabled, no end known held_by=disabled" in summary
    assert 'id="cancel">Cancel</button>' in page and 'id="retry"' not in page
    assert rows(page, "timeline")[-1].endswith("queued, due held: the target is disabled")
    assert 'id="no-attempts">No attempt yet.' in page

    cancelled = await ops.client.post(f"{here}/cancel", data={"back": here})
    assert (cancelled.status_code, cancelled.headers["location"]) == (303, here)
    page = (await ops.client.get(here)).text
    assert flash(page) == f"ok: Job {job_id} is cancelled for bob."
    assert 'id="state">cancelled</span>' in page and 'id="retry">Retry</button>' in page
    assert 'id="flash"' not in (await ops.client.get(here)).text  # told once

    await put(ops, "billing", url=HOOK)
    await ops.client.post(f"{here}/retry", data={"back": here})
    assert flash((await ops.client.get(here)).text) == f"ok: Job {job_id} is queued again for bob."
    await settled(ops)
    assert (await api_json(ops, f"/jobs/{job_id}"))["state"] == "succeeded"


async def test_a_job_held_until_a_known_time_says_until_when(ops: Api, sender: FakeSender) -> None:
    sender.script(HOOK, [Reply(status=429, headers={"Retry-After": "120"})])
    job_id = await post_job(ops, ALICE, "order-1", "billing")
    deadline = time.monotonic() + 10
    while (job := await api_json(ops, f"/jobs/{job_id}"))["held_by"] != "pause":
        assert time.monotonic() < deadline, f"never paused: {job}"
        await asyncio.sleep(0.01)

    page = (await ops.client.get(f"/ui/jobs/{job_id}")).text
    until = job["held_until"]
    assert re.search(
        r"<th>Held</th><td[^>]*>the target asked for a pause \(429/503 Retry-After\) until "
        rf'<time datetime="{until}" title="{until}">in (1\d\d s|2 min)</time>',
        page,
    )


async def test_a_succeeded_job_is_sent_again_with_its_history_kept(ops: Api) -> None:
    job_id = await post_job(ops, ALICE, "order-1", "billing")
    await settled(ops)
    here = f"/ui/jobs/{job_id}"
    page = (await ops.client.get(here)).text
    assert 'id="retry">Send again</button>' in page and 'id="cancel"' not in page

    await ops.client.post(f"{here}/retry", data={"back": here})
    assert flash((await ops.client.get(here)).text) == (
        f"ok: Job {job_id} will be sent again for alice."
    )
    await settled(ops)
    page = (await ops.client.get(here)).text
    assert [r.split()[0] for r in rows(page, "attempts")] == ["1", "2"]
    assert 'id="state">succeeded</span>' in page


async def test_a_button_that_cannot_act_says_why(ops: Api, sender: FakeSender) -> None:
    sender.script(HOOK, [Reply(delay_s=1.0)])
    running = await post_job(ops, ALICE, "slow", "billing")
    await eventually(lambda: ops.gateway.store.active == 1 and len(sender.requests) == 1)
    here = f"/ui/jobs/{running}"

    await ops.client.post(f"{here}/retry", data={"back": here})
    assert flash((await ops.client.get(here)).text) == (
        f"error: Job {running} was not retried: a running job cannot be retried"
    )
    await settled(ops)
    await ops.client.post(f"{here}/cancel", data={"back": here})
    assert flash((await ops.client.get(here)).text) == (
        f"error: Job {running} was not cancelled: a succeeded job cannot be cancelled"
    )
    missing = "00000000-0000-7000-8000-000000000000"
    for action in ("retry", "cancel"):
        answer = await ops.client.post(f"/ui/jobs/{missing}/{action}", data={"back": "/ui/jobs"})
        assert answer.headers["location"] == "/ui/jobs"
        assert (
            flash((await ops.client.get("/ui/jobs")).text) == f"error: There is no job {missing}."
        )


@pytest.mark.parametrize("back", ["https://evil.test/", "//evil.test/ui", "/uix", "/ui\\@evil"])
async def test_a_form_goes_back_only_to_a_dashboard_page(ops: Api, back: str) -> None:
    answer = await ops.client.post("/ui/jobs/x/retry", data={"back": back})
    assert answer.headers["location"] == "/ui"


async def test_an_unknown_job_is_a_404_page_and_a_bad_page_of_attempts_a_400(ops: Api) -> None:
    response = await ops.client.get("/ui/jobs/%3Cb%3Enope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "There is no job &lt;b&gt;nope: it never existed, or it was purged." in response.text
    assert "<b>" not in response.text
    job_id = await post_job(ops, ALICE, "order-1", "billing")
    for after in ("-1", "x", "²", str(2**31)):
        bad = await ops.client.get(f"/ui/jobs/{job_id}", params={"after": after})
        assert bad.status_code == 400
        assert f"after: &#39;{after}&#39; is not an attempt number" in bad.text


async def test_attempts_are_shown_a_page_at_a_time(
    ops: Api, sender: FakeSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_job, "ATTEMPTS_PAGE", 1)
    sender.script(STRICT, [Reply(status=500), Reply(status=500), Reply(status=400)])
    await put(ops, "strict", url=STRICT, backoff_initial_s=0.01, backoff_max_s=0.01)
    job_id = await post_job(ops, ALICE, "order-1", "strict")
    await settled(ops)
    here = f"/ui/jobs/{job_id}"

    shown: list[str] = []
    page = (await ops.client.get(here)).text
    assert 'id="earlier-attempts"' not in page
    while True:
        shown += [r.split()[0] for r in rows(page, "attempts")]
        if 'id="later-attempts"' not in page:
            break
        page = (await ops.client.get(link(page, "later-attempts"))).text
    assert shown == ["1", "2", "3"]
    assert link(page, "earlier-attempts") == f"{here}?after=1"
    earlier = (await ops.client.get(link(page, "earlier-attempts"))).text
    assert [r.split()[0] for r in rows(earlier, "attempts")] == ["2"]
    assert link(earlier, "earlier-attempts") == here


# -- the job list and its filters --------------------------------------------------------


@pytest.fixture
async def history(api_factory: ApiFactory, backend_url: str) -> tuple[Api, list[str], FakeClock]:
    """Keys on, on each backend, five jobs a minute apart: alice's to billing
    (succeeded), bob's to strict (failed, 400), alice's to strict (failed after the
    only attempt, 500), bob's to billing (cancelled, target disabled), alice's to
    billing (queued, held)."""
    clock = FakeClock(start=float(int(time.time())))
    sender = FakeSender()
    sender.script(STRICT, [Reply(status=400), Reply(status=500)])
    api = await api_factory(sender=sender, clock=clock, api_keys=KEYS, database_url=backend_url)
    await put(api, "billing", url=HOOK)
    await put(api, "strict", url=STRICT, max_attempts=1)
    ids = []
    for i, (caller, target) in enumerate(
        [
            (ALICE, "billing"),
            (BOB, "strict"),
            (ALICE, "strict"),
            (BOB, "billing"),
            (ALICE, "billing"),
        ]
    ):
        if i == 3:  # the rest wait
            await put(api, "billing", url=HOOK, enabled=False)
        ids.append(await post_job(api, caller, f"k{i}", target))
        if i < 3:
            await settled(api)
        clock.advance(60)
    cancel = await api.client.post(f"/jobs/{ids[3]}/cancel", headers=bearer(OPS))
    assert cancel.status_code == 200, cancel.text
    await signed_in(api)
    return api, ids, clock


async def test_the_job_list_filters_by_target_state_caller_reason_and_time(
    history: tuple[Api, list[str], FakeClock],
) -> None:
    api, ids, _ = history
    second = (await api_json(api, f"/jobs/{ids[1]}"))["created_at"]

    async def found(**params: str) -> list[str]:
        response = await api.client.get("/ui/jobs", params=params)
        assert response.status_code == 200, response.text
        return listed(response.text)

    newest_first = ids[::-1]
    assert await found() == newest_first  # an admin sees every caller's jobs
    assert await found(target="strict") == [ids[2], ids[1]]
    assert await found(state="failed") == [ids[2], ids[1]]
    assert await found(state="cancelled") == [ids[3]]
    assert await found(caller="bob") == [ids[3], ids[1]]
    assert await found(reason="permanent_status") == [ids[1]]
    assert await found(reason="attempts_exhausted", caller="alice") == [ids[2]]
    assert await found(created_after=second) == newest_first[:4]
    assert await found(created_before=second) == [ids[0]]
    assert await found(created_after=second, created_before=second) == []
    # a datetime-local field's value (no offset, no seconds) is UTC, as the pages show times
    bare = second[:16].replace("T", " ")
    assert await found(created_before=bare) == [ids[0]]
    # empty fields are no filter, as a GET form sends them
    assert await found(target="", state="", caller="", reason="") == newest_first

    page = (await api.client.get("/ui/jobs", params={"state": "failed", "caller": "bob"})).text
    assert "<option selected>failed</option>" in page and 'value="bob"' in page
    assert rows(page, "jobs")[0].startswith(f"{ids[1]} key: k1 bob strict failed permanent_status")
    assert f'<a class="mono" href="/ui/jobs/{ids[1]}">' in page
    queued = rows((await api.client.get("/ui/jobs", params={"state": "queued"})).text, "jobs")
    assert re.fullmatch(
        rf"{ids[4]} key: k4 alice billing queued held: disabled 0 / 10 .*", queued[0]
    )


async def test_the_job_list_finds_an_ordering_keys_line_and_the_job_page_links_it(
    api: Api,
) -> None:
    await api.put_target(enabled=False)
    ids = []
    for n, key in enumerate(["acct-1", "acct-2", "acct-1"]):
        body = {"target": "billing", "payload": {"n": n}, "ordering_key": key}
        ids.append((await api.post_job(f"o{n}", body)).json()["id"])
    page = (await api.client.get("/ui/jobs", params={"ordering_key": "acct-1"})).text
    assert listed(page) == [ids[2], ids[0]]
    assert 'name="ordering_key" value="acct-1"' in page
    assert re.fullmatch(rf"{ids[2]} key: o2 .* scheduled held: ordering .*", rows(page, "jobs")[0])
    job_page = (await api.client.get(f"/ui/jobs/{ids[2]}")).text
    assert 'data-field="ordering-key"' in job_page
    assert "/ui/jobs?target=billing&amp;ordering_key=acct-1" in job_page


async def test_the_job_list_pages_older_and_newer(
    history: tuple[Api, list[str], FakeClock],
) -> None:
    api, ids, _ = history
    first = (await api.client.get("/ui/jobs", params={"limit": "2", "caller": "alice"})).text
    assert listed(first) == [ids[4], ids[2]]
    assert 'id="newer"' not in first and 'id="newest"' not in first
    second = (await api.client.get(link(first, "older"))).text
    assert listed(second) == [ids[0]]
    assert 'id="older"' not in second
    assert link(second, "newest") == "/ui/jobs?caller=alice&limit=2"
    back = (await api.client.get(link(second, "newer"))).text
    assert listed(back) == [ids[4], ids[2]]

    everything = (await api.client.get("/ui/jobs", params={"limit": "1"})).text
    seen = listed(everything)
    pages = [everything]
    while 'id="older"' in pages[-1]:
        pages.append((await api.client.get(link(pages[-1], "older"))).text)
        seen += listed(pages[-1])
    assert seen == ids[::-1]
    for page, expected in zip(reversed(pages[1:]), ids[1:], strict=True):
        newer = (await api.client.get(link(page, "newer"))).text
        assert listed(newer) == [expected]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"state": "lost"}, "State: Input should be &#39;scheduled&#39;, &#39;queued&#39;"),
        ({"reason": "bad_luck"}, "Failure reason: Input should be &#39;permanent_status&#39;"),
        ({"created_after": "yesterday"}, "Created after: not a time; write it as 2026-01-01T00"),
        ({"created_before": "2026-02-30T00:00:00Z"}, "Created before: not a time: day is out of"),
        ({"target": "x" * 64}, "Target: String should have at most 63 characters"),
        ({"cursor": "nope"}, "Page: the cursor is not one this server gave out"),
        ({"limit": "0"}, "Jobs per page: Input should be greater than or equal to 1"),
        ({"ordering_key": "k" * 201}, "Ordering key: String should have at most 200 characters"),
    ],
)
async def test_a_bad_filter_is_a_400_page_that_says_what_is_wrong(
    ops: Api, params: dict[str, str], problem: str
) -> None:
    response = await ops.client.get("/ui/jobs", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert 'id="filter-errors"' in response.text and problem in response.text
    assert '<table id="jobs">' not in response.text
    # the form keeps what was typed, so it can be corrected
    for name in ("target", "created_after", "created_before"):
        if name in params:
            assert f'name="{name}"' in response.text
            assert f'value="{params[name]}"' in response.text


# -- retrying every job a filter matches ----------------------------------------------------


async def test_retry_all_matching_confirms_the_count_then_retries_each_as_its_caller(
    history: tuple[Api, list[str], FakeClock],
) -> None:
    api, ids, _ = history
    page = (await api.client.get("/ui/jobs", params={"state": "failed"})).text
    confirm_at = link(page, "retry-all")
    assert confirm_at == "/ui/jobs/retry-all?state=failed"
    assert "Retry all matching…" in page

    confirm = (await api.client.get(confirm_at)).text
    assert '<p id="matching"><strong>2</strong> jobs match: failed jobs.</p>' in confirm
    assert "goes back to <em>queued</em> with its attempts reset and its history kept" in confirm
    assert hidden(confirm) == {"state": "failed", "upto": ids[2], "count": "2"}
    assert 'id="confirm">Retry 2 jobs</button>' in confirm and 'id="over-limit"' not in confirm

    done = await api.client.post("/ui/jobs/retry-all", data=hidden(confirm))
    assert (done.status_code, done.headers["location"]) == (303, "/ui/jobs?state=failed")
    assert flash((await api.client.get(done.headers["location"])).text) == "ok: Retried 2 jobs."
    for job_id, caller in ((ids[1], "bob"), (ids[2], "alice")):
        job = await state_of(api, job_id, "succeeded")  # strict takes them now
        assert (job["caller"], job["attempts"]) == (caller, 1)


async def test_retry_all_of_succeeded_jobs_sends_them_again(
    history: tuple[Api, list[str], FakeClock],
) -> None:
    api, ids, _ = history
    filters = {"state": "succeeded", "caller": "alice", "target": "billing"}
    page = (await api.client.get("/ui/jobs", params=filters)).text
    assert "Send all matching again…" in page
    confirm = (await api.client.get(link(page, "retry-all"))).text
    assert (
        "<strong>1</strong> job matches: succeeded jobs of the target billing of the caller alice."
    ) in confirm
    assert "Each is sent to its target again" in confirm
    assert 'id="confirm">Send again 1 job</button>' in confirm
    done = await api.client.post("/ui/jobs/retry-all", data=hidden(confirm))
    assert flash((await api.client.get(done.headers["location"])).text) == "ok: Sent again 1 job."
    job = await api_json(api, f"/jobs/{ids[0]}")
    # billing is disabled now: it waits there, its first answer kept
    assert (job["state"], job["completed_at"], job["held_by"]) == ("queued", None, "disabled")
    assert len(await api_json(api, f"/jobs/{ids[0]}/attempts")) == 1


async def test_retry_all_over_its_bound_continues_with_older_jobs_press_by_press(
    api_factory: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = FakeSender()
    sender.default = Reply(status=400)  # a retried job fails again at once, and matches again
    api = await api_factory(sender=sender)
    await api.put_target("billing", url=HOOK)
    job_ids = []
    for i in range(5):
        job_ids.append(await post_job(api, None, f"k{i}", "billing"))
        await settled(api)
    monkeypatch.setattr(ui_jobs, "BULK_MAX", 2)

    confirm = (await api.client.get("/ui/jobs/retry-all", params={"state": "failed"})).text
    assert "More than 2 jobs match: one press\n  takes the newest 2" in confirm
    assert 'id="confirm">Retry 2 jobs</button>' in confirm
    pressed = [await press(api, "/ui/jobs/retry-all?state=failed")]
    await settled(api)
    while "pressing again" in pressed[-1]:
        page = (await api.client.get(pressed[-1].split()[0])).text
        assert "Retry all matching from this page on…" in page
        pressed.append(await press(api, link(page, "retry-all")))
        await settled(api)

    older = "Older jobs match too: the list now starts at them, and pressing again continues"
    assert pressed == [
        f"/ui/jobs?state=failed&cursor={encode_cursor(job_ids[3])} ok: Retried 2 jobs. {older}"
        " with them.",
        f"/ui/jobs?state=failed&cursor={encode_cursor(job_ids[1])} ok: Retried 2 jobs. {older}"
        " with them.",
        "/ui/jobs?state=failed ok: Retried 1 job.",
    ]
    # each job retried once, by one press: none of the newest taken again
    for job_id in job_ids:
        job = await api_json(api, f"/jobs/{job_id}")
        assert job["state"] == "failed"
        assert len(await api_json(api, f"/jobs/{job_id}/attempts")) == 2, job_id


async def test_retry_all_retries_only_the_jobs_confirmed_and_says_what_changed_since(
    ops: Api,
) -> None:
    await put(ops, "billing", url=HOOK, enabled=False)  # its jobs wait, and can be cancelled
    job_ids = [await post_job(ops, ALICE, f"k{i}", "billing") for i in range(6)]
    for job_id in job_ids[:3]:
        await ops.client.post(f"/jobs/{job_id}/cancel", headers=bearer(OPS))
    confirm = (await ops.client.get("/ui/jobs/retry-all", params={"state": "cancelled"})).text
    assert 'id="confirm">Retry 3 jobs</button>' in confirm
    # before the press: three more are cancelled, and someone else retries one of the three
    for job_id in job_ids[3:]:
        await ops.client.post(f"/jobs/{job_id}/cancel", headers=bearer(OPS))
    await ops.client.post(f"/ui/jobs/{job_ids[2]}/retry")

    done = await ops.client.post("/ui/jobs/retry-all", data=hidden(confirm))
    assert done.headers["location"] == "/ui/jobs?state=cancelled"
    assert flash((await ops.client.get("/ui/jobs")).text) == (
        "ok: Retried 2 of the 3 confirmed; 1 no longer matched; "
        "3 more cancelled since, not retried."
    )
    states = [(await api_json(ops, f"/jobs/{job_id}"))["state"] for job_id in job_ids]
    assert states == ["queued"] * 3 + ["cancelled"] * 3


@pytest.mark.parametrize(
    "confirmation",
    [
        {},
        {"count": "2"},
        {"count": "0", "upto": "01900000-0000-7000-8000-000000000000"},
        {"count": "10001", "upto": "01900000-0000-7000-8000-000000000000"},
        {"count": "²", "upto": "01900000-0000-7000-8000-000000000000"},
        {"count": "2", "upto": "01900000-0000-7000-8000-00000000000Z"},
        {"count": "2", "upto": "{01900000-0000-7000-8000-000000000000}"},
        {
            "count": "2",
            "upto": "01900000-0000-7000-8000-000000000000",
            "cursor": encode_cursor("x" * 36),
        },
    ],
)
async def test_retry_all_without_a_sound_confirmation_retries_nothing(
    ops: Api, confirmation: dict[str, str]
) -> None:
    await post_job(ops, ALICE, "k1", "strict")
    await settled(ops)
    done = await ops.client.post("/ui/jobs/retry-all", data={"state": "failed", **confirmation})
    assert flash((await ops.client.get(done.headers["location"])).text) == (
        "error: Nothing was retried: the form did not carry the confirmed count; "
        "open Retry all matching again."
    )
    assert await ops.gateway.store.count_jobs(JobFilter(state=JobState.FAILED)) == 1


async def test_retry_all_stops_when_the_backlog_is_full_and_says_what_was_left(
    api_factory: ApiFactory, sender: FakeSender
) -> None:
    sender.default = Reply(status=400)
    api = await api_factory(sender=sender, max_backlog=1)
    await api.put_target("billing", url=HOOK)
    for i in range(3):
        await post_job(api, None, f"k{i}", "billing")
        await settled(api)
    await api.put_target("billing", url=HOOK, enabled=False)  # what is retried stays queued

    assert await press(api, "/ui/jobs/retry-all?state=failed&target=billing") == (
        "/ui/jobs?state=failed&target=billing "
        "error: Retried 1 job; stopped (the backlog holds its maximum of 1 unfinished jobs) "
        "with 2 not tried."
    )
    assert await api.gateway.store.count_jobs(JobFilter(state=JobState.FAILED)) == 2


async def test_a_job_that_changed_after_it_was_collected_is_skipped(ops: Api) -> None:
    job_ids = [await post_job(ops, ALICE, f"k{i}", "strict") for i in range(3)]
    await settled(ops)
    collected, more = await ui_jobs._collect(ops.gateway, JobFilter(target="strict"), 3)
    assert [j.id for j in collected] == job_ids[::-1] and not more
    fewer, more = await ui_jobs._collect(ops.gateway, JobFilter(target="strict"), 2)
    assert [j.id for j in fewer] == job_ids[:0:-1] and more
    await put(ops, "strict", url=STRICT, enabled=False)  # what is retried stays queued
    await ops.client.post(f"/ui/jobs/{job_ids[0]}/retry")  # someone else was quicker
    result = await ui_jobs._retry_each(ops.gateway, collected)
    assert result == BulkRetry(collected=3, retried=2, skipped=1)
    assert result.summary(JobFilter(state=JobState.FAILED), 3, newer=0, more=False) == (
        "Retried 2 jobs; skipped 1 that had changed since."
    )


@pytest.mark.parametrize(
    "params", [{}, {"state": "queued"}, {"state": "running", "target": "strict"}]
)
async def test_retry_all_takes_only_finished_jobs(ops: Api, params: dict[str, str]) -> None:
    refused = await ops.client.get("/ui/jobs/retry-all", params=params)
    assert refused.status_code == 400
    assert "Retry all matching takes a filter on failed, cancelled or succeeded jobs" in (
        refused.text
    )
    page = (await ops.client.get("/ui/jobs", params=params)).text
    assert 'id="retry-all"' not in page
    posted = await ops.client.post("/ui/jobs/retry-all", data=params)
    assert flash((await ops.client.get(posted.headers["location"])).text) == (
        "error: Nothing was retried: the filter must name finished jobs."
    )
    bad = await ops.client.post("/ui/jobs/retry-all", data={"state": "failed", "reason": "x"})
    assert flash((await ops.client.get(bad.headers["location"])).text).startswith(
        "error: Nothing was retried: Failure reason: Input should be"
    )


# -- a target's enable and disable buttons ------------------------------------------------------


async def test_disable_and_enable_keep_the_targets_secret_and_headers(
    api_factory: ApiFactory, backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = await api_factory(api_keys=KEYS, database_url=backend_url)
    await put(api, "strict", url=STRICT, secret=SECRET, headers={"X-Tenant": "t-1"})
    await signed_in(api)
    before = await api.gateway.store.get_target("strict")
    overview = (await api.client.get("/ui")).text
    assert 'action="/ui/targets/strict/disable"' in overview

    with caplog.at_level(logging.INFO, logger="csjd"):
        off = await api.client.post("/ui/targets/strict/disable")
        assert (off.status_code, off.headers["location"]) == (303, "/ui")
        page = (await api.client.get("/ui")).text
        assert flash(page) == (
            "ok: Target strict is disabled: its jobs wait until it is enabled again. "
            "Its secret and headers are kept."
        )
        assert 'action="/ui/targets/strict/enable"' in page
        shown = await api_json(api, "/targets/strict")
        assert (shown["enabled"], shown["secret"], shown["headers"]) == (
            False,
            "********",
            {"X-Tenant": "********"},
        )
        assert shown["state"]["disabled_reason"] == "disabled by an operator"

        await api.client.post("/ui/targets/strict/enable")
        assert flash((await api.client.get("/ui")).text).startswith(
            "ok: Target strict is enabled: its jobs are sent again."
        )
        await eventually(
            lambda: (
                {"target_disabled", "target_enabled"} <= {r.getMessage() for r in caplog.records}
            )
        )
    after = await api.gateway.store.get_target("strict")
    assert before is not None and after is not None
    assert after.spec == before.spec  # the secret and the header values too
    assert after.spec.secret == SECRET and dict(after.spec.headers) == {"X-Tenant": "t-1"}


async def test_a_switch_that_cannot_be_made_says_why(api_factory: ApiFactory) -> None:
    api = await api_factory()
    await api.put_target("local", url="http://127.0.0.1:9/hook", enabled=False)
    await api.client.post("/ui/targets/local/disable")
    assert flash((await api.client.get("/ui")).text) == "ok: Target local was already disabled."
    await api.client.post("/ui/targets/nope/enable")
    assert flash((await api.client.get("/ui")).text) == (
        "error: Target nope was not enabled: no target named 'nope'"
    )


async def test_a_target_whose_address_is_now_refused_is_not_enabled(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(allow_private_targets=False)
    # registered while private addresses were allowed
    spec = TargetSpec(name="local", url="http://127.0.0.1:9/hook", enabled=False)
    await api.gateway.store.put_target(spec, api.gateway.clock.now())
    await api.client.post("/ui/targets/local/enable")
    said = flash((await api.client.get("/ui")).text)
    assert said.startswith("error: Target local was not enabled: '127.0.0.1' is")
    record = await api.gateway.store.get_target("local")
    assert record is not None and not record.spec.enabled


# -- who may -----------------------------------------------------------------------------------


POSTS = [
    "/ui/jobs/x/retry",
    "/ui/jobs/x/cancel",
    "/ui/jobs/retry-all",
    "/ui/targets/strict/enable",
    "/ui/targets/strict/disable",
]


async def test_without_an_admin_credential_nothing_is_shown_or_done(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(api_keys=KEYS)
    for path in ("/ui/jobs", "/ui/jobs/x", "/ui/jobs/retry-all?state=failed"):
        for headers in ({}, bearer(ALICE)):
            answer = await api.client.get(path, headers=headers)
            assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")
    for path in POSTS:
        for headers, status in (({}, 401), (bearer(ALICE), 403)):
            answer = await api.client.post(path, headers=headers, data={"state": "failed"})
            assert answer.status_code == status, path


async def test_a_form_from_another_origin_is_refused(ops: Api) -> None:
    for path in POSTS:
        answer = await ops.client.post(
            path, headers={"Sec-Fetch-Site": "cross-site"}, data={"state": "failed"}
        )
        assert answer.status_code == 403, path
    shown = await api_json(ops, "/targets/strict")
    assert shown["enabled"] is True


async def test_with_keys_off_every_page_and_button_works(api: Api) -> None:
    await api.put_target("billing", url=HOOK)
    job_id = (await api.post_job("k1")).json()["id"]
    await settled(api)
    assert listed((await api.client.get("/ui/jobs")).text) == [job_id]
    page = (await api.client.get(f"/ui/jobs/{job_id}")).text
    assert "Caller — (stored while auth was off)" in rows(page, "summary")
    await api.client.post(f"/ui/jobs/{job_id}/retry", data={"back": f"/ui/jobs/{job_id}"})
    assert flash((await api.client.get(f"/ui/jobs/{job_id}")).text) == (
        f"ok: Job {job_id} will be sent again."
    )
    await api.client.post("/ui/targets/billing/disable")
    assert (await api.client.get("/targets/billing")).json()["enabled"] is False
    nav = (await api.client.get("/ui")).text
    assert '<a href="/ui/jobs" id="all-jobs">All jobs</a>' in nav


async def test_job_ids_on_the_overview_link_to_the_job_page(ops: Api) -> None:
    job_id = await post_job(ops, ALICE, "order-1", "strict")
    await settled(ops)
    page = (await ops.client.get("/ui")).text
    assert f'<a href="/ui/jobs/{job_id}">{job_id}</a>' in page
    assert '<a href="/ui/jobs?state=failed" id="all-failed">' in page
