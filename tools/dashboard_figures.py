"""Pictures of the live Dask dashboard, taken while the chapters' own cells run: figs/dashboard_*.png.

    python -m tools.dashboard_figures                          # every picture (make dashboard-figures)
    python -m tools.dashboard_figures 02_predict_large_data    # one chapter's pictures
    python -m tools.dashboard_figures --output /tmp/pictures   # somewhere else than figs/, _static/

For each chapter a real Jupyter kernel (as `make notebooks` and nbval start one, in notebooks/)
executes the notebook's own code cells in order, leaving out the exercises' solutions, up to the
last cell a picture or a clean-up needs, then the chapter's last code cell, which closes its client.
The cluster is the one the chapter starts (a LocalCluster on 127.0.0.1), at the chapter's sizes.
Around each pictured cell headless Chromium (Playwright, with the flags of the site tests) opens a
page of that cluster's live dashboard (a page of one panel where one panel is the point) and saves
it as a palette PNG: after the cell, at a line of it (the cell runs up to the line, the picture is
taken, the rest of the cell runs), or during the cell as soon as a condition on the dashboard's own
data holds. A task stream is zoomed onto the cell's own tasks, a time series widened to the whole
cell.

Chapter 2 wraps its main computation in `performance_report(..., mode="inline")`, which writes into
the chapter's scratch folder; the report of this run is copied to _static/, from where the website
links it.

Every picture here is shown by its chapter, with a sentence saying what to see in it
(tests/test_dashboard_figures.py checks both ways, and runs this tool), and so is the report.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from PIL import Image

from scaling_ml import PROJECT_ROOT, BookError
from tools import CELL_TIMEOUT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
FIGURES = PROJECT_ROOT / "figs"
REPORTS = PROJECT_ROOT / "_static"  # Jupyter Book copies it into the site as it is
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# As a reader offline would: no background traffic to Google's services, no sandbox as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The dashboard redraws every 100 to 500 ms, and learns the workers' memory from their heartbeats.
SETTLE_SECONDS = 2.0
COLOURS = 128  # a palette PNG: the dashboard's flat colours fit in far fewer


@dataclass(frozen=True)
class Picture:
    """One picture: which cell's run, which dashboard page, which moment, which part of the page."""

    file: str                       # written as figs/<file>
    cell: str                       # text that only the pictured code cell of the notebook holds
    page: str                       # the dashboard page, the end of its address ("status", "workers")
    client: str = "client"          # the notebook's name for the Client whose dashboard is shown
    at_line: str | None = None      # picture when the cell has run up to this line (then the rest)
    when: str | None = None         # JavaScript on the page's Bokeh data: picture once it is true
    viewport: tuple[int, int] = (1100, 640)
    zoom_on_cell: bool = False      # zoom the page's task stream onto the cell's tasks
    whole_cell: bool = False        # a time series from the cell's start, not its last 20 seconds


@dataclass(frozen=True)
class Chapter:
    notebook: str                   # the stem of notebooks/<notebook>.ipynb
    pictures: tuple[Picture, ...]
    run_through: str | None = None  # text of a later cell that must run too (it closes a cluster)
    report: str | None = None       # the variable holding the path of the performance report
                                    # that the pictured cell writes (copied to _static/)


def page_data(condition: str) -> str:
    """JavaScript that is true once ``condition`` holds for ``values(column)``: every value of that
    column in the data sources of the dashboard page (Bokeh models), as a list."""
    return """() => {
  const values = (column) => {
    const found = [];
    for (const document_ of (window.Bokeh ? Bokeh.documents : []))
      for (const model of document_.all_models) {
        const data = model.data instanceof Map ? Object.fromEntries(model.data) : model.data;
        if (data && column in data) found.push(...Array.from(data[column]));
      }
    return found;
  };
  return """ + condition + """;
}"""


