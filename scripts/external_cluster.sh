#!/usr/bin/env bash
# Chapter 5's external-cluster lane by hand (make test runs it too): a `dask scheduler` on a bridge
# of this machine, each `dask worker` in its own network namespace, run from an environment
# without the book's package, and strict nbval of chapters from a fresh clone of HEAD against
# them (tests/test_external_cluster.py says what exactly). Needs root. Exit code: pytest's.
#   scripts/external_cluster.sh            # chapters 00 01 03 04
#   scripts/external_cluster.sh 00 03      # only these chapters
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -gt 0 ]]; then
  export LANE_CHAPTERS="$*"
fi
export NEWSGROUPS_ARCHIVE=${NEWSGROUPS_ARCHIVE:-../shared/data/20news-bydate.tar.gz}
exec .venv/bin/pytest -s -p no:cacheprovider tests/test_external_cluster.py \
  -k notebooks_on_workers_in_their_own_network_namespaces
