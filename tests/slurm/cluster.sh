#!/usr/bin/env bash
# A real single-node SLURM for the tests: `cluster.sh start DIR` starts munged, slurmctld and
# slurmd (as root) with state, logs and sockets under DIR and waits until the partition is
# idle; `cluster.sh stop DIR` stops exactly the daemons it started and removes the config.
# The config goes to /etc/slurm/slurm.conf, the one place every client finds it: Snakemake's
# job-step executor strips SLURM_* variables (SLURM_CONF too) before its inner `srun`. An
# existing /etc/slurm/slurm.conf that this script did not write is never touched: start fails.
# Needs the Debian packages slurm-wlm and munge (scripts/setup_slurm.sh, run by the slurm_cluster test fixture).
set -euo pipefail

action=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")
conf=/etc/slurm/slurm.conf
marker="# written by featurebirth tests/slurm/cluster.sh"

fail() { echo "cluster.sh: $*" >&2; exit 1; }

start() {
    [ "$(id -u)" = 0 ] || fail "must run as root (slurmd and munged are started here)"
    for tool in munged slurmctld slurmd sinfo sbatch squeue; do
        command -v "$tool" >/dev/null || fail "'$tool' not found: install the Debian packages slurm-wlm and munge"
    done
    mkdir -p "$dir"/{state,spool,munge}
    [ -s /etc/munge/munge.key ] || fail "/etc/munge/munge.key is missing (the munge package creates it)"
    if [ -e "$conf" ] && ! grep -qx "$marker" "$conf"; then
        fail "$conf exists and was not written by this script: refusing to replace a real cluster's configuration"
    fi
    mkdir -p "$(dirname "$conf")"

    local host cpus memory
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat > "$conf" <<EOF
$marker
ClusterName=featurebirth-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
SchedulerParameters=sched_interval=1
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    munged --force --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
        || fail "munged did not start: $(tail -3 "$dir/munge/munged.log" 2>/dev/null)"
    slurmctld -f "$conf" || fail "slurmctld did not start: $(tail -5 "$dir/slurmctld.log" 2>/dev/null)"
    slurmd -f "$conf" || fail "slurmd did not start: $(tail -5 "$dir/slurmd.log" 2>/dev/null)"

    for _ in $(seq 60); do
        if sinfo -h -o "%t" 2>/dev/null | grep -qx "idle"; then
            return 0
        fi
        sleep 1
    done
    fail "the partition did not become idle in 60 s: $(sinfo 2>&1 | tail -2); $(tail -5 "$dir/slurmctld.log" 2>/dev/null)"
}

stop_pid() {
    local pidfile=$1
    [ -s "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munge/munged.pid"
    if [ -e "$conf" ] && grep -qx "$marker" "$conf"; then
        rm -f "$conf"
    fi
}

case "$action" in
    start) start ;;
    stop) stop ;;
    *) fail "unknown action '$action' (start or stop)" ;;
esac
