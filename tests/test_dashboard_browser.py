"""The dashboard in a real browser: headless Chromium through Selenium and
Debian's chromedriver, against a served app and a seeded database.

Every page is loaded and photographed (``artifacts/screenshots/pg<major>/``); the
cancel and retry buttons are clicked and the database is checked; a run
completed by another connection shows up without a reload (a condition wait
on the DOM, fed by the event stream, or by polling when the stream fails).

Without Chromium the tests fail in CI (``CI`` set: .ci/run installs the
Debian packages chromium and chromium-driver) and are skipped, with the
reason printed, elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from starlette.requests import Request

from catbird.dashboard import create_dashboard
from dashboardhelpers import Seeded, seed, serve
from sqlhelpers import J, fn, scalar

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")


def _find(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        found = candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else None
        found = found or shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = _find(CHROMIUM), _find(CHROMEDRIVER)
    if chromium is None or chromedriver is None:
        missing = "chromium" if chromium is None else "chromedriver"
        reason = (
            f"{missing} not found (looked for {CHROMIUM if chromium is None else CHROMEDRIVER});"
            " install the Debian packages chromium and chromium-driver"
        )
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        print(f"skipping the browser tests: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site(dsn: str, conn: psycopg.Connection) -> Iterator[tuple[str, Seeded]]:
    seeded = seed(conn)
    with serve(create_dashboard(dsn, title="catbird ops")) as base:
        yield base, seeded


def _wait(browser: webdriver.Chrome) -> WebDriverWait:
    return WebDriverWait(browser, 20)


@pytest.fixture(scope="module")
def shots(pg_major: int) -> Path:
    """Where this server's screenshots go (CI keeps artifacts/ per run)."""
    folder = SCREENSHOTS / f"pg{pg_major}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shoot(browser: webdriver.Chrome, shots: Path, name: str) -> None:
    assert browser.save_screenshot(str(shots / f"{name}.png"))


def _live(browser: webdriver.Chrome) -> None:
    """Wait until the page's event stream is connected and the dashboard listens."""
    _wait(browser).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "on"
    )


def _task_status(conn: psycopg.Connection, run_id: int) -> str:
    return str(scalar(conn, "SELECT status FROM catbird.cb_task_runs WHERE id = %s", (run_id,)))


def test_every_page_loads_and_is_photographed(
    browser: webdriver.Chrome, shots: Path, site: tuple[str, Seeded]
) -> None:
    base, seeded = site
    pages = {
        "overview": ("/", "Overview"),
        "queue": ("/queues/orders", "Queue orders"),
        "queue-dead-letters": ("/queues/orders_dlq", "Queue orders_dlq"),
        "purge-confirm": ("/queues/orders/purge", "Purge queue orders?"),
        "task-runs": ("/tasks/send_email", "Task send_email"),
        "task-runs-failed": ("/tasks/send_email?status=failed", "Task send_email"),
        "task-run-failed": (f"/tasks/send_email/runs/{seeded.failed_run}", "run #"),
        "flow-runs": ("/flows/checkout", "Flow checkout"),
        "flow-run": (f"/flows/checkout/runs/{seeded.flow_run}", "run #"),
        "flow-run-failed": (f"/flows/checkout/runs/{seeded.failed_flow_run}", "run #"),
        "not-found": ("/tasks/send_email/runs/999999", "Not found"),
    }
    for name, (path, heading) in pages.items():
        browser.get(base + path)
        assert heading in browser.find_element(By.TAG_NAME, "h1").text, name
        _shoot(browser, shots, name)
    # the failed run shows its traceback; the flow run its graph with item progress
    browser.get(f"{base}/tasks/send_email/runs/{seeded.failed_run}")
    assert "SMTPRecipientsRefused" in browser.find_element(By.ID, "traceback").text
    browser.get(f"{base}/flows/checkout/runs/{seeded.flow_run}")
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.dag g.node")
    assert [n.get_attribute("data-step") for n in nodes] == [
        "fetch",
        "price",
        "stock",
        "items",
        "confirm",
    ]
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.dag path.edge")) == 6
    items = browser.find_element(By.CSS_SELECTOR, 'svg.dag g.node[data-step="items"]')
    assert "1/3" in items.text
    # the diamond is laid out in layers: fetch, then price/stock/items, then confirm
    x = {n.get_attribute("data-step"): n.rect["x"] for n in nodes}
    assert x["fetch"] < x["price"] == x["stock"] == x["items"] < x["confirm"]
    _live(browser)
    _shoot(browser, shots, "flow-run")


