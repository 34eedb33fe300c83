"""Every import is declared: the dependency check passes on the project and fails on a copy
of it where one module imports a package that pyproject.toml does not declare (the way
`safetensors` once reached main and broke the main job on every new machine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tools" / "check_dependencies.py"


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), str(root)], capture_output=True, text=True, timeout=300
    )


def test_the_project_declares_every_import():
    result = check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def project_copy(tmp_path) -> Path:
    for name in ("benchmark", "tests"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("where", "line", "code"),
    [
        # inside a function, as checkpoints.py imported safetensors
        ("benchmark/planted.py", "def f():\n    import rich\n", "DEP001"),
        ("benchmark/planted.py", "import certifi\n", "DEP003"),  # only pulled in by requests
        ("benchmark/planted.py", "import pytest\n", "DEP004"),  # dev-only, in the package
        ("tests/test_planted.py", "import rich\n", "DEP001"),
    ],
)
def test_an_undeclared_import_fails_the_check(project_copy, where, line, code):
    (project_copy / where).write_text(line)
    result = check(project_copy)
    assert result.returncode == 1
    assert f"{Path(where).as_posix()}" in result.stdout and code in result.stdout, result.stdout


def test_an_unused_runtime_dependency_fails_the_check(project_copy):
    pyproject = project_copy / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('    "pyyaml>=6",\n', '    "pyyaml>=6",\n    "rich>=13",\n')
    )
    result = check(project_copy)
    assert result.returncode == 1
    assert "DEP002 'rich'" in result.stdout, result.stdout
