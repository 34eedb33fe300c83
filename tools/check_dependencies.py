"""Every package the project imports is a declared, direct dependency (deptry, two passes).

1. benchmark/ against the runtime dependencies: a missing package (DEP001), one that is only
   pulled in by another (DEP003), an unused runtime dependency (DEP002) or a dev-only package
   imported by the package (DEP004) fails.
2. tests/ against runtime + dev dependencies: missing or transitive-only imports fail.

Usage: python tools/check_dependencies.py [PROJECT_ROOT]   (exit 0: clean; 1: issues found)
Run by .ci/run and by tests/test_dependencies.py; deptry's own config is in pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# what deptry must not scan in the tests pass: everything but tests/
NOT_TESTS = r"(^|/)(\.venv|venv|build|dist|benchmark|docker|reports|sweeps|tools|\.git)(/|$)"


def passes(root: Path) -> list[tuple[str, list[str]]]:
    # the tests' own modules and packages (tests/families: families defined outside benchmark/)
    test_modules = sorted(
        path.stem if path.suffix == ".py" else path.name
        for path in (root / "tests").iterdir()
        if path.suffix == ".py" or (path / "__init__.py").exists()
    )
    deptry = [sys.executable, "-m", "deptry", ".", "--no-ansi"]
    return [
        ("benchmark/ against the runtime dependencies", deptry),
        (
            "tests/ against runtime + dev dependencies",
            [
                *deptry,
                "--exclude",
                NOT_TESTS,
                "--ignore",
                "DEP002,DEP004",  # the package's own dependencies are not all used by tests
                # tests import their helpers and each other
                *(f"--known-first-party={name}" for name in ["benchmark", *test_modules]),
            ],
        ),
    ]


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1])
    failed = False
    for title, command in passes(root):
        result = subprocess.run(command, cwd=root, capture_output=True, text=True)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        issues = [line for line in lines if " DEP0" in line]
        if result.returncode != 0:
            failed = True
            print(f"dependencies, {title}: {len(issues) or 'deptry failed'}")
            print("\n".join(f"  {line}" for line in (issues or lines)))
        else:
            print(f"dependencies, {title}: clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