# A moment on a dashboard page can be frozen: once the picture's condition holds (checked every
# 20 ms: a worker's red bar before its nanny kills it lasts a fraction of a second), the page drops
# the server's further updates and keeps showing that moment.
IGNORE_UPDATES_WHEN_FROZEN = """
window.dashboardFrozen = false;
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...parameters) {
    super(...parameters);
    // Registered before Bokeh's own handler, so it can keep the message from reaching it.
    this.addEventListener("message", (event) => {
      if (window.dashboardFrozen) event.stopImmediatePropagation();
    });
  }
};
"""
FREEZE_WHEN = """(source) => {
  const condition = new Function("return " + source)();
  const timer = setInterval(() => {
    let holds = false;
    try { holds = condition(); } catch (error) { holds = false; }
    if (holds) {
      clearInterval(timer);
      window.dashboardFrozen = true;
    }
  }, 20);
}"""

# The task stream of a page keeps earlier computations beside a new one unless a long pause
# separates them. Before the cell the tool notes which rectangles the page shows; after it, it
# zooms the time axis onto the new ones, as a reader does with the page's zoom tools.
TASK_STREAM_SOURCE = """const taskStream = () => {
  for (const document_ of Bokeh.documents) {
    const plot = document_.get_model_by_name("task_stream");
    if (plot) return [plot, plot.renderers[0].data_source];
  }
  throw new Error("no task stream on this page");
};
const column = (source, name) => Array.from(
  source.data instanceof Map ? source.data.get(name) : source.data[name]);
const rectangles = (source) => column(source, "key").map(
  (key, index) => key + "@" + column(source, "start")[index]);"""
NOTE_RECTANGLES = "() => {" + TASK_STREAM_SOURCE + """
  window.dashboardEarlierRectangles = new Set(rectangles(taskStream()[1]));
}"""
ZOOM_ON_NEW_RECTANGLES = "() => {" + TASK_STREAM_SOURCE + """
  const [plot, source] = taskStream();
  const starts = column(source, "start"), widths = column(source, "duration");
  const seen = window.dashboardEarlierRectangles;
  const new_ = rectangles(source).map((rectangle, index) => [rectangle, index])
    .filter(([rectangle, index]) => !seen.has(rectangle) && column(source, "key")[index] !== "start")
    .map(([, index]) => index);
  if (!new_.length) throw new Error("the cell ran no task");
  const low = Math.min(...new_.map((index) => starts[index] - widths[index] / 2));
  const high = Math.max(...new_.map((index) => starts[index] + widths[index] / 2));
  const margin = 0.02 * (high - low);
  plot.x_range.have_updated_interactively = true;
  plot.x_range.setv({start: low - margin, end: high + margin});
  const kinds = {};  // rectangles by name (a task's prefix, or transfer-..., disk-...), and colour
  for (const index of new_) {
    const kind = column(source, "name")[index] + " (" + column(source, "color")[index] + ")";
    kinds[kind] = (kinds[kind] || 0) + 1;
  }
  return kinds;
}"""

# A time series page follows its last 20 seconds; after the cell the tool stops the page's updates
# and widens its time axis to all it recorded since it opened, just before the cell started.
SHOW_WHOLE_CELL = """() => {
  window.dashboardFrozen = true;
  for (const document_ of Bokeh.documents)
    for (const model of document_.all_models) {
      if (!(model.x_range && model.renderers && model.renderers.length)) continue;
      const data = model.renderers[0].data_source.data;
      const times = Array.from(data instanceof Map ? data.get("time") : data.time);
      model.x_range.have_updated_interactively = true;
      model.x_range.setv({follow: null, start: Math.min(...times), end: Math.max(...times)});
    }
}"""

STATUS = (1100, 640)  # wide enough for the Status page to lay its panels side by side
TASK_STREAM = (900, 300)
WORKERS_MEMORY = (700, 220)

