"""A real browser receives Wire events: headless Chromium (Selenium, Debian's
chromedriver) opens the example page examples/wire/index.html, served by
examples/wire/app.py in its own process, and its EventSource shows events
sent with cb_notify from SQL and with wire.notify through the page's form.

Without Chromium this suite fails in CI (CI set) and is skipped, with the
reason printed, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from sqlhelpers import fn
from wirehelpers import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser_missing() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian packages chromium, chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'catbird[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium in CI: {reason}")
        print(f"skipping browser tests: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def example_app(dsn: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "CATBIRD_DSN": dsn,
        "WIRE_SECRET": "ab" * 32,
        "PORT": str(port),
        "PYTHONPATH": str(ROOT / "python"),
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "wire" / "app.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.communicate(timeout=5)[0] if proc.poll() is not None else ""
                    pytest.fail(f"examples/wire/app.py did not start:\n{out}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(condition, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_example_page_receives_rendered_events_in_chromium(browser, example_app, dsn):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(example_app + "/?who=ann")
    status = driver.find_element(By.ID, "status")
    _wait(lambda: status.text == "connected", what="the EventSource to open")
    # The page's connection is present under its identity.
    _wait(lambda: httpx.get(example_app + "/presence").text == "ann", what="presence")

    with psycopg.connect(dsn, autocommit=True) as conn:
        fn(conn, "cb_notify", topic="demo.hello", data="hi from SQL")
        fn(conn, "cb_notify", topic="other.topic", data="not rendered, not shown")

    def texts() -> list[str]:
        return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#events li.chat")]

    _wait(lambda: texts() == ["demo.hello: hi from SQL"], what="the cb_notify event")

    driver.find_element(By.ID, "text").send_keys("hello from the form")
    driver.find_element(By.CSS_SELECTOR, "#send button").click()
    _wait(lambda: len(texts()) == 2, what="the wire.notify event")
    assert texts() == ["demo.hello: hi from SQL", "demo.chat: hello from the form"]

    # The page closes its stream (navigating away may keep it in the
    # back-forward cache): the server notices and its presence goes.
    driver.execute_script("source.close()")
    _wait(lambda: httpx.get(example_app + "/presence").text == "", what="presence to clear")
