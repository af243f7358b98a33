#!/usr/bin/env bash
# How long `make book` takes (issue 16, "fast rebuilds"), three ways:
#   clean      _build removed: every notebook is executed
#   unchanged  nothing changed since the last build: every notebook comes from the execution cache
#   one        a comment added to one code cell of one notebook: that notebook alone is executed
# For each run it prints the wall time and how many notebooks were executed and how many came
# from the cache (counted from Jupyter Book's log). The notebook edited for "one" is restored at
# the end, also on failure. Wall times on a machine shared with other work are noisy: repeat, and
# read the CPU time (user + system of make and every process it waited for, GNU time) beside them.
#   scripts/time_rebuilds.sh                       # NOTEBOOK=notebooks/00_setup.ipynb REPEATS=3
# FIRST=seed replaces the clean build by a first build from a cache filled with the committed,
# nbval-verified outputs (jupyter-cache's own `cache_notebook_file`), for a machine too loaded to
# execute the whole book in reasonable time: the unchanged and one-notebook builds are the same.
set -euo pipefail
cd "$(dirname "$0")/.."
NOTEBOOK=${NOTEBOOK:-notebooks/00_setup.ipynb}
REPEATS=${REPEATS:-3}
FIRST=${FIRST:-clean}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t book-rebuild-times-XXXXXX)}
PY=.venv/bin/python

make --no-print-directory env data >/dev/null
backup="$LOG_DIR/$(basename "$NOTEBOOK").original"
cp "$NOTEBOOK" "$backup"
trap 'cp "$backup" "$NOTEBOOK"' EXIT

edit_one_code_cell() {  # a new comment line in the first code cell changes the notebook's code hash
  "$PY" - "$NOTEBOOK" "$1" <<'PY'
import json, sys
path, label = sys.argv[1], sys.argv[2]
notebook = json.load(open(path))
cell = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
source = cell["source"] if isinstance(cell["source"], list) else cell["source"].splitlines(True)
cell["source"] = [*source[:-1], source[-1].rstrip("\n") + "\n", f"# rebuild timing {label}"]
json.dump(notebook, open(path, "w"), indent=1, ensure_ascii=False)
PY
}

timed_build() {  # name: wall time, CPU time of make and everything it waited for, notebooks
  local log="$LOG_DIR/$1.log" wall user system
  /usr/bin/time -f "%e %U %S" -o "$LOG_DIR/$1.time" make --no-print-directory book >"$log" 2>&1 \
    || { echo "make book failed, see $log" >&2; tail -30 "$log" >&2; exit 1; }
  read -r wall user system < "$LOG_DIR/$1.time"
  printf "| %-12s | %7.1f | %7.1f | %8d | %6d |\n" "$1" "$wall" "$(echo "$user + $system" | bc)" \
    "$(grep -c 'Executing notebook using' "$log" || true)" "$(grep -c 'Using cached notebook' "$log" || true)"
}

echo "make book on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); logs in $LOG_DIR"
echo "| build        | wall s  | CPU s   | executed | cached |"
echo "|--------------|---------|---------|----------|--------|"
rm -rf _build
if [ "$FIRST" = seed ]; then
  make --no-print-directory execution-cache >/dev/null
  "$PY" - <<'PY'
from jupyter_cache import get_cache

from scaling_ml import toc_files

cache = get_cache("_build/.jupyter_cache")
for name in toc_files():
    if name.startswith("notebooks/"):
        cache.cache_notebook_file(f"{name}.ipynb", check_validity=False, overwrite=True)
PY
  timed_build seeded
else
  timed_build clean
fi
for run in $(seq "$REPEATS"); do timed_build "unchanged-$run"; done
for run in $(seq "$REPEATS"); do
  edit_one_code_cell "$run"
  timed_build "one-$run"
done
cp "$backup" "$NOTEBOOK"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
