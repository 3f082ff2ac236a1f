#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for tests and trying the SLURM profile on one machine.
#
#   scripts/slurm-cluster.sh start   # installs slurm-wlm + munge if absent, writes /etc/slurm/slurm.conf,
#                                    # starts munged, slurmctld, slurmd; waits until the node is idle
#   scripts/slurm-cluster.sh stop    # stops them by PID
#   scripts/slurm-cluster.sh status
#
# Needs root. Runs without systemd: daemons are started directly, PIDs kept in $STATE.
# slurm.conf must be at /etc/slurm/slurm.conf: the snakemake SLURM plugin's job steps drop
# SLURM_CONF. No accounting storage: the workflow's profile asks squeue for job status.
set -euo pipefail
STATE=${SLURM_LOCAL_STATE:-/var/tmp/pydiffusion-slurm}
CONF=/etc/slurm/slurm.conf

die() { echo "slurm-cluster: $*" >&2; exit 1; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
    echo "slurm-cluster: installing slurm-wlm and munge"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p /etc/slurm "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log"
    cat > "$CONF" <<CONF
ClusterName=pydiffusion-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a job requeued after a node failure waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
ReturnToService=2
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0700 /etc/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    chmod 0400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- munged
    fi
}

wait_idle() {
    for _ in $(seq 1 60); do
        state=$(sinfo -h -N -o "%T" 2>/dev/null | head -n1 || true)
        if [ "$state" = "idle" ]; then echo "slurm-cluster: node idle"; return 0; fi
        sleep 0.5
    done
    die "the node did not become idle (state: ${state:-none}); see $STATE/log/"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts the SLURM daemons)"
    install_packages
    if [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
        echo "slurm-cluster: already running"; wait_idle; return
    fi
    write_conf
    start_munge
    slurmctld -c   # -c: a clean start, no state from a previous cluster
    slurmd -c
    wait_idle
}

stop() {
    for d in slurmd slurmctld; do
        if [ -f "$STATE/$d.pid" ]; then
            pid=$(cat "$STATE/$d.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            rm -f "$STATE/$d.pid"
        fi
    done
    # our slurm.conf with no controller behind it makes every `scontrol` (and so every snakemake
    # start, through the SLURM plugin's probe) wait for a timeout: remove it
    if grep -q "ClusterName=pydiffusion-local" "$CONF" 2>/dev/null; then rm -f "$CONF"; fi
    echo "slurm-cluster: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo && squeue ;;
    *) die "usage: $0 start|stop|status" ;;
esac
