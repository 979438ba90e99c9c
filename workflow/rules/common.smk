"""Paths, wildcard constraints and per-cell parameters shared by every stage."""

import json
import re
import shlex

from featurebirth.config import grid, model_layers, model_spec, sae_settings
from featurebirth.layout import cube_path, score_path

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
TABLES = ["emergence_steps", "emergence_layers", "scale_thresholds", "reactivation", "summary_table"]
FIGURES = ["emergence", "scale", "reactivation"]
MODEL_NAMES = "|".join(re.escape(name) for name in config["models"])


wildcard_constraints:
    model=MODEL_NAMES,
    step=r"\d+",
    layer=r"\d+",


def grows(base: int):
    """A resource that grows with each retry (base, 2 x base, ...), so a job killed for time or memory can pass."""
    return lambda wildcards, attempt: base * attempt


def as_arg(data) -> str:
    """A JSON value quoted for the shell: per-cell settings travel as one argument."""
    return shlex.quote(json.dumps(data, sort_keys=True))


def model_dir(wildcards) -> str:
    return f"{RESULTS}/models/{wildcards.model}/step{wildcards.step}"


def all_scores() -> list[str]:
    return [score_path(RESULTS, model, step, layer) for model, step, layer in grid(config)]


def all_figures() -> list[str]:
    heatmaps = [f"{RESULTS}/figures/heatmaps/{model}.png" for model in config["models"]]
    return heatmaps + [f"{RESULTS}/figures/{figure}.png" for figure in FIGURES]
