"""Paths, wildcard constraints and per-cell parameters shared by every stage."""

import functools
import inspect
import json
import os
import re
import shlex

from snakemake.common import overwrite_function_params

from featurebirth.config import grid, model_layers, model_spec, sae_settings
from featurebirth.layout import cube_path, score_path

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
TABLES = ["emergence_steps", "emergence_layers", "scale_thresholds", "reactivation", "summary_table"]
FIGURES = ["emergence", "scale", "reactivation"]
MODEL_NAMES = "|".join(re.escape(name) for name in config["models"])
NEVER = "(?!x)x"  # a wildcard pattern that matches nothing, for an empty model list
TOY_MODELS = "|".join(re.escape(n) for n, m in config["models"].items() if m["source"] == "toy") or NEVER
HUB_MODELS = "|".join(re.escape(n) for n, m in config["models"].items() if m["source"] == "hub") or NEVER


wildcard_constraints:
    model=MODEL_NAMES,
    step=r"\d+",
    layer=r"\d+",
    layers=r"\d+(-\d+)*",


def per_job(function):
    """Declare a per-job callable's parameters once, so Snakemake need not inspect it again for each job."""
    overwrite_function_params(function, inspect.signature(function).parameters)
    return function


def grows(base: int):
    """A resource that grows with each retry (base, 2 x base, ...), so a job killed for time or memory can pass."""
    return per_job(lambda wildcards, attempt: base * attempt)


def model_grows(resource: str, base: int):
    """Like grows(), from the larger of `base` and the model's own floor (models.<name>.resources)."""
    floors = {name: max(base, model.get("resources", {}).get(resource, 0)) for name, model in config["models"].items()}
    return per_job(lambda wildcards, attempt: floors[wildcards.model] * attempt)


def as_arg(data) -> str:
    """A JSON value quoted for the shell: per-cell settings travel as one argument."""
    return shlex.quote(json.dumps(data, sort_keys=True))


def is_hub(model: str) -> bool:
    return config["models"][model]["source"] == "hub"


def per_model(settings):
    """A params function giving each model its own settings, quoted once per plan rather than once per job."""
    quoted = {model: as_arg(settings(config, model)) for model in config["models"]}
    return per_job(lambda wildcards: quoted[wildcards.model])


@per_job
def model_dir(wildcards) -> str:
    """The checkpoint a (model, step) loads from: a toy folder, or the hub revision's prefetch pointer."""
    if is_hub(wildcards.model):
        return f"{RESULTS}/hub/{wildcards.model}/step{wildcards.step}.json"
    return f"{RESULTS}/models/{wildcards.model}/step{wildcards.step}"


def sae_metrics(model: str, step, layer) -> str:
    """The metrics file of a cell's SAE: its presence means the SAE is trained."""
    return f"{RESULTS}/sae/{model}/step{step}/layer{layer}/metrics.json"


def cache_name(layers) -> str:
    """File name of a training cache holding `layers`, e.g. train-0-1-2.h5."""
    return f"train-{'-'.join(map(str, layers))}.h5"


@functools.cache
def layers_without_sae(model: str, step: str) -> tuple[int, ...]:
    """The studied layers of (model, step) whose SAE is not trained yet (checked once per plan)."""
    return tuple(layer for layer in model_layers(config, model) if not os.path.exists(sae_metrics(model, step, layer)))


@per_job
def training_cache(wildcards) -> str:
    """The temporary training cache an SAE reads, named by the layers it holds (train-0-1-2.h5).

    One forward pass caches every layer of (model, step) whose SAE is missing, so an added layer
    gets a cache of its own. A trained SAE keeps naming the cache it was trained from (recorded in
    its metrics), a temporary file no job remakes: its input set is unchanged and it is not redone.
    """
    model, step, layer = wildcards.model, wildcards.step, int(wildcards.layer)
    missing = layers_without_sae(model, step)
    folder = f"{RESULTS}/activations/{model}/step{step}"
    if layer in missing:
        return f"{folder}/{cache_name(missing)}"
    with open(sae_metrics(model, step, layer)) as handle:
        recorded = json.load(handle).get("training_cache")
    return f"{folder}/{recorded or cache_name(model_layers(config, model))}"


@per_job
def training_tokens(wildcards) -> str:
    """Toy models read the corpus's token ids; hub models tokenise its text with their own tokenizer."""
    return f"{RESULTS}/corpus/sae.txt" if is_hub(wildcards.model) else f"{RESULTS}/corpus/tokens.h5"


def all_scores() -> list[str]:
    return [score_path(RESULTS, model, step, layer) for model, step, layer in grid(config)]


def all_figures() -> list[str]:
    heatmaps = [f"{RESULTS}/figures/heatmaps/{model}.png" for model in config["models"]]
    return heatmaps + [f"{RESULTS}/figures/{figure}.png" for figure in FIGURES]
