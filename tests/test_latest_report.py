"""The report of `make test-latest`: chapters pinned vs newest, from the two lanes' junit files."""

from __future__ import annotations

import configparser
import re
import subprocess

from tools import latest_report
from scaling_ml import PROJECT_ROOT as ROOT


LATEST = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="notebooks.00_setup.ipynb" name="Cell 1" file="notebooks/00_setup.ipynb"/>
<testcase classname="notebooks.02_predict_large_data.ipynb" name="Cell 4"/>
<testcase classname="notebooks.02_predict_large_data.ipynb" name="Cell 7">
<failure message="#x1B[91mNotebook cell execution failed#x1B[0m">Cell 7: Cell execution caused an exception
Input: zarr.create(...)
Traceback (most recent call last):
TypeError: create_array() got an unexpected keyword argument 'compressor'</failure></testcase>
<testcase classname="notebooks.03_incremental_training.ipynb" name="Cell 9">
<failure message="Cell outputs differ">Unexpected output fields from running code: {'stderr'}</failure></testcase>
<testcase classname="tests.test_data" name="test_something">
<failure message="boom">ValueError: a | b</failure></testcase>
</testsuite></testsuites>
"""
PINNED = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="notebooks.00_setup.ipynb" name="Cell 1"/>
<testcase classname="notebooks.02_predict_large_data.ipynb" name="Cell 7"/>
<testcase classname="notebooks.03_incremental_training.ipynb" name="Cell 9"/>
</testsuite></testsuites>
"""


def test_the_report_has_a_row_per_chapter_with_pass_or_the_first_error(tmp_path):
    (tmp_path / "junit.xml").write_text(LATEST)
    (tmp_path / "junit-pinned.xml").write_text(PINNED)
    notebooks = ["notebooks/00_setup.ipynb", "notebooks/02_predict_large_data.ipynb",
                 "notebooks/03_incremental_training.ipynb", "notebooks/07_without_dask_ml.ipynb"]
    text = latest_report.report(tmp_path, notebooks, versions=["| dask | 2025.1.0 | 2026.1.0 |"])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("| 0")}
    assert rows["00_setup"] == "| 00_setup | pass | pass |"
    assert rows["02_predict_large_data"] == (
        "| 02_predict_large_data | pass | cell 7: TypeError: create_array() got an unexpected "
        "keyword argument 'compressor' |")
    assert "cell 9: output differs from the committed one: Unexpected output fields" in rows[
        "03_incremental_training"]
    assert rows["07_without_dask_ml"] == "| 07_without_dask_ml | not run | not run |"
    assert "5 tests with the newest releases, 3 failing" in text
    assert "| `tests.test_data::test_something` | ValueError: a \\| b |" in text  # | escaped


def test_a_missing_pinned_run_says_not_run(tmp_path):
    (tmp_path / "junit.xml").write_text(LATEST)
    text = latest_report.report(tmp_path, ["notebooks/00_setup.ipynb"], versions=[])
    assert "| 00_setup | not run | pass |" in text


def test_the_latest_sanitize_file_masks_versions_and_nothing_else():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "tests" / "nbval_sanitize_latest.cfg")

    def sanitize(text):
        for section in parser.sections():
            text = re.sub(parser[section]["regex"], parser[section]["replace"], text)
        return text

    pinned = "dask          2025.1.0  2025.1.0\npython: 3.11.7.final.0, jupyter-book 1.0.4.post1"
    newest = "dask          2025.1.0  2026.10.0\npython: 3.11.7.final.0, jupyter-book 2.1.0"
    assert sanitize(pinned) == sanitize(newest)
    kept = "accuracy 0.8925, 1,323 calls, 4.5 s, 12 workers"
    assert sanitize(kept) == kept
    # Dask's SVG picture of an array: coordinates masked, the table's text kept.
    svg_pinned = '<text x="12.706308" y="140.000000">8</text><td> 61.04 MiB </td>'
    svg_newest = '<text x="12.706308257291242" y="140.0">8</text><td> 61.04 MiB </td>'
    assert sanitize(svg_pinned) == sanitize(svg_newest)
    assert "61.04 MiB" in sanitize(svg_newest)


def test_the_lane_script_is_valid_bash_and_runs_the_report():
    script = (ROOT / "scripts" / "test_latest.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "test_latest.sh")], check=True)
    assert "tools.latest_report" in script and "nbval_sanitize_latest.cfg" in script
