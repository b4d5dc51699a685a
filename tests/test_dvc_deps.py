"""dvc.yaml lists, for every stage, each project module its script imports, directly or through
other modules, so that a code edit reruns every stage it can change, and no other."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "denoiselab"
PACKAGE_DIR = ROOT / "src" / PACKAGE


def imported_modules(path: Path) -> set[str]:
    """Project modules that one source file imports anywhere in it (function-level imports
    too, since a stage runs them), as ``denoiselab.<module>`` names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:
                found.update(f"{PACKAGE}.{alias.name}" for alias in node.names)
            elif node.module.startswith(f"{PACKAGE}."):
                found.add(node.module)
    return {name for name in found if module_file(name).is_file()}


def module_file(name: str) -> Path:
    return PACKAGE_DIR / f"{name.removeprefix(PACKAGE + '.').replace('.', '/')}.py"


def import_closure(script: Path) -> set[str]:
    """Repository paths of the project modules ``script`` imports, transitively, plus the
    package's ``__init__.py``, which every import of the package runs."""
    seen: set[str] = set()
    pending = list(imported_modules(script))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(imported_modules(module_file(name)) - seen)
    paths = {module_file(name).relative_to(ROOT).as_posix() for name in seen}
    if paths:
        paths.add((PACKAGE_DIR / "__init__.py").relative_to(ROOT).as_posix())
    return paths


def stages() -> dict[str, dict]:
    """Each stage's definition; a ``foreach`` stage by its ``do`` template, which every item
    shares."""
    found = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in found.items()}


def stage_script(stage: dict) -> Path:
    words = " ".join(stage["cmd"].split()).split()
    scripts = [word for word in words if word.startswith("stages/") and word.endswith(".py")]
    assert len(scripts) == 1, f"expected one stage script in {stage['cmd']!r}"
    return ROOT / scripts[0]


def code_deps(stage: dict) -> set[str]:
    return {dep for dep in stage["deps"] if isinstance(dep, str) and dep.endswith(".py")}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_depends_on_every_module_it_imports(name):
    stage = stages()[name]
    script = stage_script(stage)
    missing = import_closure(script) - code_deps(stage)
    assert not missing, f"dvc.yaml stage {name} imports but does not depend on {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_depends_on_its_script_and_no_unused_module(name):
    stage = stages()[name]
    script = stage_script(stage).relative_to(ROOT).as_posix()
    assert script in stage["deps"]
    unused = code_deps(stage) - import_closure(stage_script(stage)) - {script}
    # An unused dependency reruns the stage for edits that cannot change it.
    assert not unused, f"dvc.yaml stage {name} depends on modules it never imports: {unused}"
    assert f"src/{PACKAGE}" not in stage["deps"], "depend on modules, not the whole package"


def test_closure_follows_imports_through_other_modules(tmp_path):
    """The closure is transitive: evaluate reaches files.py only through other modules' imports
    in older layouts; here a script importing one module gets that module's imports too."""
    script = tmp_path / "stage.py"
    script.write_text("from denoiselab import evaluation\n")
    closure = import_closure(script)
    direct = {
        module_file(name).relative_to(ROOT).as_posix()
        for name in imported_modules(PACKAGE_DIR / "evaluation.py")
    }
    assert "src/denoiselab/evaluation.py" in closure
    assert direct <= closure
    assert len(closure) > len(direct) + 1


def import_graph() -> dict[str, set[str]]:
    """Each project module's name and the project modules it imports anywhere in it."""
    return {f"{PACKAGE}.{path.stem}": imported_modules(path) for path in PACKAGE_DIR.glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, first and last the same; None without any."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        path.append(name)
        for imported in sorted(graph.get(name, ())):
            cycle = visit(imported)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name)
        if cycle:
            return cycle
    return None


def test_project_modules_import_one_way_with_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_check_finds_a_function_level_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_a_function_level_import_counts(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("def load():\n    from denoiselab import tracking\n")
    assert imported_modules(module) == {"denoiselab.tracking"}


# The stages an edit to a module reruns. Choosing, packaging, serving, scoring and plotting
# models never reruns a training stage, and training code never reruns the evaluation.
RERUNS = {
    "registry.py": {"evaluate"},
    "selection.py": {"evaluate"},
    "serving.py": {"evaluate"},
    "model_store.py": {"evaluate"},
    "scoring.py": {"evaluate"},
    "evaluation.py": {"evaluate"},
    "plots.py": {"plot"},
    "training.py": {"train", "tune_unet"},
    "runner.py": {"train", "tune_unet"},
    "tuning.py": {"tune_unet"},
    "colour.py": {"evaluate"},
}


@pytest.mark.parametrize("module", sorted(RERUNS))
def test_an_edit_to_a_module_reruns_only_its_stages(module):
    path = f"src/{PACKAGE}/{module}"
    rerun = {name for name, stage in stages().items() if path in stage["deps"]}
    assert rerun == RERUNS[module], f"dvc.yaml: an edit to {module} reruns {sorted(rerun)}"


def cached_outputs() -> set[str]:
    """Every output DVC caches (``cache`` not false), each ``foreach`` item spelled out."""
    found = set()
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        items = stage.get("foreach")
        template = stage.get("do", stage)
        if items is None:
            bindings = [{}]
        elif isinstance(items, dict):
            bindings = [
                {"key": key, **{f"item.{k}": v for k, v in value.items()}}
                for key, value in items.items()
            ]
        else:
            bindings = [{"item": item} for item in items]
        for out in template.get("outs", []):
            path, options = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            if options.get("cache", True):
                for binding in bindings:
                    spelled = path
                    for variable, value in binding.items():
                        spelled = spelled.replace("${" + variable + "}", str(value))
                    found.add(spelled)
    return found


def test_no_output_dvc_caches_is_also_in_git():
    # DVC refuses to run a stage whose cached output git tracks ("already tracked by SCM").
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outputs = cached_outputs()
    assert "reports/history/unet.json" in outputs and "models/unet_rgb" in outputs
    clash = [
        path for path in tracked if any(path == o or path.startswith(o + "/") for o in outputs)
    ]
    assert not clash, f"git tracks outputs that DVC caches: {clash}; git rm --cached them"


def test_every_stage_runs_the_library_of_the_copy_it_runs_in(tmp_path):
    # dvc exp run --temp / --queue run each stage in a temporary copy of the repository; the
    # editable install points at the workspace's src/, which may hold other code by then.
    for name, stage in stages().items():
        assert " ".join(stage["cmd"].split()).startswith("PYTHONPATH=src python stages/"), name
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    command = f"PYTHONPATH=src {sys.executable} -c 'import denoiselab; print(denoiselab.__file__)'"
    result = subprocess.run(
        command, shell=True, cwd=copy, capture_output=True, text=True, timeout=120, check=True
    )
    assert Path(result.stdout.strip()).is_relative_to(copy)
