"""The built site (_build/html), checked as a reader sees it: headless Chromium through Playwright.

`make test` builds the site (rendering the committed, nbval-verified outputs) before pytest runs.
Every page of the table of contents must load without console errors, with every image loaded and
every internal link resolving; notebook pages carry their figures and the launch buttons that
`_config.yml` configures (Binder always, JupyterHub only when an instructor set a hub's address, no
Colab), made from the one repository address; no page names a placeholder host or a `git clone`
placeholder. On every built page, at a laptop's and a phone's width, axe-core finds no serious or
critical violation, and at the phone's width nothing but a code block or a table scrolls sideways
(one visit per page and width). Screenshots of the home page and of a chapter are saved under
test-artifacts/.
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

import re
import subprocess
import sys

import pytest
import yaml

from scaling_ml import PROJECT_ROOT as ROOT
from scaling_ml import toc_files
from tools.site_check import check_site

SITE = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# As a reader offline would: no background traffic to Google's services, no sandbox as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.site
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPOSITORY_URL = CONFIG["repository"]["url"].rstrip("/")
# Hosts that can never be a real address (RFC 2606 / 6761): what a placeholder is made of.
PLACEHOLDER_HOST = re.compile(r"(^|\.)(example\.(com|net|org)|[^.]+\.(example|invalid|test|localdomain))$")


def expected_launch_links(toc_file: str, config: dict = CONFIG) -> dict[str, str]:
    """Start of each launch button's link a notebook page must carry, by button."""
    owner_and_name = REPOSITORY_URL.split("github.com/", 1)[1]
    branch = config["repository"].get("branch", "main")
    buttons = config.get("launch_buttons", {})
    links = {}
    if buttons.get("binderhub_url"):
        links["binder"] = (f"{buttons['binderhub_url'].rstrip('/')}/v2/gh/{owner_and_name}/{branch}"
                           f"?urlpath=lab/tree/{toc_file}.ipynb")
    if buttons.get("jupyterhub_url"):
        links["jupyterhub"] = f"{buttons['jupyterhub_url'].rstrip('/')}/hub/user-redirect/git-pull?repo="
    return links


def launch_links(page) -> list[str]:
    return page.eval_on_selector_all(
        ".dropdown-launch-buttons a[href]", "links => links.map(a => a.getAttribute('href'))")


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
        links = launch_links(page)
        expected = expected_launch_links(toc_file)
        assert expected, "_config.yml configures no launch button"
        for button, start in expected.items():
            assert any(link.startswith(start) for link in links), (
                f"{toc_file}: no {button} launch button starting {start} ({links})")
        assert len(links) == len(expected), f"{toc_file}: launch buttons {links}, expected {expected}"
        assert not [link for link in links if "colab" in link], f"{toc_file}: a Colab button ({links})"
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


# A reader's phone (an iPhone's 390 CSS pixels) and a laptop.
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 900}
# Every page of the site a reader can open: the table of contents' pages, the search and the index.
BUILT_PAGES = [*toc_files(), "search", "genindex"]
# The page's width, how wide it scrolls, and (to name the culprits when it scrolls sideways) the
# elements that stick out of it without a box of their own that scrolls, as a code block's does.
SIDEWAYS = """() => {
  const width = document.documentElement.clientWidth;
  const inOwnBox = (element) => {
    for (let parent = element.parentElement; parent; parent = parent.parentElement)
      if (["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(parent).overflowX)) return true;
    return false;
  };
  const wide = [...document.querySelectorAll("body *")].filter(
    (element) => element.getBoundingClientRect().right > width + 1 && !inOwnBox(element));
  return {width, scrollWidth: document.documentElement.scrollWidth,
          wide: wide.slice(0, 5).map((element) => element.outerHTML.slice(0, 160))};
}"""
# Impacts that fail the accessibility check; axe-core also reports "moderate" and "minor" ones.
FAILING_IMPACTS = {"serious", "critical"}


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
@pytest.mark.parametrize("html_page", BUILT_PAGES)
def test_axe_core_finds_no_serious_violation_and_a_phone_never_scrolls_sideways(
        browser, site_url, html_page, viewport):
    from axe_playwright_python.sync_playwright import Axe

    page = browser.new_page(viewport=viewport)
    page.goto(urljoin(site_url, f"{html_page}.html"), wait_until="load")
    page.wait_for_load_state("networkidle")
    layout = page.evaluate(SIDEWAYS) if viewport == PHONE else None  # it walks every element
    # label-content-name-mismatch (a button whose visible text is not in its accessible name) is
    # off by default in axe-core 4.12 ("experimental"); speech-input users depend on it.
    results = Axe().run(page, options={"resultTypes": ["violations"],
                                       "rules": {"label-content-name-mismatch": {"enabled": True}}})
    page.close()
    if layout is not None:
        assert layout["scrollWidth"] <= layout["width"], (
            f"{html_page} scrolls sideways at {PHONE['width']} px ({layout['scrollWidth']} px wide); "
            f"outside a code block or table box: {layout['wide']}")
    failing = [f"{violation['id']} ({violation['impact']}): {node['target']} {node['html'][:120]}"
               for violation in results.response["violations"] if violation["impact"] in FAILING_IMPACTS
               for node in violation["nodes"]]
    assert not failing, f"{html_page}.html at {viewport['width']} px:\n" + "\n".join(failing)


