"""Only the project's own user errors become one line; every MLflow call lives behind two
modules (plus the served model's class)."""

import ast
from pathlib import Path

import pytest

from denoiselab import cli, errors

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_MODULES = {"tracking.py", "registry.py", "serving.py"}


def failing_handler(error: Exception):
    """A command handler that raises ``error``."""

    def handler(args):
        raise error

    return handler


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["check-params", "params.yaml"])
    args.handler = failing_handler(errors.UserError("params.yaml: base.seed must be an integer"))
    monkeypatch.setattr(cli, "build_parser", lambda: _Fixed(parser, args))
    assert cli.main(["check-params", "params.yaml"]) == 2
    assert capsys.readouterr().err == "error: params.yaml: base.seed must be an integer\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    parser = cli.build_parser()
    args = parser.parse_args(["check-params", "params.yaml"])
    args.handler = failing_handler(ValueError("operands could not be broadcast together"))
    monkeypatch.setattr(cli, "build_parser", lambda: _Fixed(parser, args))
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["check-params", "params.yaml"])


def test_stage_main_turns_only_user_errors_into_exit_2(capsys):
    def unreachable_store():
        raise errors.StoreUnreachableError("MLflow store sqlite:///x.db is unreachable")

    def bug():
        raise KeyError("psnr")

    with pytest.raises(SystemExit) as stopped:
        errors.stage_main(unreachable_store)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: MLflow store sqlite:///x.db is unreachable\n"
    with pytest.raises(KeyError):
        errors.stage_main(bug)


class _Fixed:
    """A parser whose parse_args returns prepared arguments."""

    def __init__(self, parser, args):
        self.parser, self.args = parser, args

    def parse_args(self, argv=None):
        return self.args


def mlflow_importers() -> set[str]:
    found = set()
    for path in [*(ROOT / "src" / "denoiselab").glob("*.py"), *(ROOT / "stages").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "mlflow" or name.startswith("mlflow.") for name in names):
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_every_mlflow_call_lives_in_tracking_or_registry():
    importers = mlflow_importers()
    assert importers, "the scan found no MLflow import at all"
    assert {Path(path).name for path in importers} <= MLFLOW_MODULES, importers