CHAPTERS = (
    Chapter("00_setup", (
        Picture("dashboard_setup_status.png", cell="random_numbers = random_numbers.persist()",
                page="status", viewport=STATUS),
    )),
    Chapter("01_distributed_training", (
        Picture("dashboard_distributed_training_task_stream.png", cell="dask_search.fit(data.data",
                page="individual-task-stream", viewport=TASK_STREAM, zoom_on_cell=True),
        Picture("dashboard_distributed_training_task_stream_scattered.png",
                cell="scatter_search.fit(data.data", page="individual-task-stream",
                viewport=TASK_STREAM, zoom_on_cell=True),
    )),
    Chapter("02_predict_large_data", (
        Picture("dashboard_predict_large_data_memory.png", cell="predictions.to_zarr(",
                page="individual-workers-memory-timeseries", viewport=(900, 360),
                whole_cell=True),
    ), report="report_path"),
    Chapter("03_incremental_training", (
        Picture("dashboard_incremental_training_task_stream.png",
                cell="two_workers = MemorySampler()", page="individual-task-stream",
                client="small_client", viewport=TASK_STREAM, zoom_on_cell=True),
    ), run_through="small_client.close()"),
    Chapter("06_when_scaling_goes_wrong", (
        Picture("dashboard_when_scaling_goes_wrong_spilling.png", cell="stored = small.persist(",
                at_line="del stored", page="individual-workers-memory", client="small",
                when=page_data("Math.max(0, ...values('spilled')) > 0"), viewport=WORKERS_MEMORY),
        # The bar turns red once the scheduler knows the worker paused (past 80 % of its limit),
        # on its way to 95 %, where its nanny kills it.
        Picture("dashboard_when_scaling_goes_wrong_killed_worker.png",
                cell="small.submit(hold_memory, 1.0", page="individual-workers-memory", client="small",
                when=page_data("values('color').includes('red')"), viewport=WORKERS_MEMORY),
    ), run_through="small.close()"),
)


def chapters(names=None) -> list[Chapter]:
    """The chapters to picture: all, or those whose notebook stem or number is in ``names``."""
    if not names:
        return list(CHAPTERS)
    names = [Path(name).stem for name in names]  # notebooks/02_x.ipynb, as make's NB= gives it
    chosen = [chapter for chapter in CHAPTERS
              if chapter.notebook in names or chapter.notebook.split("_", 1)[0] in names]
    unknown = set(names) - {name for chapter in chosen for name in (chapter.notebook, chapter.notebook[:2])}
    if unknown:
        raise BookError(f"No dashboard pictures for {sorted(unknown)}: choose among "
                        f"{[chapter.notebook for chapter in CHAPTERS]} (or their numbers).")
    return chosen


def picture_files() -> list[str]:
    """figs/... of every picture this tool writes."""
    return [f"figs/{picture.file}" for chapter in CHAPTERS for picture in chapter.pictures]


def report_files() -> list[str]:
    """_static/... of every performance report this tool copies from a chapter's run."""
    return [f"_static/{report_name(chapter)}" for chapter in CHAPTERS if chapter.report]


def report_name(chapter: Chapter) -> str:
    return f"{chapter.notebook.split('_', 1)[1]}_performance_report.html"


def find_cell(cells: list, text: str, notebook: str) -> int:
    """The index of the one code cell holding ``text``; BookError when none or several do."""
    found = [index for index, cell in enumerate(cells)
             if cell.cell_type == "code" and text in cell.source]
    if len(found) != 1:
        raise BookError(
            f"{notebook}.ipynb has {len(found)} code cells holding {text!r}, where one was expected: "
            "the chapter changed. Update CHAPTERS in tools/dashboard_figures.py to the cell it "
            "now pictures, and check the sentence beside the picture.")
    return found[0]


def plan(chapter: Chapter, notebook=None) -> tuple[list[int], dict[int, list[Picture]]]:
    """The indices of the code cells to run, in order, and the pictures taken around each."""
    notebook = notebook or nbformat.read(NOTEBOOKS / f"{chapter.notebook}.ipynb", as_version=4)
    cells = notebook.cells
    pictured: dict[int, list[Picture]] = {}
    for picture in chapter.pictures:
        index = find_cell(cells, picture.cell, chapter.notebook)
        if picture.at_line:
            split_at(cells[index].source, picture.at_line, chapter.notebook)
        pictured.setdefault(index, []).append(picture)
    needed = [*pictured]
    if chapter.run_through:
        needed.append(find_cell(cells, chapter.run_through, chapter.notebook))
    code = [index for index, cell in enumerate(cells) if cell.cell_type == "code"]
    last = max(needed)
    run = [index for index in code if index <= last
           and "solution" not in cells[index].metadata.get("tags", [])]
    if code[-1] not in run:
        run.append(code[-1])  # the chapter's last cell closes its client
    return run, pictured