def test_chapter_2_links_a_performance_report_that_draws_its_task_stream(browser, site_url):
    """The report of a real run (tools/dashboard_figures.py copies it into _static/) opens from the
    chapter's link, with no script from the network, and draws its task stream's coloured bars."""
    from io import BytesIO

    from PIL import Image

    page = browser.new_page(viewport=LAPTOP)
    page.goto(urljoin(site_url, "notebooks/02_predict_large_data.html"), wait_until="load")
    page.click('a[href$="_static/predict_large_data_performance_report.html"]')
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
    assert page.evaluate("() => document.querySelectorAll('script[src]').length") == 0, "scripts from outside"
    page.get_by_text("Task Stream", exact=True).first.click()
    page.wait_for_timeout(1000)  # the tab's canvas draws
    picture = Image.open(BytesIO(page.screenshot())).convert("RGB")
    page.close()
    coloured = sum(max(pixel) - min(pixel) > 60 for pixel in picture.get_flattened_data())
    assert coloured > 50_000, f"the report's Task Stream tab shows {coloured} coloured pixels: no tasks drawn"


def page_texts(site: Path = SITE):
    for path in sorted(site.rglob("*.html")):
        yield path.relative_to(site), path.read_text(errors="replace")


def test_no_page_names_a_placeholder_host_or_a_placeholder_clone_command():
    assert (SITE / "index.html").is_file(), "no built site: run make render or make book"
    placeholder_hosts, clone_commands = [], {}
    for page, html in page_texts():
        for url in re.findall(r"""https?://[^\s"'<>)\]]+""", html):
            host = urlparse(url).hostname or ""
            if PLACEHOLDER_HOST.search(host):
                placeholder_hosts.append(f"{page}: {url}")
        text = re.sub(r"<[^>]+>", "", html)
        for command in re.findall(r"git clone\s+(\S+)", text):
            clone_commands.setdefault(command, []).append(str(page))
    assert not placeholder_hosts, f"placeholder hosts in the built site: {placeholder_hosts}"
    assert clone_commands, "no page shows how to clone the repository"
    wrong = {command: pages for command, pages in clone_commands.items()
             if command != f"{REPOSITORY_URL}.git"}
    assert not wrong, f"clone commands other than repository.url ({REPOSITORY_URL}.git): {wrong}"
    shown_on = {page for pages in clone_commands.values() for page in pages}
    assert {"book/setup.html", "book/instructor_guide.html"} <= shown_on, shown_on


def test_an_instructors_hub_address_adds_a_jupyterhub_button(tmp_path):
    """The one setting the instructor guide documents: launch_buttons.jupyterhub_url. A small build
    (chapter 0 only, committed outputs) with it set gets a JupyterHub button for the repository."""
    hub = "https://hub.university.edu"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert not config["launch_buttons"].get("jupyterhub_url"), "as shipped, no hub is set"
    config["launch_buttons"]["jupyterhub_url"] = hub
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"]["local_extensions"] = {  # they are found relative to the configuration file
        name: str(ROOT / folder) for name, folder in config["sphinx"]["local_extensions"].items()}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "notebooks/00_setup"}))
    build = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT),
         "--config", str(tmp_path / "_config.yml"), "--toc", str(tmp_path / "_toc.yml"),
         "--path-output", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    html = (tmp_path / "site" / "_build" / "html" / "notebooks" / "00_setup.html").read_text()
    links = [link.replace("&amp;", "&") for link in re.findall(r'href="([^"]*git-pull[^"]*)"', html)]
    expected = expected_launch_links("notebooks/00_setup", config)["jupyterhub"]
    assert links and all(link.startswith(expected) for link in links), links
    assert f"repo={REPOSITORY_URL}" in links[0].replace("%3A", ":").replace("%2F", "/"), links
