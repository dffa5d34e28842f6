"""The web page in a real browser: headless Chromium driven by Selenium (Debian's ``chromium``
and ``chromium-driver``; CI installs them, see .ci/run). Skips, saying why, without them."""
from __future__ import annotations

import shutil
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("selenium", reason="selenium is not installed (test extra)")

from PIL import Image  # noqa: E402

from stylegrad import StyleConfig  # noqa: E402
from stylegrad.service import Limits, ServiceSettings  # noqa: E402

from .helpers import ENGINE, LiveServer, write_png  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


def headless_browser(download_dir=None, width=1100, height=900):
    """Headless Chromium (Selenium); None when no browser or driver is installed."""
    if CHROMIUM is None or DRIVER is None:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    if download_dir is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                               "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    if download_dir is not None:
        drv.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return drv


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="no headless browser: apt-get install chromium chromium-driver (CI installs them)")
def test_page_uploads_two_images_shows_and_downloads_the_result(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    content = write_png(tmp_path / "photo.png", 1, 48, 36)
    style = write_png(tmp_path / "painting.png", 2, 40, 40)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    settings = ServiceSettings(data=tmp_path / "data", config=StyleConfig(**ENGINE), limits=Limits(max_size=64))
    with LiveServer(settings) as server:
        drv = headless_browser(downloads)
        try:
            drv.get(server.url + "/")
            drv.find_element(By.ID, "content").send_keys(str(content))
            drv.find_element(By.ID, "style").send_keys(str(style))
            for field, value in (("size", "32"), ("iters", "40")):
                el = drv.find_element(By.ID, field)
                el.clear()
                el.send_keys(value)
            drv.find_element(By.ID, "submit").click()
            wait = WebDriverWait(drv, 120, poll_frequency=0.1)
            # the live picture appears while it runs (snapshots through the events stream)
            wait.until(lambda d: d.execute_script("return document.getElementById('live').naturalWidth") > 0)
            wait.until(lambda d: d.find_element(By.ID, "download").is_displayed())
            size = drv.execute_script("const i = document.getElementById('result'); return [i.naturalWidth, i.naturalHeight]")
            assert size == [32, 24]
            assert drv.find_element(By.ID, "status").text.startswith("done")
            drv.find_element(By.ID, "download").click()
            deadline = time.monotonic() + 30
            while not list(downloads.glob("*.png")):
                assert time.monotonic() < deadline, "nothing downloaded"
                time.sleep(0.1)
            got = next(downloads.glob("*.png"))
            time.sleep(0.2)
            assert Image.open(got).size == (32, 24)
            # what was downloaded is the job's result, byte for byte
            job = server.service.store.list("local", 10, 0)[0]
            assert job["status"] == "done"
            assert got.read_bytes() == server.service.result_path(job["result"]).read_bytes()
        finally:
            drv.quit()
