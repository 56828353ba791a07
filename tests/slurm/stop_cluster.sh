#!/usr/bin/env bash
# Stop the cluster `tests/slurm/start_cluster.sh DIR` started: cancel its jobs, stop
# slurmd, slurmctld, slurmdbd, MariaDB and munged by the pid files in DIR/run (those
# processes only), and remove the configuration it wrote to /etc/slurm (only files that
# carry its mark and DIR). DIR itself is left, for its logs.
set -uo pipefail

DIR=${1:?usage: stop_cluster.sh DIR}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)
CONF=/etc/slurm
MARK="# atreid test cluster: tests/slurm/start_cluster.sh, state in $DIR"
export PATH="$PATH:/usr/sbin:/sbin"

if [ -f "$DIR/run/slurmctld.pid" ] && [ "$(head -n 1 "$CONF/slurm.conf" 2>/dev/null)" = "$MARK" ]; then
    timeout 10 scancel --full --user "$(id -un)" >/dev/null 2>&1 || true
fi
for name in slurmd slurmctld slurmdbd mysqld munged; do
    pidfile="$DIR/run/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
done
for file in slurm.conf gres.conf slurmdbd.conf; do
    [ "$(head -n 1 "$CONF/$file" 2>/dev/null)" = "$MARK" ] && rm -f "$CONF/$file"
done
exit 0
