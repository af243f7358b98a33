"""The built site (_build/html), checked as a reader sees it: headless Chromium through Playwright.

`make test` builds the site (rendering the committed, nbval-verified outputs) before pytest runs.
Every page of the table of contents must load without console errors, with every image loaded and
every internal link resolving; notebook pages carry launch buttons and their figures. Screenshots of
the home page and of a chapter are saved under test-artifacts/.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from scaling_ml.site_check import check_site, toc_files

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# As a reader offline would: no background traffic to Google's services, no sandbox as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.site


def notebook_has_figures(toc_file: str) -> bool:
    path = ROOT / f"{toc_file}.ipynb"
    if not path.exists():
        return False
    notebook = json.loads(path.read_text())
    return any("image/png" in output.get("data", {})
               for cell in notebook["cells"] if cell["cell_type"] == "code"
               for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site at {SITE}: run `make render` (part of `make test`) or `make book` first")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *arguments):
        pass


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (the CI script does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_every_toc_page_was_built_with_outputs():
    assert not check_site(SITE), check_site(SITE)


@pytest.mark.parametrize("toc_file", toc_files())
def test_page_loads_cleanly(browser, site_url, toc_file):
    page = browser.new_page()
    console_errors, failed_requests = [], []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    page.on("requestfailed", lambda request: failed_requests.append(request.url))
    url = urljoin(site_url, f"{toc_file}.html")
    response = page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"{url}: HTTP {response and response.status}"
    page.wait_for_load_state("networkidle")

    assert not console_errors, f"{toc_file}: console errors {console_errors}"
    assert not failed_requests, f"{toc_file}: failed requests {failed_requests}"

    broken_images = page.eval_on_selector_all(
        "img", "images => images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert not broken_images, f"{toc_file}: images that did not load {broken_images}"

    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    internal = sorted({href.split("#")[0] for href in hrefs
                       if urlparse(href).netloc == urlparse(site_url).netloc})
    for href in internal:
        status = page.request.get(href).status
        assert status == 200, f"{toc_file}: internal link {href} answers {status}"

    if toc_file.startswith("notebooks/"):
        launch_links = page.eval_on_selector_all(
            "a[href]", "links => links.map(a => a.href).filter(h => /mybinder|colab|git-pull/.test(h))")
        assert {"mybinder", "colab", "git-pull"} <= {
            key for key in ("mybinder", "colab", "git-pull") for link in launch_links if key in link
        }, f"{toc_file}: launch buttons missing ({launch_links})"
        if notebook_has_figures(toc_file):
            figures = page.eval_on_selector_all(
                ".cell_output img", "images => images.filter(i => i.naturalWidth > 0).length")
            assert figures > 0, f"{toc_file}: the notebook has figures but the page shows none"
    page.close()


def test_screenshots_of_the_home_page_and_a_chapter(browser, site_url):
    ARTIFACTS.mkdir(exist_ok=True)
    chapters = [file for file in toc_files() if file.startswith("notebooks/0") and notebook_has_figures(file)]
    targets = {"home": "index.html", "chapter": f"{(chapters or ['notebooks/00_setup'])[0]}.html"}
    for name, path in targets.items():
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(urljoin(site_url, path), wait_until="networkidle")
        screenshot = ARTIFACTS / f"site_{name}.png"
        page.screenshot(path=str(screenshot), full_page=name == "chapter")
        page.close()
        assert screenshot.stat().st_size > 10_000, f"{screenshot} looks empty"
