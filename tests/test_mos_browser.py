"""End to end in a real headless browser: two raters score a small study (keyboard and mouse,
a reload and a stop in between), then the report is checked. Needs Debian's chromium and
chromium-driver and the selenium package; skips cleanly without them (`.ci/run` installs them)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import BROWSER_MARKS
from PIL import Image

pytestmark = BROWSER_MARKS  # the `browser` fixture is in conftest.py

QUALITY = {"nearest": 1, "m1": 2, "m2": 4, "original": 5}


@pytest.fixture
def served(tmp_path: Path):
    from plfw.mos.create import create_study
    from plfw.mos.server import MosServer

    rng = np.random.default_rng(1)
    for ds in ("Set5", "Set14"):
        hr = rng.integers(0, 256, (8, 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        for folder, img in (("ref", hr), ("m1", hr // 2), ("m2", 255 - hr)):
            (tmp_path / folder / ds).mkdir(parents=True)
            Image.fromarray(img).save(tmp_path / folder / ds / "pic.png")
    study = create_study(tmp_path / "study", {"m1": tmp_path / "m1", "m2": tmp_path / "m2"},
                         tmp_path / "ref", calibration=1, seed=3)
    server = MosServer(study, ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _wait(driver, script: str, previous=None, timeout: float = 10.0):
    """Poll ``script`` until it returns something truthy and different from ``previous``."""
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        value = d.execute_script(script)
        return value if value and value != previous else False

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)


READY = "return (ready && !busy && item) ? item.id : null;"


def _rate(driver, server, count: int, previous: str | None, mouse: bool) -> str | None:
    """Rate ``count`` items as a person would; returns the id of the last item rated."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    for _ in range(count):
        item_id = _wait(driver, READY, previous)
        item = server.study.items[item_id]
        score = item.anchor or QUALITY[item.method]
        if item.phase == "calibration":
            banner = driver.find_element(By.ID, "banner").text
            assert f"example of score {item.anchor}" in banner
            assert not driver.find_element(By.ID, f"score{6 - item.anchor}").is_enabled()
        else:  # blind: nothing on the page tells the method
            assert all(driver.find_element(By.ID, f"score{s}").is_enabled() for s in range(1, 6))
            assert "example" not in driver.find_element(By.ID, "banner").text
        if mouse:
            driver.find_element(By.ID, f"score{score}").click()
        else:
            ActionChains(driver).send_keys(str(score)).perform()
        _wait(driver, "return busy ? null : (item ? item.id : 'done');", item_id)  # saved
        previous = item_id
    return previous


def test_two_raters_score_a_study_in_chromium(served, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.url)
    assert "Image quality rating" in browser.title
    browser.find_element(By.ID, "name").send_keys("alice")
    browser.find_element(By.ID, "go").click()
    last = _rate(browser, served, 4, None, mouse=False)  # 2 calibration + 2 main items

    browser.refresh()  # come back later: the name is remembered, the place too
    assert browser.find_element(By.ID, "name").get_attribute("value") == "alice"
    browser.find_element(By.ID, "go").click()
    _wait(browser, READY, last)
    assert browser.find_element(By.ID, "count").text == "image 3 of 8"
    _rate(browser, served, 6, last, mouse=False)
    _wait(browser, "return document.getElementById('done').classList.contains('on');")
    assert "You rated all 8 images" in browser.find_element(By.ID, "summary").text

    browser.find_element(By.ID, "back").click()
    name = browser.find_element(By.ID, "name")
    name.clear()
    name.send_keys("bob")
    browser.find_element(By.ID, "go").click()
    last = _rate(browser, served, 5, None, mouse=True)
    browser.find_element(By.ID, "stop").click()  # stop, then carry on in the same session
    assert "saved" in browser.find_element(By.ID, "msg").text
    browser.find_element(By.ID, "go").click()
    _rate(browser, served, 5, last, mouse=True)
    _wait(browser, "return document.getElementById('done').classList.contains('on');")

    ratings = served.db.all()
    assert len(ratings) == 2 * 10 and {r.rater for r in ratings} == {"alice", "bob"}
    assert all(r.elapsed_ms is not None and r.elapsed_ms >= 0 for r in ratings)

    from plfw.mos.report import write_report

    report = write_report(served.study.root).read_text()
    assert "16 ratings by 2 rater(s) of 2 image(s) in 2 data set(s)" in report
    assert re.search(r"\| m2 \| 4\.00 \| .* \| 4 \| 2 \|", report)
    assert "| m1 | 2.00 [2.00, 2.00] (2) | 2.00 [2.00, 2.00] (2) |" in report
    assert (served.study.root / "mos_scores.png").is_file()
