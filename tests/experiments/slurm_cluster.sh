#!/usr/bin/env bash
# A single-node Slurm cluster for the tests (Debian's slurm-wlm and munge; run as root):
#   tests/slurm_cluster.sh start DIR   configure munge and Slurm under DIR, start munged, slurmctld
#                                      and slurmd, wait for the node; prints SLURM_CONF=DIR/slurm.conf
#   tests/slurm_cluster.sh stop DIR    stop them
# Everything (key, sockets, state, logs) lives under DIR; the ports are free ones. The node has
# every CPU (nproc --all: plain nproc follows $OMP_NUM_THREADS, and a 1-CPU node never starts a
# 2-CPU job). cred_expire is also how long a requeued job waits before it may start again: 10 s
# instead of Slurm's 120, so that the requeue test does not idle for two minutes.
set -euo pipefail
action=$1
dir=$(realpath -m "$2")
case "$action" in
start)
    mkdir -p "$dir"/{munge,state,spool,log}
    chmod 755 "$dir"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chown -R munge:munge "$dir/munge"
    chmod 755 "$dir/munge" && chmod 400 "$dir/munge/munge.key"
    runuser -u munge -- /usr/sbin/munged --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --seed-file="$dir/munge/munged.seed" --log-file="$dir/munge/munged.log"
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    host=$(hostname -s)
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat > "$dir/slurm.conf" <<CONF
ClusterName=m2h-test
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
NodeName=$host CPUs=$(nproc --all) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"
    /usr/sbin/slurmctld -f "$SLURM_CONF"
    /usr/sbin/slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            echo "SLURM_CONF=$SLURM_CONF"
            exit 0
        fi
        sleep 1
    done
    echo "the node did not come up; see $dir/log" >&2
    exit 1
    ;;
stop)
    for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        [[ -f $pid ]] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    ;;
esac
