"""Formatting and lint, checked in the fast tier: ruff format and ruff check for the Python, snakefmt for the
workflow files.

All read their settings (line length 120, lint rules) from pyproject.toml. To fix a failure, run:
`ruff format workflow tests benchmarks`, `ruff check --fix workflow tests benchmarks` and
`snakefmt Snakefile workflow/rules`.
"""

import subprocess
import sys

from conftest import REPO

PYTHON_DIRS = [name for name in ("workflow", "tests", "benchmarks", "scripts") if any((REPO / name).rglob("*.py"))]
WORKFLOW_FILES = ["Snakefile", "workflow/rules"]


def _check(tool: str, *args: str) -> None:
    """Run `python -m tool args` in the repository; fail with the tool's diff and messages."""
    checked = subprocess.run([sys.executable, "-m", tool, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    fix = " ".join(arg for arg in args if not arg.startswith("-"))
    assert checked.returncode == 0, (
        f"{tool} {args[0]} failed with exit {checked.returncode} (1: findings, below; else an error);"
        f" to reformat, run `{tool} {fix}`\n{checked.stdout[:20000]}\n{checked.stderr[-5000:]}"
    )


def test_python_is_ruff_formatted():
    _check("ruff", "format", "--check", "--diff", *PYTHON_DIRS)


def test_python_passes_ruff_check():
    _check("ruff", "check", *PYTHON_DIRS)


def test_workflow_files_are_snakefmt_formatted():
    _check("snakefmt", "--check", "--compact-diff", *WORKFLOW_FILES)
