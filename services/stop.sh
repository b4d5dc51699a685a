#!/usr/bin/env bash
# Stops what services/start.sh started, by the process ids it recorded in $SERVICES_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
SERVICES_DIR=$(realpath -m "${SERVICES_DIR:-.services}")

say() { echo "services: $*"; }

# Each service leads its own process group; stop the group politely, then firmly.
stop_group() {
    local name=$1 pid_file="$SERVICES_DIR/pids/$1.pid"
    [ -s "$pid_file" ] || return 0
    local pid
    pid=$(cat "$pid_file")
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pid_file"
        return 0
    fi
    for signal in INT TERM KILL; do
        kill -0 "$pid" 2>/dev/null || break
        kill -"$signal" -- -"$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
    rm -f "$pid_file"
    say "stopped $name"
}

stop_group mlflow
stop_group seaweedfs
PGDATA="$SERVICES_DIR/postgres"
if [ -f "$PGDATA/postmaster.pid" ]; then
    initdb=$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    pg_ctl="$(dirname "$(realpath "$initdb")")/pg_ctl"
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$pg_ctl" -D "$PGDATA" -m fast -w stop > /dev/null
    else
        "$pg_ctl" -D "$PGDATA" -m fast -w stop > /dev/null
    fi && say "stopped PostgreSQL"
fi
