"""The dashboard in a real browser: Debian's headless Chromium driven through selenium
(chromedriver given by path, so nothing is downloaded).  Checks what a person sees, and that
approving in the page publishes the same retained decision as ``ion approve``, on a real
Mosquitto.  Screenshots go to ``test-artifacts/dashboard/`` for a human to look at."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from support import unique_name
from test_dashboard_support import EDGE, XSS, dashboard_thread, retained_decision, seed, seed_broker

from broker.dashboard import DashboardSettings
from ion.config.broker import parse_broker_url
from ion.model.command import ApproveModel, ModelRef
from ion.security.keys import SigningKey

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "let-me-in"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(
            "chromium and chromedriver are needed (Debian: apt-get install chromium "
            "chromium-driver; ./dev setup installs them)",
            pytrace=False,
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--disable-extensions", "--no-first-run"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest) -> Path:
    root = Path(os.environ.get("ION_TEST_ARTIFACTS") or request.config.rootpath / "test-artifacts")
    path = root / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait(driver: WebDriver, what: Any, timeout: float = 10) -> Any:
    # A form post or a live refresh may replace the element between finding and reading
    # it: that is "not yet", not a failure.  Chrome reports it as a stale element or, when
    # the new document arrives during the read, as "unknown error: ... Node with given id
    # does not belong to the document" (seen once in a fresh-clone run after the login post).
    def attempt(d: WebDriver) -> Any:
        try:
            return what(d)
        except WebDriverException as exc:
            if isinstance(exc, StaleElementReferenceException) or (
                "does not belong to the document" in (exc.msg or "")
            ):
                return False
            raise

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(attempt)


def shot(driver: WebDriver, path: Path) -> None:
    """A screenshot of the whole page (the window grows to the document's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height) + 20, 700), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1100)


def texts(driver: WebDriver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def test_what_a_person_sees(browser: WebDriver, shots: Path, tmp_path: Path) -> None:
    db = tmp_path / "monitor.db"
    seed(db, now_ms()).close()
    with dashboard_thread(DashboardSettings(db_path=db, port=0)) as url:
        browser.get(url)
        rows = {r.get_attribute("data-row"): r.text for r in
                browser.find_elements(By.CSS_SELECTOR, "table.nodes tr[data-row]")}  # fmt: skip
        assert set(rows) == {"cloud-1", "gw-1", "edge-1", "edge-2", "edge-3"}
        assert "offline" in rows["edge-3"] and "online" in rows["edge-1"]
        assert "gw-1" in rows["edge-1"]  # its parent gateway
        assert texts(browser, "h2[data-layer]")[:3] == [
            "cloud 1 up, 0 down", "gateway 1 up, 0 down", "edge 2 up, 1 down"]  # fmt: skip
        shot(browser, shots / "fleet.png")

        browser.find_element(By.LINK_TEXT, "kmeans").click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.graph"))
        boxes = {g.get_attribute("data-pipeline"): g.text for g in
                 browser.find_elements(By.CSS_SELECTOR, "svg.graph g[data-pipeline]")}  # fmt: skip
        assert set(boxes) == {"training", "inference"}
        assert "running on 1/1" in boxes["training"] and "1 of 3 failed" in boxes["inference"]
        edges = {g.get_attribute("data-edge"): g.text for g in
                 browser.find_elements(By.CSS_SELECTOR, "svg.graph g[data-edge]")}  # fmt: skip
        assert set(edges) == {"weights", "drift", "retrain"}
        assert "v3 on 2" in edges["weights"] and "trigger" in edges["retrain"]
        shot(browser, shots / "ion-graph.png")

        browser.get(url + "nodes/edge-1")
        assert "inference" in browser.find_element(By.CSS_SELECTOR, "table.pipelines").text
        button = browser.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]')
        assert button.text == "Approve 4" and not button.is_enabled()  # no token configured
        assert "no token is configured" in browser.find_element(By.CLASS_NAME, "why-disabled").text
        assert browser.find_elements(By.CSS_SELECTOR, "figure.chart circle.pt")
        shot(browser, shots / "node.png")

        browser.get(url + "events")
        firing = browser.find_elements(By.CSS_SELECTOR, "ol.alerts li.alert-firing")
        assert [f.get_attribute("data-rule") for f in firing] == ["node_offline", "drift"]
        assert XSS in browser.find_element(By.CSS_SELECTOR, "ol.events").text  # shown as text
        assert browser.execute_script("return window.__xss === undefined")  # never ran
        # Live: an event written now appears without reloading the page.
        browser.execute_script("window.__sameDocument = true")
        with sqlite3.connect(db) as conn:
            conn.execute(
                "INSERT INTO events (id, time_ms, node_id, ion, pipeline, type, severity, "
                "subject, message, attributes_json) VALUES (9, ?, 'edge-2', 'kmeans', '', "
                "'alert.fired', 'critical', 'x', 'live event arrived', '{}')",
                (now_ms(),),
            )
        wait(browser, lambda d: "live event arrived" in d.find_element(By.ID, "live").text)
        assert browser.execute_script("return window.__sameDocument === true")  # no reload
        shot(browser, shots / "events.png")

        browser.get(url + "charts")
        charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
        captions = [c.find_element(By.TAG_NAME, "figcaption").text for c in charts]
        assert "drift · edge-1 · inference" in captions
        psi = browser.find_element(By.CSS_SELECTOR, 'g.series[data-series="psi"]')
        assert len(psi.find_elements(By.CSS_SELECTOR, "circle.pt")) == 30
        assert browser.find_elements(By.CSS_SELECTOR, "figure.chart line.threshold")
        shot(browser, shots / "charts.png")

        browser.get(url + "queues")
        assert (
            "ion/v1/ions/kmeans/edges/drift/health/edge-1"
            in browser.find_element(By.CSS_SELECTOR, "table.streams").text
        )
        shot(browser, shots / "queues.png")


# -- approving from the page ---------------------------------------------------------------


def test_approve_in_the_page_publishes_the_cli_decision(
    browser: WebDriver, shots: Path, tmp_path: Path, fresh_mosquitto: Any
) -> None:
    url_mqtt = fresh_mosquitto.url
    ion = unique_name("dash")
    seed_broker(url_mqtt, ion)
    db = tmp_path / "monitor.db"
    seed(db, now_ms(), ion=ion).close()
    key = SigningKey.generate()
    key_file = tmp_path / "operator.key"
    key_file.write_bytes(key.to_pem())
    key_file.chmod(0o600)
    broker = parse_broker_url(url_mqtt)
    settings = DashboardSettings(
        db_path=db, port=0, token=TOKEN, broker=broker, signing_key=key_file
    )
    with dashboard_thread(settings) as url:
        browser.delete_all_cookies()
        browser.get(url + "nodes/edge-1")
        assert not browser.find_element(
            By.CSS_SELECTOR, 'button[data-action="approve"]'
        ).is_enabled()
        assert "log in" in browser.find_element(By.CLASS_NAME, "why-disabled").text
        browser.get(url + "login")
        browser.find_element(By.NAME, "token").send_keys("wrong")
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait(browser, lambda d: "wrong token" in d.find_element(By.ID, "live").text)
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait(browser, lambda d: "logged in" in d.find_element(By.ID, "live").text)
        browser.get(url + "nodes/edge-1")
        button = browser.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]')
        assert button.is_enabled()
        assert retained_decision(url_mqtt, ion, "4") is None
        button.click()
        wait(browser, lambda d: "approve 4 published" in d.find_element(By.ID, "live").text)
        assert f"signed by {key.key_id}" in browser.find_element(By.ID, "live").text
        shot(browser, shots / "approved.png")
    cmd = retained_decision(url_mqtt, ion, "4")
    assert cmd is not None, "no retained decision on the broker"
    assert cmd.action == ApproveModel(ModelRef(ion, EDGE, "4"))
    assert cmd.issued_by.endswith("(dashboard)")
    assert cmd.signature is not None and cmd.signature.key_id == key.key_id
