"""Where each stage writes and the names inside its files, in one place.

The Snakemake rules and the library build paths from these; light stages import this
module without pulling in torch or transformers.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_METADATA = "featurebirth.json"  # beside a toy checkpoint: step, tokens_seen, n_params, losses
PROBE_DATASET = "activations"  # probes.h5: [n_layers, n_items, d_model] float16
CONTROL = "control"  # category label of probe items whose target is a filler word


def score_path(results: str | Path, model: str, step: int | str, layer: int | str) -> str:
    """One cell's score file (wildcard strings such as '{model}' give the rule's pattern)."""
    return f"{results}/scores/{model}/step{step}/layer{layer}.nc"


def cube_path(results: str | Path) -> str:
    """The cube of every cell."""
    return f"{results}/cube.nc"


def layer_dataset(layer: int) -> str:
    """Name of a layer's dataset in a training cache (train.h5)."""
    return f"layer_{layer}"
