"""dvc.yaml lists, for every stage, each project module its script imports, directly or through
other modules, so that a code edit reruns every stage it can change, and no other."""

import ast
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
