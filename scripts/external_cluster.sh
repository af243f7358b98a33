#!/usr/bin/env bash
# Run chapter notebooks through strict nbval on an external Dask cluster (chapter 5):
# starts `dask scheduler` and two `dask worker` processes on 127.0.0.1 from .venv, sets
# DASK_SCHEDULER_ADDRESS, runs nbval with tests/nbval_sanitize.cfg, and stops every process
# it started, also when a notebook fails. Exit code: pytest's.
#   scripts/external_cluster.sh                      # every notebooks/NN_*.ipynb
#   scripts/external_cluster.sh notebooks/00_setup.ipynb --log-dir _build/external-logs
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m scaling_ml.laptop_to_cluster external-nbval "$@"
