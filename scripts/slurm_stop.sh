#!/usr/bin/env bash
# Stop the single-node Slurm started by scripts/slurm_start.sh: cancel every job, then stop
# slurmd, slurmctld and munged, and wait until they are gone (killed daemons can linger as
# zombies for a few seconds; those count as stopped). Safe to run when nothing is running.
set -euo pipefail

live_pids() {  # pids of live (not zombie) processes with this exact name
  local pid
  for pid in $(pgrep -x "$1" || true); do
    [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]] && echo "$pid"
  done
  return 0
}

if command -v scancel >/dev/null 2>&1 && [[ -n $(live_pids slurmctld) ]]; then
  scancel --user="$(id -un)" >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    [[ -z $(squeue -h 2>/dev/null) ]] && break
    sleep 0.2
  done
fi

for daemon in slurmd slurmctld munged; do
  pids=$(live_pids "$daemon")
  [[ -z $pids ]] && continue
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 100); do
    [[ -z $(live_pids "$daemon") ]] && break
    sleep 0.1
  done
  pids=$(live_pids "$daemon")
  if [[ -n $pids ]]; then
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  fi
  if [[ -n $(live_pids "$daemon") ]]; then
    echo "slurm_stop.sh: $daemon is still running (pids $(live_pids "$daemon"))" >&2
    exit 1
  fi
done
echo "Slurm stopped: no slurmd, slurmctld or munged running"
