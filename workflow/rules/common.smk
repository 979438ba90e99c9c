"""Wildcard constraints, input functions and per-job parameters shared by every stage.

Paths come from featurebirth.layout, settings from featurebirth.config: this file only connects them.
"""

import json
import os
import re
import shlex
from typing import Callable

from snakemake.exceptions import WorkflowError

from featurebirth import layout
from featurebirth.config import (
    corpus_settings,
    cube_settings,
    eval_split_settings,
    figure_settings,
    hub_settings,
    is_generated,
    mining_settings,
    model_layers,
    model_spec,
    probe_settings,
    sae_job_groups,
    sae_seeds,
    sae_training_settings,
    scoring_settings,
    text_check_settings,
    text_fetch_settings,
    text_tokenize_settings,
)

RESULTS = config["results"]
MODEL_NAMES = "|".join(re.escape(name) for name in config["models"])
NEVER = "(?!x)x"  # a wildcard pattern that matches nothing, for an empty model list
TOY_MODELS = "|".join(re.escape(n) for n, m in config["models"].items() if m["source"] == "toy") or NEVER
HUB_MODELS = "|".join(re.escape(n) for n, m in config["models"].items() if m["source"] == "hub") or NEVER


wildcard_constraints:
    model=MODEL_NAMES,
    step=r"\d+",
    group=r"\d+(-\d+)*(\.seeds-\d+(-\d+)*)?",


def grows(base: int) -> Callable:
    """A resource that grows with each retry (base, 2 x base, ...), so a job killed for time or memory can pass."""
    return lambda wildcards, attempt: base * attempt


def model_grows(resource: str, base: int) -> Callable:
    """Like grows(), from the larger of `base` and the model's own floor (models.<name>.resources)."""
    floors = {name: max(base, model.get("resources", {}).get(resource, 0)) for name, model in config["models"].items()}
    return lambda wildcards, attempt: floors[wildcards.model] * attempt


def as_arg(data: object) -> str:
    """A JSON value quoted for the shell: a stage's settings travel as one argument."""
    return shlex.quote(json.dumps(data, sort_keys=True))


def is_hub(model: str) -> bool:
    return config["models"][model]["source"] == "hub"


def per_model(settings: Callable[[dict, str], dict]) -> Callable:
    """A params function giving each model its own settings, quoted once per plan rather than once per job."""
    quoted = {model: as_arg(settings(config, model)) for model in config["models"]}
    return lambda wildcards: quoted[wildcards.model]


def sae_job_settings(wildcards) -> str:
    """An SAE job's settings: its model's recipe naming the first of the seeds its group trains (from its name)."""
    seeds = layout.parse_group_name(wildcards.group)[1]
    return as_arg(sae_training_settings(config, wildcards.model, seeds))


FIGURE_SETTINGS = {figure: as_arg(figure_settings(config, figure)) for figure in layout.FIGURES}
STUDIED_LAYERS = {model: layout.layer_group(model_layers(config, model)) for model in config["models"]}


def studied_layers(wildcards) -> str:
    return STUDIED_LAYERS[wildcards.model]


def checkpoint(wildcards) -> str:
    """The checkpoint a (model, step) loads from: a toy folder, or the hub revision's prefetch pointer."""
    if is_hub(wildcards.model):
        return layout.hub_pointer(RESULTS, wildcards.model, wildcards.step)
    return layout.toy_checkpoint(RESULTS, wildcards.model, wildcards.step)


SPLIT_INPUTS = {  # the corpus file a split is read from: generated corpus (toy ids, hub text), real text
    "sae": {"toy": "tokens", "hub": "sae_text", "text": "text_sae"},
    "eval": {"toy": "eval_tokens", "hub": "eval_text", "text": "text_eval"},
}


def split_tokens(split: str) -> Callable:
    """Toy models read the generated split's token ids, hub models tokenise its text themselves; with real text
    every model reads the packed ids tokenized once."""

    def source(wildcards) -> str:
        kind = "text" if not is_generated(config) else config["models"][wildcards.model]["source"]
        return layout.corpus_file(RESULTS, SPLIT_INPUTS[split][kind])

    return source