def test_cancel_and_retry_buttons_change_the_database(
    browser: webdriver.Chrome, shots: Path, site: tuple[str, Seeded], conn: psycopg.Connection
) -> None:
    base, seeded = site
    browser.get(f"{base}/tasks/send_email/runs/{seeded.queued_run}")
    browser.find_element(By.XPATH, "//button[text()='Cancel']").click()
    _wait(browser).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".notice"), "Cancel requested."
        )
    )
    assert _task_status(conn, seeded.queued_run) == "canceled"
    assert browser.find_element(By.ID, "run-status").text == "canceled"
    browser.find_element(By.XPATH, "//button[text()='Retry']").click()
    _wait(browser).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".notice"), "queued again"
        )
    )
    assert _task_status(conn, seeded.queued_run) == "queued"
    _shoot(browser, shots, "task-run-retried")
    browser.get(f"{base}/flows/checkout/runs/{seeded.failed_flow_run}")
    browser.find_element(By.XPATH, "//button[text()='Retry']").click()
    _wait(browser).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".notice"), "queued again"
        )
    )
    status = "SELECT status FROM catbird.cb_flow_runs WHERE id = %s"
    assert scalar(conn, status, (seeded.failed_flow_run,)) == "started"
    # purging asks for the queue's name first
    browser.get(f"{base}/queues/orders")
    browser.find_element(By.LINK_TEXT, "Purge…").click()
    browser.find_element(By.NAME, "confirm").send_keys("orders")
    browser.find_element(By.XPATH, "//button[text()='Purge']").click()
    _wait(browser).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".notice"), "Deleted 3 message(s)."
        )
    )
    assert scalar(conn, "SELECT depth FROM catbird.cb_get_queue('orders')") == 0


def test_a_run_completed_elsewhere_appears_without_a_reload(
    browser: webdriver.Chrome, site: tuple[str, Seeded], conn: psycopg.Connection
) -> None:
    base, seeded = site
    browser.get(f"{base}/tasks/send_email/runs/{seeded.started_run}")
    assert browser.find_element(By.ID, "run-status").text == "started"
    # a marker on the document: it survives only if the page is not reloaded
    browser.execute_script("document.documentElement.dataset.marker = 'same-page'")
    _live(browser)
    fn(
        conn,
        "cb_complete_task",
        name="send_email",
        run_id=seeded.started_run,
        output=J({"sent": True, "id": "m-42"}),
    )
    _wait(browser).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "run-status"), "completed")
    )
    assert "m-42" in browser.find_element(By.ID, "output").text
    marker = browser.execute_script("return document.documentElement.dataset.marker")
    assert marker == "same-page"
    # the overview follows too: a flow step completing elsewhere moves its counts
    browser.get(base + "/")
    _live(browser)
    before = browser.find_element(By.CSS_SELECTOR, 'tr[data-task="resize"]').text
    fn(conn, "cb_run_task", name="resize", input=J({"image": "dog.png"}))
    _wait(browser).until(
        lambda b: b.find_element(By.CSS_SELECTOR, 'tr[data-task="resize"]').text != before
    )
    assert "queued 2" in browser.find_element(By.CSS_SELECTOR, 'tr[data-task="resize"]').text


def test_without_the_event_stream_the_page_polls(
    browser: webdriver.Chrome, dsn: str, conn: psycopg.Connection
) -> None:
    seeded = seed(conn)

    def no_event_stream(request: Request) -> bool:
        return not request.url.path.endswith("/events")

    with serve(create_dashboard(dsn, auth=no_event_stream)) as base:
        browser.get(f"{base}/tasks/send_email/runs/{seeded.started_run}")
        _wait(browser).until(
            lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "polling"
        )
        browser.execute_script("document.documentElement.dataset.marker = 'same-page'")
        fn(conn, "cb_complete_task", name="send_email", run_id=seeded.started_run, output=J(1))
        _wait(browser).until(
            expected_conditions.text_to_be_present_in_element((By.ID, "run-status"), "completed")
        )
        marker = browser.execute_script("return document.documentElement.dataset.marker")
        assert marker == "same-page"
