#!/usr/bin/env bash
# How long `make book` takes (issue 16, "fast rebuilds"), three ways:
#   clean      _build removed: every notebook is executed
#   unchanged  nothing changed since the last build: every notebook comes from the execution cache
#   one        a comment added to one code cell of one notebook: that notebook alone is executed
# For each run it prints the wall time and how many notebooks were executed and how many came
# from the cache (counted from Jupyter Book's log). The notebook edited for "one" is restored at
# the end, also on failure. Timings on a machine shared with other work are noisy: repeat.
#   scripts/time_rebuilds.sh                       # NOTEBOOK=notebooks/00_setup.ipynb REPEATS=3
set -euo pipefail
cd "$(dirname "$0")/.."
NOTEBOOK=${NOTEBOOK:-notebooks/00_setup.ipynb}
REPEATS=${REPEATS:-3}
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

timed_build() {  # name
  local log="$LOG_DIR/$1.log" start end
  start=$(date +%s.%N)
  make --no-print-directory book >"$log" 2>&1 || { echo "make book failed, see $log" >&2; tail -30 "$log" >&2; exit 1; }
  end=$(date +%s.%N)
  printf "| %-12s | %7.1f | %8d | %6d |\n" "$1" "$(echo "$end - $start" | bc)" \
    "$(grep -c 'Executing notebook using' "$log" || true)" "$(grep -c 'Using cached notebook' "$log" || true)"
}

echo "make book on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); logs in $LOG_DIR"
echo "| build        | seconds | executed | cached |"
echo "|--------------|---------|----------|--------|"
rm -rf _build
timed_build clean
for run in $(seq "$REPEATS"); do timed_build "unchanged-$run"; done
for run in $(seq "$REPEATS"); do
  edit_one_code_cell "$run"
  timed_build "one-$run"
done
cp "$backup" "$NOTEBOOK"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
