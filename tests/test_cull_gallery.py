"""The culling gallery in headless Chromium: cull by keyboard, reload, sort, filter, export, re-apply with the CLI."""
from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from iaa_distill.cli import main
from tests.conftest import write_jpegs
from tests.test_web_page import CHROMEDRIVER, CHROMIUM, _ensure_chromium

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def chromium(downloads):
    """Headless Chromium that saves downloads into `downloads`."""
    _ensure_chromium()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="iaa-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files",
                 "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _cards(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#all .card")


def _press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def test_cull_by_keyboard_export_and_reapply(chromium, model_dir, sample_photos, tmp_path, downloads):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    photos = write_jpegs(tmp_path / "shoot", sample_photos, 8, size=160)
    out = tmp_path / "cull"
    assert main(["cull", str(tmp_path / "shoot"), "--model", str(model_dir), "--out", str(out), "--workers", "0",
                 "--no-progress", "--no-bursts"]) == 0
    decided = _rows(out / "decisions.csv")
    chromium.get((out / "gallery.html").as_uri())
    cards = _cards(chromium)
    assert len(cards) == len(photos) and all(c.get_attribute("data-flag") == "pick" for c in cards)
    scores = [float(r["score"]) for r in decided]
    slider = chromium.find_element(By.ID, "min-score")
    low, high, step = (float(slider.get_attribute(a)) for a in ("min", "max", "step"))
    spread = max(scores) - min(scores)  # a random model's scores lie within a thousandth of each other
    tolerance = 1e-6  # decisions.csv rounds scores to 6 decimals
    assert low - tolerance <= min(scores) <= low + step + tolerance  # spans the data, not the model's 1-10
    assert high - step - tolerance <= max(scores) <= high + tolerance
    assert 0 < step <= spread / 10
    name = cards[0].find_element(By.CSS_SELECTOR, ".name")
    assert name.text == Path(cards[0].get_attribute("data-path")).name and name.get_attribute("title").endswith(name.text)

    _press(chromium, Keys.ARROW_RIGHT, "x", Keys.ARROW_RIGHT, "u", Keys.ARROW_RIGHT, "3", Keys.ARROW_RIGHT, "x", Keys.ARROW_LEFT, "p")
    flags = {c.get_attribute("data-path"): c.get_attribute("data-flag") for c in _cards(chromium)}
    first, second, third, fourth = [c.get_attribute("data-path") for c in cards[:4]]
    assert (flags[first], flags[second], flags[fourth]) == ("reject", "unflagged", "reject")
    assert flags[third] == "pick" and _cards(chromium)[2].get_attribute("data-rating") == "3"
    shown = [(c.find_element(By.CSS_SELECTOR, ".flag").text, c.find_element(By.CSS_SELECTOR, ".stars").text) for c in _cards(chromium)[:3]]
    assert shown == [("reject", shown[0][1]), ("unflagged", shown[1][1]), ("pick", "\u2605\u2605\u2605\u2606\u2606")]
    assert len(shown[0][1]) == 5, "a reject shows its stars too"

    chromium.refresh()  # decisions survive a reload (localStorage)
    again = {c.get_attribute("data-path"): c.get_attribute("data-flag") for c in _cards(chromium)}
    assert again == flags and "rejected" in _cards(chromium)[0].get_attribute("class")

    _cards(chromium)[1].click()  # click enlarges; Escape closes
    assert chromium.find_element(By.ID, "lightbox").is_displayed()
    _press(chromium, Keys.ESCAPE)
    assert not chromium.find_element(By.ID, "lightbox").is_displayed()

    chromium.find_element(By.CSS_SELECTOR, "#sort option[value='name']").click()
    names = [c.get_attribute("data-name") for c in _cards(chromium)]
    assert names == sorted(names)
    middle = sorted(scores)[len(scores) // 2]
    threshold = float(chromium.execute_script(  # the slider snaps the value to its step: read back what it holds
        "const s=document.getElementById('min-score');s.value=arguments[0];"
        "s.dispatchEvent(new Event('input'));return s.value", f"{middle:.6f}"))
    assert abs(threshold - middle) <= step
    card_scores = [float(c.get_attribute("data-score")) for c in _cards(chromium)]
    shown = [c for c in _cards(chromium) if c.is_displayed()]
    assert len(shown) == sum(s >= threshold - 1e-9 for s in card_scores) and 0 < len(shown) < len(scores)

    ratings = {c.get_attribute("data-path"): c.get_attribute("data-rating") for c in _cards(chromium)}
    chromium.find_element(By.ID, "export-csv").click()
    exported = downloads / "decisions.csv"
    deadline = time.time() + 20
    while not (exported.exists() and exported.stat().st_size) and time.time() < deadline:
        time.sleep(0.1)  # the download can appear before its bytes do
    rows = {r["path"]: r for r in _rows(exported)}
    # a reject keeps its stars in the export (issue 21: it was -1; the XMP writes a reject as -1 with iaa:Stars)
    assert {p: r["flag"] for p, r in rows.items()} == flags and rows[first]["rating"] == ratings[first] != "-1"
    # the export lies in the downloads folder: the shoot is named, entries outside it would be refused (issue 21)
    assert main(["cull", str(tmp_path / "shoot"), "--decisions", str(exported), "--copy-to", str(tmp_path / "picks"),
                 "--apply"]) == 0
    picked = sorted(Path(p).name for p, f in flags.items() if f == "pick")
    assert sorted(p.name for p in (tmp_path / "picks").iterdir()) == picked and len(picked) == len(photos) - 3
