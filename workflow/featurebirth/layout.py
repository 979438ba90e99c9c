"""Where each stage writes, in one place: the Snakemake rules and the library build paths from these."""

from __future__ import annotations

from pathlib import Path


def score_path(results: str | Path, model: str, step: int | str, layer: int | str) -> str:
    """One cell's score file (wildcard strings such as '{model}' give the rule's pattern)."""
    return f"{results}/scores/{model}/step{step}/layer{layer}.nc"


def cube_path(results: str | Path) -> str:
    """The cube of every cell."""
    return f"{results}/cube.nc"
