#!/usr/bin/env bash
# A single-node SLURM cluster with accounting, from Debian's packages, started without systemd:
# for CI and for trying `vaebench run --executor slurm` on a workstation. Needs root.
#
#   tools/slurm-local.sh up      install what is missing (apt), configure, start, wait for sinfo
#   tools/slurm-local.sh down    stop the daemons `up` started (jobs still queued die with them)
#   tools/slurm-local.sh status  sinfo and the daemons' pids
#
# One partition, `debug`, with this machine as its only node (its CPUs and memory as `slurmd -C`
# reports them). Accounting: slurmdbd on MariaDB, so `sacct` knows finished jobs.
set -euo pipefail

STATE="${SLURM_LOCAL_STATE:-/var/lib/vaebench-slurm}"
CLUSTER=vaebench
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

say() { printf 'slurm-local: %s\n' "$*"; }

install_missing() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    # the packages' own scripts must not start services: this script starts them itself
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' RETURN
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
}

write_config() {
    mkdir -p "$STATE"/{ctld,d,log,run} /etc/slurm
    local node cpus memory
    node="$(slurmd -C | head -n 1)"  # NodeName=... CPUs=... RealMemory=...
    cpus="$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$node")"
    memory="$(sed -E 's/.* RealMemory=([0-9]+).*/\1/' <<<"$node")"
    cat >/etc/slurm/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without --mem gets its CPUs' share of the node's memory, not all of it
DefMemPerCPU=$((memory / cpus))
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
JobRequeue=1
# a job told to stop (scancel, requeue) is killed 5 s later, not 30: a cell's state is
# already in its rolling checkpoint, and the tests do not wait on the default
KillWait=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
CONF
    chmod 600 /etc/slurm/slurmdbd.conf
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds="$1" what="$2"
    shift 2
    for _ in $(seq "$((seconds * 5))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    say "$what did not come up in ${seconds}s"
    return 1
}

up() {
    install_missing
    write_config
    mkdir -p /run/munge && chown munge:munge /run/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    if ! pgrep -x mariadbd >/dev/null; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        (runuser -u mysql -- mariadbd >"$STATE/log/mariadb.log" 2>&1 &)
        wait_for 30 MariaDB mysqladmin ping
    fi
    mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    pgrep -x slurmdbd >/dev/null || slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    wait_for 30 "the controller" sinfo
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    wait_for 30 "an idle node" bash -c 'sinfo -h -o %t | grep -q idle'
    say "up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t')"
}

down() {
    for daemon in slurmd slurmctld slurmdbd; do
        pkill -x "$daemon" 2>/dev/null || true
    done
    mysqladmin shutdown 2>/dev/null || true
    pkill -x munged 2>/dev/null || true
    for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
        for _ in $(seq 50); do pgrep -x "$daemon" >/dev/null || break; sleep 0.2; done
    done
    say "down"
}

status() {
    sinfo || true
    for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
        printf '%-10s %s\n' "$daemon" "$(pgrep -x "$daemon" || echo -)"
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
