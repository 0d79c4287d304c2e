"""The package's layering, read from the source: ``utils`` is a leaf, the commands hold no stage logic, and only the
artifact module computes where an artifact lives."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "eagrl"
#: the longest a command may be: compose the config, call the library, exit code
COMMAND_LINES = 60


def eagrl_imports(path: Path) -> set[str]:
    """Every ``eagrl.*`` module a file imports, at module level or inside a function."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return {name for name in imported if name == "eagrl" or name.startswith("eagrl.")}


@pytest.mark.parametrize("path", sorted((PACKAGE / "utils").glob("*.py")), ids=lambda path: path.name)
def test_utils_imports_nothing_from_the_other_packages(path):
    upward = {name for name in eagrl_imports(path) if not name.startswith("eagrl.utils") and name != "eagrl.errors"}
    assert not upward, f"utils/{path.name} imports {sorted(upward)}: utils is a leaf (eagrl.errors aside)"


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda path: path.name)
def test_commands_only_compose_and_call_the_library(path):
    if path.name in ("__init__.py", "entry.py"):  # the package and the commands' shared plumbing
        return
    lines = len(path.read_text().splitlines())
    assert lines <= COMMAND_LINES, f"cli/{path.name} has {lines} lines: its stage logic belongs in eagrl.stages"
    stages = {name for name in eagrl_imports(path) if name.startswith("eagrl.stages")}
    assert stages, f"cli/{path.name} calls no eagrl.stages module"


def test_only_the_artifact_module_computes_artifact_paths():
    computing = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "paths.artifact_dir)" in path.read_text() and path != PACKAGE / "utils" / "artifacts.py"
    ]
    assert not computing, f"{computing} build artifact paths themselves: use eagrl.utils.artifacts.StageArtifact"
