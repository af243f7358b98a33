"""The tools that build, check and teach from the book; a reader never imports them.

Each module is a command run from the repository's root (the Makefile runs them all):

* ``python -m tools.status``: the generated Status page and favicon; ``--stamp-notebooks`` writes
  each notebook's measured execution time into its "Time to learn" line (``make notebooks``);
* ``python -m tools.site_check _build/html``: every page of the table of contents was built with
  its outputs (``make book``);
* ``python -m tools.workshop``: the learners' copies of the notebooks and the workshop schedule;
* ``python -m tools.wheelhouse``: the learner set's wheels for an offline install;
* ``python -m tools.leftover_processes``: no process of this run outlives it (``make``);
* ``python -m tools.latest_report``: the report of ``make test-latest``;
* ``python -m tools.dashboard_figures``: pictures of the live dashboard while the chapters' cells
  run, and chapter 2's performance report (``make dashboard-figures``);
* ``python -m tools.scatter_session``: chapter 1's scattered search, run again and again in one
  session (a regression test runs it);
* ``tools.kernel_provisioner``: the kernels that execute the notebooks start encrypted.
"""

import yaml

from scaling_ml import PROJECT_ROOT

# Seconds a notebook cell may run, for every runner of the notebooks (Jupyter Book, nbval, nbconvert).
CELL_TIMEOUT = int(yaml.safe_load((PROJECT_ROOT / "_config.yml").read_text())["execute"]["timeout"])