def text_tokenizer(wildcards) -> str:
    """The checkpoint (at the first configured step) of the model whose tokenizer tokenizes the text."""
    return layout.hub_pointer(RESULTS, config["corpus"]["text"]["tokenizer"], config["steps"][0])


def first_checkpoint(wildcards) -> str:
    """A model's checkpoint at the first configured step (its tokenizer is the same at every step)."""
    return layout.hub_pointer(RESULTS, wildcards.model, config["steps"][0])


def text_checked(wildcards) -> list:
    """With real text, an SAE job waits for its model's check against the text (lexicon, budget). The check only
    gates: ancient, so that a rerun of it (a lexicon word added) retrains nothing."""
    return [] if is_generated(config) else [ancient(layout.text_check(RESULTS, wildcards.model))]


def sae_groups(model: str, step: int) -> tuple[str, ...]:
    """The names of the SAE jobs (layer groups x seeds) that cover the studied layers and seeds of (model, step).

    Groups already trained are known by their manifests' names (layout.trained_groups: which files
    exist, never what they hold); the studied (layer, seed)s they leave out are cut into new groups of
    sae.layers_per_job (config.sae_job_groups, which the cost plan uses too). So adding a layer or a seed trains
    only that, and a trained group keeps its name.
    """
    trained = layout.trained_groups(RESULTS, model, step)
    groups = sae_job_groups(config, model, trained)
    for group in groups:
        if group in trained:
            check_complete(model, step, layout.group_name(*group))
    return tuple(layout.group_name(*group) for group in groups)


def check_complete(model: str, step: int, group: str) -> None:
    """A trained group whose SAE files (of a configured seed) are gone stops the plan: its manifest must go too, to
    retrain it."""
    manifest = layout.sae_group(RESULTS, model, step, group)
    seeds = sae_seeds(config)
    folders = [folder for (_, seed), folder in layout.group_sae_dirs(manifest).items() if seed in seeds]
    missing = [
        os.path.join(folder, name)
        for folder in folders
        for name in (layout.SAE_WEIGHTS, layout.SAE_CONFIG)
        if not os.path.exists(os.path.join(folder, name))
    ]
    if missing:
        raise WorkflowError(
            f"SAE file(s) {missing} are missing, but the manifest of their layer group, {manifest}, says the group "
            f"is trained: to retrain the group, delete that manifest and run with --forcerun {manifest}"
        )


# Planned once, before any job: a trained group with missing files stops the plan here (an error raised in
# an input function would be taken by Snakemake as "no rule makes this file" and pass silently).
SAE_GROUPS = {(model, str(step)): sae_groups(model, step) for model in config["models"] for step in config["steps"]}


def trained_saes(wildcards) -> list[str]:
    """The SAE-job manifests a score job waits for: every studied layer of its (model, step)."""
    return [
        layout.sae_group(RESULTS, wildcards.model, wildcards.step, group)
        for group in SAE_GROUPS[wildcards.model, wildcards.step]
    ]


def mined_probes(wildcards) -> list[str]:
    """Real text: the probes mined from its probe-mining part, scored beside the template probes."""
    return [] if is_generated(config) else [layout.corpus_file(RESULTS, "text_mined")]


def text_frequency_source() -> list[str]:
    """Real text: the tokenizer model's check, which measures each category's frequency in the SAE text."""
    return [] if is_generated(config) else [layout.text_check(RESULTS, config["corpus"]["text"]["tokenizer"])]


def all_scores() -> list[str]:
    return [layout.score_path(RESULTS, model, step) for model in config["models"] for step in config["steps"]]


def all_figures() -> list[str]:
    heatmaps = [layout.heatmap_path(RESULTS, model) for model in config["models"]]
    quality = [layout.quality_heatmap_path(RESULTS, model) for model in config["models"]]
    return heatmaps + quality + [layout.figure_path(RESULTS, figure) for figure in layout.FIGURES]
