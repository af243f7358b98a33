#!/usr/bin/env bash
# Start a single-node Slurm on this machine, from nothing, for the book's Slurm test lane
# (chapter 5, "From laptop to cluster"). Idempotent: run it again and it only starts what is down.
#
# Needs root and Debian's packages:  apt-get install -y slurmctld slurmd slurm-client munge
# There is no systemd here, so the daemons are started by hand:
#   munged (as the munge user, socket in /run/munge), slurmctld, slurmd.
# The configuration is the smallest that lets dask-jobqueue's SLURMCluster run several 1-core
# worker jobs side by side on one node:
#   select/cons_tres + CR_Core_Memory   (select/linear would give each job the whole node)
#   proctrack/linuxproc, task/none, no accounting database   (no cgroup set-up needed)
#   jobcomp/filetxt: how each job ended (COMPLETED, TIMEOUT, ...) for `sacct --completion`, the
#   single node's stand-in for the `sacct` a site's accounting database answers
# Stop everything with scripts/slurm_stop.sh.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "slurm_start.sh: run as root (it writes /etc/slurm/slurm.conf and starts daemons)." >&2
  exit 2
fi
for tool in slurmctld slurmd sbatch squeue scontrol munged; do
  if ! command -v "$tool" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$tool ]]; then
    echo "slurm_start.sh: '$tool' not found. Install Slurm and munge first:" >&2
    echo "  apt-get update && apt-get install -y slurmctld slurmd slurm-client munge" >&2
    exit 2
  fi
done

NODE=$(hostname -s)
# nproc --all: plain nproc obeys OMP_NUM_THREADS, which a caller may have set to 1.
# At least 8 job slots even on a 2-core machine (SlurmdParameters=config_overrides lets slurmd
# accept more CPUs than it detects): the lanes' jobs mostly wait, and the walltime lane runs two
# clusters (3 jobs) beside chapter 5's batch-mode job, whose 4 tasks (scheduler, client, 2
# workers) share one allocation.
CPUS=$(nproc --all)
if (( CPUS < 8 )); then CPUS=8; fi
# RealMemory may not exceed what slurmd detects, or slurmd marks the node invalid.
DETECTED_MB=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
REAL_MEMORY=$(( DETECTED_MB > 1024 ? DETECTED_MB - 512 : DETECTED_MB ))

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
CONF=/etc/slurm/slurm.conf
NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<EOF
# Written by scripts/slurm_start.sh (Scaling ML with Dask, chapter 5): a single-node test cluster.
ClusterName=scalingml
SlurmctldHost=${NODE}
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=30
KillWait=5
Waittime=0
NodeName=${NODE} CPUs=${CPUS} RealMemory=${REAL_MEMORY} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
CONF_CHANGED=0
if ! cmp -s "$NEW_CONF" "$CONF"; then
  install -m 0644 "$NEW_CONF" "$CONF"
  CONF_CHANGED=1
fi
rm -f "$NEW_CONF"

# munge: a key, a socket directory owned by munge, the daemon running as munge.
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge

running() {  # a live (not zombie) process with this exact name
  local pid
  for pid in $(pgrep -x "$1" || true); do
    [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]] && return 0
  done
  return 1
}

# A changed node definition needs both daemons restarted (man slurm.conf), not a reconfigure.
if [[ $CONF_CHANGED -eq 1 ]] && { running slurmctld || running slurmd; }; then
  bash "$(dirname "${BASH_SOURCE[0]}")/slurm_stop.sh"
fi

if ! running munged; then
  runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || { echo "slurm_start.sh: munge does not work" >&2; exit 1; }

if ! running slurmctld; then
  /usr/sbin/slurmctld
fi
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
scontrol ping | grep -q UP || { echo "slurm_start.sh: slurmctld did not start; see /var/log/slurm/slurmctld.log" >&2; exit 1; }

if ! running slurmd; then
  /usr/sbin/slurmd
fi

# Wait until the node accepts jobs; a node left DOWN/DRAIN by an earlier run is resumed.
state=unknown
for _ in $(seq 150); do
  state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n1)
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*|drained*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "$state" in
  idle|mixed|allocated) ;;
  *) echo "slurm_start.sh: node $NODE is '$state'; see /var/log/slurm/slurmd.log" >&2; exit 1 ;;
esac
echo "Slurm is up: node $NODE ($CPUS CPUs, ${REAL_MEMORY} MB), partition debug, state $state"
