"""Paths, wildcard constraints and per-cell parameters shared by every stage."""

import json
import re
import shlex

from featurebirth.config import model_layers, model_spec, sae_settings

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
MODEL_NAMES = "|".join(re.escape(name) for name in config["models"])


wildcard_constraints:
    model=MODEL_NAMES,
    step=r"\d+",
    layer=r"\d+",


def as_arg(data) -> str:
    """A JSON value quoted for the shell: per-cell settings travel as one argument."""
    return shlex.quote(json.dumps(data, sort_keys=True))


def model_dir(wildcards) -> str:
    return f"{RESULTS}/models/{wildcards.model}/step{wildcards.step}"


def all_sae_metrics() -> list[str]:
    return [
        f"{RESULTS}/sae/{model}/step{step}/layer{layer}/metrics.json"
        for model in config["models"]
        for step in config["steps"]
        for layer in model_layers(config, model)
    ]


def all_probe_caches() -> list[str]:
    return [
        f"{RESULTS}/activations/{model}/step{step}/probes.h5"
        for model in config["models"]
        for step in config["steps"]
    ]
