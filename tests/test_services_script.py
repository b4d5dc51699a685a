"""services/start.sh run against stand-ins for PostgreSQL, SeaweedFS and MLflow that record how
they were started: no password may travel on a command line, which every user sees in ps."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each stand-in appends its argv and the variables it cares about to calls.log, one line a
# call, and does the little start.sh waits for.
RECORD = """#!/bin/sh
{{ printf '%s' "$(basename "$0")"; for arg in "$@"; do printf ' %s' "$arg"; done; echo; }} \\
    >> "{log}"
"""
STUBS = {
    "initdb": 'for arg in "$@"; do case $arg in -D) next=1;; *) [ "$next" = 1 ] && '
    'mkdir -p "$arg" && echo 16 > "$arg/PG_VERSION"; next=;; esac; done',
    "pg_ctl": 'case " $* " in *" status "*) exit 3;; esac',
    "psql": "echo 1",
    "createdb": "",
    "id": "echo 1000",
    "weed": "sleep 30",
    "mlflow": 'echo "mlflow env $MLFLOW_BACKEND_STORE_URI $AWS_SECRET_ACCESS_KEY" >> "{log}"',
    "python": 'case "$*" in *secrets.token_hex*) exec "{python}" "$@";; esac',
}


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")
def test_start_passes_no_password_on_a_command_line(tmp_path):
    stubs, log, services = tmp_path / "bin", tmp_path / "calls.log", tmp_path / "services"
    stubs.mkdir()
    for name, body in STUBS.items():
        path = stubs / name
        text = RECORD.format(log=log) + body.format(log=log, python=sys.executable) + "\n"
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ,
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "BIN": str(stubs),
        "SERVICES_DIR": str(services),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "services/start.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    weed = services / "pids/seaweedfs.pid"
    if weed.is_file():
        subprocess.run(["kill", "--", f"-{weed.read_text().strip()}"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    secrets = dict(
        line.split("=", 1) for line in (services / "secrets").read_text().splitlines() if line
    )
    calls = log.read_text().splitlines()
    command_lines = [line for line in calls if not line.startswith("mlflow env ")]
    assert any(line.startswith("mlflow server") for line in command_lines)
    assert "--backend-store-uri" not in "\n".join(command_lines)
    for name, secret in secrets.items():
        leaks = [line for line in command_lines if secret in line]
        assert not leaks, f"{name} on a command line: {leaks}"
    (server_env,) = [line for line in calls if line.startswith("mlflow env ")]
    backend_uri, secret_key = server_env.split()[2:]
    assert backend_uri.endswith(f":{secrets['DB_PASSWORD']}@127.0.0.1:55432/mlflow")
    assert secret_key == secrets["S3_SECRET_KEY"]
    assert stat.S_IMODE((services / "env").stat().st_mode) == 0o600
