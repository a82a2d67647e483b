"""End to end: the dashboard in headless Chromium, against a real gateway and a real sink.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver``
packages, driven by Selenium. Without them the test is skipped, except under
``CI=true``, where a missing browser is a broken machine and the test fails.
Screenshots land in ``test-artifacts/`` (or ``$CSJD_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import ROOT, GatewayProcess
from tests.needs import missing

pytestmark = pytest.mark.slow

PRODUCER = "producer-token-5d41402abc4b2a76b9719d91"
ADMIN = "admin-token-7d793037a0760186574b0282f2f4"
MISSING = "headless Chromium is not installed (apt-get install chromium chromium-driver)"


def artifacts() -> Path:
    folder = Path(os.environ.get("CSJD_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _missing(why: str) -> NoReturn:
    missing(why, in_ci="CI must run the browser test")


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        _missing(MISSING)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # the page's console: a script or a fetch the CSP refused shows there
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    # the driver is given, so Selenium does not look for (or download) one
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.set_page_load_timeout(20)
    try:
        yield chrome
    finally:
        chrome.quit()


def wait(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    """``condition()``'s first truthy value; the page may reload itself meanwhile."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the page never got there")
        time.sleep(0.05)


def test_an_operator_signs_in_sees_the_targets_and_retries_a_failed_job(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    sink.answer("/ok", Reply(status=200))
    # the first delivery is refused for good; the retried one is taken (slowly
    # enough for the API to see it running)
    sink.script("/bad", [Reply(status=400, body=b"unknown order")], then=Reply(delay_s=3.0))
    gateway = gateway_factory(CSJD_API_KEYS=f"shop:{PRODUCER}:producer,ops:{ADMIN}:admin").start()
    api = gateway.client
    api.headers["Authorization"] = f"Bearer {ADMIN}"
    gateway.put_target("billing", url=sink.url("/ok"))
    gateway.put_target("strict", url=sink.url("/bad"))
    api.headers["Authorization"] = f"Bearer {PRODUCER}"
    for i in range(3):
        assert gateway.post_job(f"order-{i}", "billing", {"n": i}).status_code == 202
    failing = gateway.post_job("order-x", "strict", {"n": "x"}).json()["id"]
    assert gateway.wait_job(failing, ("failed",))["last_status_code"] == 400
    base = str(api.base_url).rstrip("/")
    shots = artifacts()

    try:
        browser.get(f"{base}/ui")
        wait(lambda: browser.current_url.endswith("/ui/login"))

        def sign_in(token: str) -> None:
            field = browser.find_element(By.ID, "token")
            field.clear()
            field.send_keys(token)
            browser.find_element(By.ID, "sign-in").click()

        sign_in(PRODUCER)
        refusal = wait(lambda: browser.find_element(By.ID, "login-error").text)
        assert "'shop' is a producer key" in refusal and "needs an admin key" in refusal
        sign_in(ADMIN)
        wait(lambda: browser.current_url == f"{base}/ui")
        cookie = browser.get_cookie("csjd_ui")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"

        def target_row(name: str) -> str:
            text: str = browser.find_element(
                By.CSS_SELECTOR, f'#targets tr[data-target="{name}"]'
            ).text
            return text

        assert "closed" in wait(lambda: target_row("billing"))
        assert "enabled" in target_row("strict")
        flows = browser.find_element(By.CSS_SELECTOR, '#throughput tr[data-target="billing"]')
        assert flows.text.startswith("billing\n3") or flows.text.startswith("billing 3")
        failed_row = f'#failed tr[data-job="{failing}"]'
        row = wait(lambda: browser.find_element(By.CSS_SELECTOR, failed_row).text)
        assert "shop" in row and "strict" in row and "400" in row
        browser.save_screenshot(str(shots / "ui-dashboard.png"))

        wait(
            lambda: (
                browser.find_element(By.CSS_SELECTOR, f"{failed_row} button.retry").click() or True
            )
        )
        flash = wait(lambda: browser.find_element(By.ID, "flash").text)
        assert flash == f"Job {failing} is queued again for shop."
        assert not browser.find_elements(By.CSS_SELECTOR, failed_row)
        browser.save_screenshot(str(shots / "ui-after-retry.png"))
    except Exception:
        browser.save_screenshot(str(shots / "ui-failure.png"))
        (shots / "ui-failure.html").write_text(browser.page_source)
        raise

    back = gateway.job(failing)
    assert back["state"] in ("queued", "running") and back["attempts"] == 0
    done = gateway.wait_job(failing, ("succeeded",))
    assert done["attempts"] == 1
    assert len(sink.received("/bad")) == 2


def test_the_dashboard_follows_the_jobs_without_reloading(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink, browser: Any
) -> None:
    """Counts, totals, the chart and a new failure appear in the page as they
    happen, by its script alone (the page is never loaded again), and the
    Content-Security-Policy lets that script run and fetch, and nothing else."""
    from selenium.webdriver.common.by import By

    sink.answer("/ok", Reply(status=200))
    sink.answer("/bad", Reply(status=400, body=b"unknown order"))
    gateway = gateway_factory().start()
    gateway.put_target("billing", url=sink.url("/ok"))
    gateway.put_target("parked", url=sink.url("/ok"), enabled=False)
    gateway.put_target("strict", url=sink.url("/bad"))
    base = str(gateway.client.base_url).rstrip("/")
    shots = artifacts()

    def text(selector: str) -> str:
        found: str = browser.find_element(By.CSS_SELECTOR, selector).text
        return found

    queued = '#targets tr[data-target="parked"] td[data-field="backlog.queued"]'
    accepted = '#throughput tr[data-target="parked"] td[data-field="accepted"]'
    succeeded = '#throughput tr[data-target="billing"] td[data-field="succeeded"]'
    try:
        browser.get(f"{base}/ui")
        wait(lambda: text(queued) == "0")
        assert text(accepted) == "0" and text(succeeded) == "0"
        # a mark on this very page: a reload would wipe it
        browser.execute_script("window.csjdMark = 'still this page'")

        for i in range(3):
            assert gateway.post_job(f"parked-{i}", "parked", {"n": i}).status_code == 202
        delivered = gateway.post_job("ok-1", "billing", {"n": 1}).json()["id"]
        gateway.wait_job(delivered, ("succeeded",))
        wait(lambda: text(queued) == "3")
        wait(lambda: text(succeeded) == "1")
        assert text(accepted) == "3"
        chart = browser.find_element(
            By.CSS_SELECTOR, '#throughput tr[data-target="parked"] svg[data-chart]'
        )
        assert chart.get_attribute("aria-label") == (
            "parked, last 15 minutes: 3 accepted, 0 succeeded, 0 failed"
        )
        assert browser.find_element(By.ID, "new-failed").is_displayed() is False

        failing = gateway.post_job("bad-1", "strict", {"n": "x"}).json()["id"]
        gateway.wait_job(failing, ("failed",))
        notice = wait(lambda: browser.find_element(By.ID, "new-failed").is_displayed())
        assert notice
        # switched off elsewhere: its state and its button follow
        switched = gateway.client.patch(
            "/targets/billing",
            content=b'{"enabled": false}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert switched.status_code == 200, switched.text
        billing = '#targets tr[data-target="billing"]'
        wait(lambda: text(f'{billing} td[data-field="status"]').startswith("disabled"))
        assert text(f"{billing} button") == "Enable"
        assert (
            browser.find_element(By.CSS_SELECTOR, f"{billing} form")
            .get_attribute("action")
            .endswith("/ui/targets/billing/enable")
        )
        assert browser.execute_script("return window.csjdMark") == "still this page"

        updated = browser.find_element(By.CSS_SELECTOR, "#updated time")
        assert re.fullmatch(r"\d+ s ago", updated.text)
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", updated.get_attribute("title")
        )
        assert text("#live-status") == "live, as of"
        browser.save_screenshot(str(shots / "ui-live.png"))
        refused = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert refused == []
    except Exception:
        browser.save_screenshot(str(shots / "ui-live-failure.png"))
        (shots / "ui-live-failure.html").write_text(browser.page_source)
        raise
