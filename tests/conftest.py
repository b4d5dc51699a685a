"""Shared helpers for the tests that run the real pipeline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from denoiselab import profiles

ROOT = Path(__file__).resolve().parents[1]


def run_command(args, cwd, env, timeout=900):
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return output


def smoke_copy(repo: Path) -> dict:
    """Copies the repository's tracked files into ``repo``, applies the smoke profile to
    params.yaml, commits it, and returns the environment to run DVC in."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file() and not name.startswith(("reports/", "dvc.lock")):
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    smoke = profiles.apply_profile(params, profiles.load_profile(repo / "profiles/smoke.yaml"))
    # The tests check the registry too, which `make smoke` leaves alone.
    smoke["evaluate"]["register_models"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DVC_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    identity = {"NAME": "denoiselab test", "EMAIL": "test@example.com"}
    for role in ("AUTHOR", "COMMITTER"):
        for field, value in identity.items():
            env[f"GIT_{role}_{field}"] = value
    run_command(["git", "init", "-q"], repo, env)
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-qm", "smoke"], repo, env)
    return env
