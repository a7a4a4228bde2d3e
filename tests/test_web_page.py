"""End to end: the served page in headless Chromium uploads a photo and shows the API's score."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import save_tiny_student, write_jpegs

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("single_thread")]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _ensure_chromium() -> None:
    """Install Debian's chromium + chromium-driver when missing and we are root; else skip."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver, as root)")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        result = subprocess.run(install, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            pytest.skip(f"could not install chromium: {result.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="session")
def browser():
    _ensure_chromium()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="iaa-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from iaa_distill.scoring.server import create_app

    model_dir = save_tiny_student(tmp_path_factory.mktemp("student"))
    port = _free_port()
    config = uvicorn.Config(create_app(model_dir, device="cpu"), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not instance.started and time.time() < deadline:
        time.sleep(0.05)
    assert instance.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def test_upload_in_browser_shows_the_api_score(browser, server, sample_photos, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = write_jpegs(tmp_path, sample_photos, 1, size=96)[0]
    api = httpx.post(f"{server}/score", files={"files": (photo.name, photo.read_bytes(), "image/jpeg")}).json()["results"][0]

    browser.get(server + "/")
    WebDriverWait(browser, 20).until(lambda d: "test_efficientnet" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "files").send_keys(str(photo))
    score = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .score"))[0]
    assert float(score.get_attribute("data-value")) == pytest.approx(api["mean"], abs=1e-6)
    assert score.text.startswith(f"{api['mean']:.2f}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results .bar")) == 10
    assert photo.name in browser.find_element(By.CSS_SELECTOR, "#results .name").text

    fake = tmp_path / "notes.jpg"
    fake.write_text("not a photo")
    browser.find_element(By.ID, "files").send_keys(str(fake))
    status = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text.startswith("Error") and d.find_element(By.ID, "status"))
    assert "notes.jpg" in status.text and len(browser.find_elements(By.CSS_SELECTOR, "#results .result")) == 1

    # a bad file among good ones only fails itself
    browser.find_element(By.ID, "files").send_keys(f"{fake}\n{photo}")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 2)
    status = WebDriverWait(browser, 30).until(lambda d: "Scored 1 photo." in d.find_element(By.ID, "status").text
                                              and d.find_element(By.ID, "status"))
    assert status.text.startswith("Error") and "notes.jpg" in status.text


def test_phone_width_fits_and_results_keep_upload_order_or_sort_by_score(browser, server, sample_photos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    photos = write_jpegs(tmp_path, sample_photos, 3, size=300)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True})
    try:
        browser.get(server + "/")
        WebDriverWait(browser, 20).until(lambda d: "test_efficientnet" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in photos))
        WebDriverWait(browser, 60).until(lambda d: "Scored 3 photos." in d.find_element(By.ID, "status").text)
        widest = browser.execute_script(
            "return Math.max(document.documentElement.scrollWidth,"
            " ...Array.from(document.querySelectorAll('body *')).map(e => e.getBoundingClientRect().right))")
        assert widest <= 390, f"the page is {widest} px wide on a 390 px phone"
        names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .name")]
        assert names == [p.name for p in photos], "upload order"
        Select(browser.find_element(By.ID, "order")).select_by_value("score")
        scores = [float(e.get_attribute("data-value")) for e in browser.find_elements(By.CSS_SELECTOR, "#results .score")]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3
        Select(browser.find_element(By.ID, "order")).select_by_value("upload")
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .name")] == names
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