def split_at(source: str, line: str, notebook: str = "the notebook") -> tuple[str, str]:
    """The cell's code before the first line that starts (after indentation) with ``line``, and
    the rest."""
    lines = source.splitlines(keepends=True)
    for number, text in enumerate(lines):
        if text.strip().startswith(line):
            return "".join(lines[:number]), "".join(lines[number:])
    raise BookError(f"{notebook}: no line starts with {line!r} in the cell\n{source}\nUpdate "
                    "CHAPTERS in tools/dashboard_figures.py to the chapter's code.")


def shown(path: Path) -> Path:
    """The path as a reader of the output knows it: from the repository's root when inside it."""
    return path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path


def save_png(png: bytes, path: Path) -> None:
    """A palette PNG of a screenshot: the dashboard's flat colours, a fraction of the bytes."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    palette = image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    palette.save(path, optimize=True)


class Run:
    """One chapter executed in a kernel, with a browser that photographs its dashboard."""

    def __init__(self, chapter: Chapter, browser, figures: Path, reports: Path):
        from nbclient import NotebookClient

        self.chapter, self.browser, self.figures, self.reports = chapter, browser, figures, reports
        self.notebook = nbformat.read(NOTEBOOKS / f"{chapter.notebook}.ipynb", as_version=4)
        self.client = NotebookClient(self.notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
        self.written: list[Path] = []

    async def run_code(self, source: str, index: int) -> str:
        """Run code in the kernel as a cell; return what it printed."""
        cell = nbformat.v4.new_code_cell(source)
        await self.client.async_execute_cell(cell, index)
        return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")

    async def dashboard_page(self, picture: Picture):
        link = (await self.run_code(f"print({picture.client}.dashboard_link)", 0)).strip()
        if not re.fullmatch(r"https?://\S+/status", link):
            raise BookError(f"{self.chapter.notebook}: {picture.client}.dashboard_link is {link!r}, "
                            "not a dashboard's /status address")
        page = await self.browser.new_page(viewport=dict(zip(("width", "height"), picture.viewport)))
        await page.add_init_script(IGNORE_UPDATES_WHEN_FROZEN)
        await page.goto(f"{link.rsplit('/', 1)[0]}/{picture.page}", wait_until="load")
        await page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
        await asyncio.sleep(SETTLE_SECONDS)  # the page's first update from the server
        if picture.zoom_on_cell:
            await page.evaluate(NOTE_RECTANGLES)
        return page

    async def photograph(self, page, picture: Picture) -> None:
        if picture.whole_cell:
            await page.evaluate(SHOW_WHOLE_CELL)
            await asyncio.sleep(0.5)  # the canvas redraws
        if picture.zoom_on_cell:
            kinds = await page.evaluate(ZOOM_ON_NEW_RECTANGLES)
            print(f"  {picture.file}: the cell's task stream shows "
                  + ", ".join(f"{count} x {kind}" for kind, count in sorted(kinds.items())), flush=True)
            await asyncio.sleep(0.5)  # the canvas redraws
        png = await page.screenshot()
        path = self.figures / picture.file
        save_png(png, path)
        self.written.append(path)
        print(f"  {shown(path)} ({path.stat().st_size / 1e3:.0f} kB)", flush=True)

    async def run_pictured_cell(self, index: int, pictures: list[Picture]) -> None:
        """Run the cell, photographing each page at its picture's moment."""
        cell = self.notebook.cells[index]
        pages = [(picture, await self.dashboard_page(picture)) for picture in pictures]
        at_line = [(picture, page) for picture, page in pages if picture.at_line]
        during = [(picture, page) for picture, page in pages if picture.when and not picture.at_line]
        after = [(picture, page) for picture, page in pages if not (picture.at_line or picture.when)]
        if len({picture.at_line for picture, _ in at_line}) > 1:
            raise BookError(f"{self.chapter.notebook}: pictures of one cell stop it at one line at most")
        if at_line:
            before, rest = split_at(cell.source, at_line[0][0].at_line, self.chapter.notebook)
            await self.run_code(before, index)
            for picture, page in at_line:
                await self.photograph_when(page, picture, timeout=30)
            cell_run = self.run_code(rest, index)
        else:
            cell_run = self.client.async_execute_cell(cell, index)
        waiting = [asyncio.ensure_future(self.photograph_when(page, picture, timeout=None))
                   for picture, page in during]
        await cell_run
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=SETTLE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                raise BookError(f"{self.chapter.notebook}: the moment of "
                                f"{[picture.file for picture, _ in during]} never came while the cell ran")
            for task in waiting:
                task.result()
        await asyncio.sleep(SETTLE_SECONDS)
        for picture, page in after:
            await self.photograph(page, picture)
        for _, page in pages:
            await page.close()

    async def photograph_when(self, page, picture: Picture, timeout: float | None) -> None:
        """Photograph the page once the picture's condition holds (at once if it has none)."""
        if picture.when:
            await page.evaluate(FREEZE_WHEN, picture.when)
            try:
                await page.wait_for_function("() => window.dashboardFrozen === true", polling=100,
                                             timeout=1000 * timeout if timeout else 0)
            except Exception as error:
                raise BookError(f"{self.chapter.notebook}: the dashboard never showed what "
                                f"{picture.file} needs ({picture.when})") from error
            await asyncio.sleep(0.5)  # the canvas draws the frozen moment
        else:
            await asyncio.sleep(SETTLE_SECONDS)
        await self.photograph(page, picture)

    async def copy_report(self) -> None:
        """Copy the performance report the chapter's run wrote (into its scratch folder)."""
        written = Path((await self.run_code(f"print({self.chapter.report})", 0)).strip())
        html = (NOTEBOOKS / written).read_text()  # relative paths are the notebook's
        if "cdn.bokeh.org" in html:
            raise BookError(f"{written} loads BokehJS from a CDN: pass mode='inline' to "
                            "performance_report, so that the report opens without a network")
        target = self.reports / report_name(self.chapter)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html)
        self.written.append(target)
        print(f"  {shown(target)} ({len(html) / 1e6:.1f} MB)", flush=True)

    async def execute(self) -> list[Path]:
        run, pictured = plan(self.chapter, self.notebook)
        environment = {key: value for key, value in os.environ.items()
                       if key != "DASK_SCHEDULER_ADDRESS"}  # the chapter's own LocalCluster
        async with self.client.async_setup_kernel(env=environment):
            try:
                for index in run:
                    if index in pictured:
                        await self.run_pictured_cell(index, pictured[index])
                        if self.chapter.report and index == max(pictured):
                            await self.copy_report()
                    else:
                        await self.client.async_execute_cell(self.notebook.cells[index], index)
            except BaseException:
                last = run[-1]
                if index != last:  # close the chapter's client before the kernel goes
                    await self.client.async_execute_cell(self.notebook.cells[last], last)
                raise
        return self.written


async def make_pictures(selected: list[Chapter], figures: Path, reports: Path) -> list[Path]:
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise BookError(f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium) "
                        "or set CHROMIUM=/path/to/chromium")
    written = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for chapter in selected:
                start = time.perf_counter()
                print(f"{chapter.notebook}:", flush=True)
                written += await Run(chapter, browser, figures, reports).execute()
                print(f"  {time.perf_counter() - start:.0f} s", flush=True)
        finally:
            await browser.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="notebook stems or numbers (default: all)")
    parser.add_argument("--output", type=Path,
                        help="write the pictures and reports here instead of figs/ and _static/")
    parser.add_argument("--list", action="store_true", help="print the files it writes, and stop")
    arguments = parser.parse_args(argv)
    if arguments.list:
        print("\n".join(picture_files() + report_files()))
        return 0
    selected = chapters(arguments.chapters)
    figures = arguments.output or FIGURES
    start = time.perf_counter()
    written = asyncio.run(make_pictures(selected, figures, arguments.output or REPORTS))
    print(f"{len(written)} files in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
