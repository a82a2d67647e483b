"""End to end: the dashboard's job pages in headless Chromium, against a real gateway and sink.

An operator opens a failed job from the overview, reads its attempts and
timeline and retries it; filters the job list; retries every matching job
after the confirmation page; disables and enables a target, whose secret and
headers (checked through the API, and on the deliveries the sink receives)
are kept. The browser and its skip rules are ``test_ui_browser.py``'s;
screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess
from tests.e2e.test_ui_browser import ADMIN, PRODUCER, artifacts, wait
from tests.e2e.test_ui_browser import browser as browser  # the fixture

pytestmark = pytest.mark.slow

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_an_operator_reads_a_failed_job_retries_it_filters_retries_all_and_switches_a_target(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sink.answer("/ok", Reply(status=200))
    # the first strict job is refused twice (503, then for good); the next two once;
    # from then on strict takes everything
    sink.script(
        "/bad",
        [Reply(status=503, body=b"busy")] + [Reply(status=400, body=b"<b>unknown order</b>")] * 3,
        then=Reply(status=200),
    )
    gateway = gateway_factory(CSJD_API_KEYS=f"shop:{PRODUCER}:producer,ops:{ADMIN}:admin").start()
    api = gateway.client
    api.headers["Authorization"] = f"Bearer {ADMIN}"
    gateway.put_target("billing", url=sink.url("/ok"))
    gateway.put_target(
        "strict",
        url=sink.url("/bad"),
        secret=SECRET,
        headers={"X-Tenant": "t-private"},
        backoff_initial_s=0.1,
        backoff_max_s=0.1,
    )
    api.headers["Authorization"] = f"Bearer {PRODUCER}"
    assert gateway.post_job("order-1", "billing", {"n": 1}).status_code == 202
    first = gateway.post_job("order-x", "strict", {"order": "x", "note": "<i>rush</i>"}).json()[
        "id"
    ]
    assert gateway.wait_job(first, ("failed",))["attempts"] == 2
    others = [gateway.post_job(f"order-{i}", "strict", {"n": i}).json()["id"] for i in (2, 3)]
    for job_id in others:
        gateway.wait_job(job_id, ("failed",))
    api.headers["Authorization"] = f"Bearer {ADMIN}"
    base = str(api.base_url).rstrip("/")
    shots = artifacts()

    def click(selector: str) -> None:
        wait(lambda: browser.find_element(By.CSS_SELECTOR, selector).click() or True)

    def text(selector: str) -> str:
        found: str = browser.find_element(By.CSS_SELECTOR, selector).text
        return found

    def flash() -> str:
        return str(wait(lambda: text("#flash")))

    try:
        browser.get(f"{base}/ui/login")
        browser.find_element(By.ID, "token").send_keys(ADMIN)
        browser.find_element(By.ID, "sign-in").click()
        wait(lambda: browser.current_url == f"{base}/ui")

        # the failed job, from the overview's list, by its id
        click(f'#failed tr[data-job="{first}"] a[href="/ui/jobs/{first}"]')
        wait(lambda: browser.current_url == f"{base}/ui/jobs/{first}")
        assert text("#state") == "failed"
        attempts = browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
        assert [row.get_attribute("data-attempt") for row in attempts] == ["1", "2"]
        assert "503 retryable HTTP 503" in attempts[0].text
        assert "<b>unknown order</b>" in attempts[1].text  # shown as text, not markup
        timeline = text("#timeline")
        for step in ("accepted", "attempt 1 answered", "attempt 2 answered", "failed"):
            assert step in timeline
        assert '"note": "<i>rush</i>"' in text("#payload")
        assert "X-Tenant ********" in text("#target-headers")
        assert "t-private" not in browser.page_source and SECRET not in browser.page_source
        browser.save_screenshot(str(shots / "ui-job-failed.png"))

        click("#retry")
        assert flash() == f"Job {first} is queued again for shop."
        gateway.wait_job(first, ("succeeded",))
        browser.refresh()
        wait(lambda: text("#state") == "succeeded")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")) == 3
        assert text("#retry") == "Send again"
        browser.save_screenshot(str(shots / "ui-job-succeeded.png"))

        # the job list, filtered
        click("#all-jobs")
        wait(lambda: browser.current_url == f"{base}/ui/jobs")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 4
        Select(browser.find_element(By.NAME, "state")).select_by_visible_text("failed")
        browser.find_element(By.NAME, "target").send_keys("strict")
        click("#apply-filters")
        wait(lambda: "state=failed" in browser.current_url)
        shown = [
            row.get_attribute("data-job")
            for row in browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
        ]
        assert shown == others[::-1]
        browser.save_screenshot(str(shots / "ui-jobs-filtered.png"))

        # every matching job, after the confirmation
        click("#retry-all")
        wait(lambda: "/ui/jobs/retry-all" in browser.current_url)
        assert text("#matching") == "2 jobs match: failed jobs of the target strict."
        browser.save_screenshot(str(shots / "ui-retry-all-confirm.png"))
        click("#confirm")
        assert flash() == "Retried 2 jobs."
        for job_id in others:
            assert gateway.wait_job(job_id, ("succeeded",))["caller"] == "shop"
        browser.refresh()
        wait(lambda: browser.find_element(By.ID, "no-jobs"))

        # a target switched off and on again, from the overview
        browser.get(f"{base}/ui")
        click('#targets tr[data-target="strict"] button.disable')
        assert flash().startswith("Target strict is disabled")
        assert "disabled" in text('#targets tr[data-target="strict"]')
        browser.save_screenshot(str(shots / "ui-target-disabled.png"))
        off = api.get("/targets/strict").json()
        assert (off["enabled"], off["secret"], off["headers"]) == (
            False,
            "********",
            {"X-Tenant": "********"},
        )
        click('#targets tr[data-target="strict"] button.enable')
        assert flash().startswith("Target strict is enabled")
        assert api.get("/targets/strict").json()["enabled"] is True
    except Exception:
        browser.save_screenshot(str(shots / "ui-jobs-failure.png"))
        (shots / "ui-jobs-failure.html").write_text(browser.page_source)
        raise

    # what goes out afterwards is still signed, and still carries the header
    api.headers["Authorization"] = f"Bearer {PRODUCER}"
    later = gateway.post_job("order-9", "strict", {"n": 9}).json()["id"]
    gateway.wait_job(later, ("succeeded",))
    delivered = {k.lower(): v for k, v in sink.received("/bad")[-1].headers.items()}
    assert delivered["x-tenant"] == "t-private"
    assert delivered["webhook-signature"].startswith("v1,")
    assert '"target_disabled"' in gateway.logs() and '"target_enabled"' in gateway.logs()
