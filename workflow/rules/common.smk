"""Wildcard constraints, input functions and per-job parameters shared by every stage.

Paths come from featurebirth.layout, settings from featurebirth.config: this file only connects them.
"""

import functools
import json
import os
import re
import shlex

from featurebirth import layout
from featurebirth.config import (
    corpus_settings,
    cube_settings,
    layer_groups,
    model_layers,
    model_spec,
    sae_training_settings,
    scoring_settings,
)

RESULTS = config["results"]
MODEL_NAMES = "|".join(re.escape(name) for name in config["models"])
NEVER = "(?!x)x"  # a wildcard pattern that matches nothing, for an empty model list
TOY_MODELS = "|".join(re.escape(n) for n, m in config["models"].items() if m["source"] == "toy") or NEVER
HUB_MODELS = "|".join(re.escape(n) for n, m in config["models"].items() if m["source"] == "hub") or NEVER


wildcard_constraints:
    model=MODEL_NAMES,
    step=r"\d+",
    layers=r"\d+(-\d+)*",


def grows(base: int):
    """A resource that grows with each retry (base, 2 x base, ...), so a job killed for time or memory can pass."""
    return lambda wildcards, attempt: base * attempt


def model_grows(resource: str, base: int):
    """Like grows(), from the larger of `base` and the model's own floor (models.<name>.resources)."""
    floors = {name: max(base, model.get("resources", {}).get(resource, 0)) for name, model in config["models"].items()}
    return lambda wildcards, attempt: floors[wildcards.model] * attempt


def as_arg(data) -> str:
    """A JSON value quoted for the shell: a stage's settings travel as one argument."""
    return shlex.quote(json.dumps(data, sort_keys=True))


def is_hub(model: str) -> bool:
    return config["models"][model]["source"] == "hub"


def per_model(settings):
    """A params function giving each model its own settings, quoted once per plan rather than once per job."""
    quoted = {model: as_arg(settings(config, model)) for model in config["models"]}
    return lambda wildcards: quoted[wildcards.model]


def hub_settings(config: dict, model: str) -> dict:
    """What the prefetch of a hub model reads."""
    return {"model": model_spec(config, model), "hub": config["hub"]}


STUDIED_LAYERS = {model: layout.layer_group(model_layers(config, model)) for model in config["models"]}


def studied_layers(wildcards) -> str:
    return STUDIED_LAYERS[wildcards.model]


def checkpoint(wildcards) -> str:
    """The checkpoint a (model, step) loads from: a toy folder, or the hub revision's prefetch pointer."""
    if is_hub(wildcards.model):
        return layout.hub_pointer(RESULTS, wildcards.model, wildcards.step)
    return layout.toy_checkpoint(RESULTS, wildcards.model, wildcards.step)


def split_tokens(split_text: str):
    """Toy models read the corpus's token ids; hub models tokenise the split's text with their own tokenizer."""
    return lambda wildcards: layout.corpus_file(RESULTS, split_text if is_hub(wildcards.model) else "tokens")


@functools.cache
def sae_groups(model: str, step: str) -> tuple[str, ...]:
    """The layer groups whose SAE jobs cover the studied layers of (model, step).

    Groups already trained are read from their manifests' names (layout.trained_groups: which files
    exist, never what they hold); a layer counts as trained when its group's manifest and its own
    SAE files exist. The other layers are cut into new groups of sae.layers_per_job. So adding a
    layer trains only that layer, a trained group keeps its name, and a deleted SAE file is retrained.
    """
    studied = model_layers(config, model)
    kept, covered = [], set()
    for group in layout.trained_groups(RESULTS, model, step):
        complete = {layer for layer in group if all(map(os.path.exists, layout.sae_files(RESULTS, model, step, layer)))}
        if complete & set(studied):
            kept.append(layout.layer_group(group))
        covered |= complete
    missing = [layer for layer in studied if layer not in covered]
    return tuple(kept + [layout.layer_group(group) for group in layer_groups(config, model, missing)])


def trained_saes(wildcards) -> list[str]:
    """The SAE-job manifests a score job waits for: every studied layer of its (model, step)."""
    return [
        layout.sae_group(RESULTS, wildcards.model, wildcards.step, group)
        for group in sae_groups(wildcards.model, wildcards.step)
    ]


def all_scores() -> list[str]:
    return [layout.score_path(RESULTS, model, step) for model in config["models"] for step in config["steps"]]


def all_figures() -> list[str]:
    heatmaps = [layout.heatmap_path(RESULTS, model) for model in config["models"]]
    return heatmaps + [layout.figure_path(RESULTS, figure) for figure in layout.FIGURES]
