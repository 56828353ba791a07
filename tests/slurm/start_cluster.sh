#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm_cluster.py and by hand:
#
#   tests/slurm/start_cluster.sh DIR     # install (apt) if needed, configure, start
#   sinfo; sbatch ...; sacct             # use it
#   tests/slurm/stop_cluster.sh DIR      # stop every daemon started here
#
# Debian's munge, slurmctld, slurmd (22.05 on bookworm) and, for sacct and accounts,
# slurmdbd on a private MariaDB. State, logs and the database live in DIR; everything
# listens on 127.0.0.1 only, on ports of its own (SLURM_TEST_PORT, default 16817, and the
# next three). The configuration is written to /etc/slurm (slurm.conf, gres.conf,
# slurmdbd.conf, marked as this script's), the one place every SLURM command finds it:
# the SLURM executor plugin starts srun in the job without SLURM_CONF. A slurm.conf there
# that is not this script's (a real cluster's) is never touched: the script exits 77.
# Needs root (apt, and slurmd runs jobs as their user).
#
# The node stands in for a GPU node: it declares 32 CPUs, 128 GB and two `gpu` GRES
# (SlurmdParameters=config_overrides: SLURM believes the declared size, whatever the
# machine has), so that profiles/slurm's requests (16 CPUs, 64 GB, GPUs per
# train.devices) are scheduled as on a cluster. The GPUs are GRES entries whose device
# files are links to /dev/null: jobs are granted them, and run on the CPU.
#
# Partitions `main` (default, CPU jobs) and `gpus`; account `atreid-lab` (user root),
# enforced. The names differ from profiles/slurm's defaults on purpose: the test sets them
# the way a user does (ATREID_SLURM_PARTITION, ATREID_SLURM_GPU_PARTITION,
# ATREID_SLURM_ACCOUNT). JobRequeue=0: a job can be requeued only if it asked for it
# (sbatch --requeue, the profile's slurm-requeue). sacct shows each job's comment
# (rule and wildcards, set by the plugin).
#
# Exit status: 0 started; 77 cannot run here (reason on stderr: not root, no apt-get, a
# package that does not install, /etc/slurm in use); anything else: a daemon failed (the
# daemons' log tails are printed; stop_cluster.sh DIR stops what did start).
set -euo pipefail

DIR=${1:?usage: start_cluster.sh DIR}
PORT=${SLURM_TEST_PORT:-16817}
HOST=$(hostname -s)
CONF=/etc/slurm
MARK="# atreid test cluster: tests/slurm/start_cluster.sh"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() {
    echo "FAIL: $*" >&2
    for log in "$DIR"/log/*.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }
    done
    exit 1
}

[ "$(id -u)" = 0 ] || skip "not root (apt and slurmd need root)"
if [ -f "$CONF/slurm.conf" ]; then
    grep -q "^$MARK" "$CONF/slurm.conf" || skip "$CONF/slurm.conf exists and is not the test cluster's (left alone)"
    other=$(sed -n "s|^$MARK, state in ||p" "$CONF/slurm.conf")
    if [ "$other" != "$DIR" ] && [ -f "$other/run/slurmctld.pid" ] && kill -0 "$(cat "$other/run/slurmctld.pid")" 2>/dev/null; then
        skip "another test cluster runs (state in $other)"
    fi
fi

# 1. Packages: Debian's SLURM, munge, and MariaDB for slurmdbd.
PACKAGES="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
missing=""
for cmd in munged slurmctld slurmd sbatch sacct slurmdbd mariadbd; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing="$missing $cmd"
done
if [ -n "$missing" ]; then
    command -v apt-get >/dev/null 2>&1 || skip "no apt-get to install$missing"
    export DEBIAN_FRONTEND=noninteractive
    # The packages' own services stay down: private ones are started below.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq >"$DIR/apt.log" 2>&1 || skip "apt-get update failed (see $DIR/apt.log)"
    apt-get install -y -qq --no-install-recommends $PACKAGES >>"$DIR/apt.log" 2>&1 \
        || skip "apt-get install $PACKAGES failed (see $DIR/apt.log)"
fi
export PATH="$PATH:/usr/sbin:/sbin"
mkdir -p "$DIR"/{log,run,state,spool,db,dev} "$CONF"

# 2. munge: the machine's own if one runs, else one started here on the default socket
# with the key the package created.
if ! (munge -n | unmunge) >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    munged --force --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" || fail "munged did not start"
    (munge -n | unmunge) >/dev/null 2>&1 || fail "munge does not answer"
fi

# 3. MariaDB (127.0.0.1, a port of its own) and slurmdbd: what sacct and sacctmgr answer from.
DB_PORT=$((PORT + 3))
DB_SOCKET="$DIR/run/mysqld.sock"
if [ ! -d "$DIR/db/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/db" --auth-root-authentication-method=socket \
        >"$DIR/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
fi
mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DB_SOCKET" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --skip-name-resolve --pid-file="$DIR/run/mysqld.pid" --log-error="$DIR/log/mysqld.log" \
    --innodb-buffer-pool-size=32M --performance-schema=off </dev/null >/dev/null 2>&1 &
for _ in $(seq 120); do
    mariadb --no-defaults --socket="$DB_SOCKET" -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.5
done
mariadb --no-defaults --socket="$DB_SOCKET" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'atreid';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" >/dev/null 2>&1 || fail "MariaDB did not start"

cat > "$CONF/slurmdbd.conf" <<EOF
$MARK, state in $DIR
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
CommunicationParameters=NoInAddrAny
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=atreid
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
EOF
chmod 600 "$CONF/slurmdbd.conf"

# 4. slurm.conf and gres.conf.
cat > "$CONF/slurm.conf" <<EOF
$MARK, state in $DIR
ClusterName=atreidtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SrunPortRange=$((PORT + 10))-$((PORT + 60))
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
SlurmdParameters=config_overrides
JobRequeue=0
MinJobAge=300
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=32 RealMemory=128000 Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=2-00:00:00 State=UP
PartitionName=gpus Nodes=$HOST MaxTime=2-00:00:00 State=UP
EOF
# SLURM drops a GPU without a device file; links to /dev/null serve, nothing opens them.
ln -sfn /dev/null "$DIR/dev/gpu0"
ln -sfn /dev/null "$DIR/dev/gpu1"
cat > "$CONF/gres.conf" <<EOF
$MARK, state in $DIR
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/dev/gpu[0-1]
EOF

# 5. Daemons, and the account (associations are enforced: a job needs one).
slurmdbd || fail "slurmdbd did not start"
for _ in $(seq 60); do
    sacctmgr -i show cluster >/dev/null 2>&1 && break
    sleep 0.5
done
sacctmgr -i add cluster atreidtest >/dev/null 2>&1 || true
sacctmgr -i add account atreid-lab Cluster=atreidtest Description=tests Organization=atreid >/dev/null 2>&1 || true
sacctmgr -i add user root Account=atreid-lab DefaultAccount=atreid-lab >/dev/null 2>&1 || true
sacctmgr -n -P show assoc format=account,user | grep -q '^atreid-lab|root$' || fail "account atreid-lab not created"
slurmctld -c || fail "slurmctld did not start"
slurmd -N "$HOST" || fail "slurmd did not start"
for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$state" = idle ] || fail "node not idle (state: ${state:-none})"
echo "SLURM test cluster up: $(sinfo -h -o '%P' | tr '\n' ' ')(state and logs in $DIR)"
