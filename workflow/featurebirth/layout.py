"""Every path and file name of the results tree, in one place.

The Snakemake rules and the library build their paths from these functions and nowhere else
(tests/test_layout.py fails on a results-tree path written elsewhere). Arguments may be
wildcard strings such as "{model}", which gives the rule's output pattern. This module imports
nothing heavy, so planning and light stages can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_METADATA = "featurebirth.json"  # beside a toy checkpoint: step, tokens_seen, n_params, losses
CONTROL = "control"  # category label of control probe items (a filler word, or a frequency-matched non-lexicon word)
PROBE_SETS = ("template", "mined")  # held-out template contexts; contexts mined from real text (corpus.source text)
SAE_WEIGHTS = "ae.pt"
BASE_SEED = 0  # sae.seed's default before there were seeds: its SAEs keep the folders and job names of that time
SAE_CONFIG = "config.json"
TRAINING_STATE_SUFFIX = ".training-state.pt"
GROUP_PREFIX = "group-"
GROUP_SUFFIX = ".json"
TABLES = (
    "emergence_steps",
    "emergence_layers",
    "scale_thresholds",
    "reactivation",
    "summary_table",
    "probe_baseline",
    "lineage",
)
FIGURES = ("emergence", "scale", "reactivation", "lineage")


def _join(*parts: str | int | Path) -> str:
    return "/".join(str(part) for part in parts)


# corpus (once per run)
def corpus_dir(results: str | Path) -> str:
    return _join(results, "corpus")


def corpus_file(results: str | Path, name: str) -> str:
    """One of CORPUS_FILES in the corpus folder."""
    return in_corpus(corpus_dir(results), name)


def in_corpus(folder: str | Path, name: str) -> str:
    """One of CORPUS_FILES in a given corpus folder (the corpus job knows its folder from its outputs)."""
    if name not in CORPUS_FILES:
        raise KeyError(f"unknown corpus file {name!r}; known: {sorted(CORPUS_FILES)}")
    return _join(folder, CORPUS_FILES[name])


CORPUS_FILES = {
    "tokens": "tokens.h5",  # token ids of the toy tokenizer: the train and sae splits
    "eval_tokens": "eval.h5",  # token ids of the evaluation split
    "probes": "probes.tsv",
    "tokenizer": "tokenizer",
    "lexicon": "lexicon.json",
    "train_text": "train.txt",  # the toy models' training text
    "sae_text": "sae.txt",  # SAE training text (hub models tokenise it themselves)
    "eval_text": "eval.txt",  # held-out text for SAE quality
    # real text (corpus.source: text)
    "text_source": "text/source.json",  # the files the fetch found or fetched
    "text_sae": "text/sae.h5",  # packed token ids of the SAE-training documents
    "text_eval": "text/eval.h5",  # ... of the evaluation documents
    "text_probe": "text/probe.h5",  # ... of the probe-mining documents
    "text_mined": "text/mined_probes.h5",  # token-id windows mined from the probe-mining part (mining.py)
    "text_mined_record": "text/mined_probes.json",  # contexts found per word, the controls and their frequency match
}


def text_check(results: str | Path, model: str) -> str:
    """The record of one model checked against the text (lexicon, budget; written before any of its SAE jobs)."""
    return _join(corpus_dir(results), "text", f"check-{model}.json")


# checkpoints, per (model, step)
def toy_checkpoint(results: str | Path, model: str, step: int | str) -> str:
    """A toy checkpoint folder (from_pretrained)."""
    return _join(results, "models", model, f"step{step}")


def hub_pointer(results: str | Path, model: str, step: int | str) -> str:
    """The prefetch pointer of a hub revision (a JSON file naming repo, revision and cache)."""
    return _join(results, "hub", model, f"step{step}.json")


def cell_name(model: str, step: int | str, layer: int | str, seed: int = BASE_SEED) -> str:
    """How logs and errors name a cell (and, for any seed but BASE_SEED, which of its SAEs)."""
    return f"{model}/step{step}/layer{layer}" + ("" if seed == BASE_SEED else f"/seed{seed}")


# SAEs: one folder per cell and SAE seed, trained by layer-group jobs
def sae_step_dir(results: str | Path, model: str, step: int | str) -> str:
    return _join(results, "sae", model, f"step{step}")


def sae_dir(results: str | Path, model: str, step: int | str, layer: int | str, seed: int = BASE_SEED) -> str:
    """One cell's SAE of one seed: SAE_WEIGHTS and SAE_CONFIG. BASE_SEED's SAEs keep the folders they had before
    there were seeds (layer<layer>/), so adding a seed retrains none of them; another seed's are under seed<seed>/."""
    return _join(sae_step_dir(results, model, step), _sae_folder(layer, seed))


def _sae_folder(layer: int | str, seed: int) -> str:
    return f"layer{layer}" if seed == BASE_SEED else f"seed{seed}/layer{layer}"


def layer_group(layers: list[int] | tuple[int, ...]) -> str:
    """The name of a layer group, e.g. '0-1-2'."""
    return "-".join(str(layer) for layer in layers)


def parse_layer_group(name: str) -> list[int]:
    """'0-1-2' -> [0, 1, 2]."""
    return [int(part) for part in name.split("-")]


SEEDS_MARK = ".seeds-"


def group_name(layers: list[int] | tuple[int, ...], seeds: list[int] | tuple[int, ...] = (BASE_SEED,)) -> str:
    """The name of an SAE job: its layers, then the seeds it trains, e.g. '0-1-2.seeds-0-1'; no seeds for a job of
    BASE_SEED alone ('0-1-2', the name such jobs had before there were seeds)."""
    alone = list(seeds) == [BASE_SEED]
    return layer_group(layers) + ("" if alone else f"{SEEDS_MARK}{layer_group(seeds)}")


def parse_group_name(name: str) -> tuple[list[int], list[int]]:
    """'0-1-2.seeds-0-1' -> ([0, 1, 2], [0, 1]); '0-1-2' -> ([0, 1, 2], [BASE_SEED])."""
    layers, _, seeds = name.partition(SEEDS_MARK)
    return parse_layer_group(layers), parse_layer_group(seeds) if seeds else [BASE_SEED]


def sae_group(results: str | Path, model: str, step: int | str, group: str) -> str:
    """The manifest an SAE job writes last, after every SAE of its group (e.g. group-0-1-2.json,
    group-0-1-2.seeds-0-1.json); `group` is a group_name.

    The group is in the file name so that the planner can tell which layers and seeds are trained, and by
    which job, from the names in a folder alone (see trained_groups).
    """
    return _join(sae_step_dir(results, model, step), f"{GROUP_PREFIX}{group}{GROUP_SUFFIX}")


def training_state(manifest: str | Path) -> str:
    """Where the SAE job of a manifest's group keeps its training state while it runs (resume.py); removed at the end.

    Not a Snakemake output, so a failed or killed attempt leaves it for the retry to resume from.
    """
    path = Path(manifest)
    return _join(path.parent, f"{path.name[: -len(GROUP_SUFFIX)]}{TRAINING_STATE_SUFFIX}")


def manifest_group(manifest: str | Path) -> tuple[list[int], list[int]]:
    """The layers and seeds of the group a manifest (layout.sae_group) belongs to."""
    return parse_group_name(Path(manifest).name[len(GROUP_PREFIX) : -len(GROUP_SUFFIX)])


def group_sae_dirs(manifest: str | Path) -> dict[tuple[int, int], str]:
    """The SAE folder of every (layer, seed) of a group, beside its manifest (jobs know their manifests from the
    rule)."""
    layers, seeds = manifest_group(manifest)
    return {(layer, seed): _join(Path(manifest).parent, _sae_folder(layer, seed)) for layer in layers for seed in seeds}


def trained_groups(results: str | Path, model: str, step: int | str) -> list[tuple[list[int], list[int]]]:
    """The (layers, seeds) groups of (model, step) whose SAE job finished, from the manifest names on disk."""
    try:
        names = os.listdir(sae_step_dir(results, model, step))
    except FileNotFoundError:
        return []
    return [
        manifest_group(name) for name in sorted(names) if name.startswith(GROUP_PREFIX) and name.endswith(GROUP_SUFFIX)
    ]


def sae_files(results: str | Path, model: str, step: int | str, layer: int | str, seed: int = BASE_SEED) -> list[str]:
    """The files of one cell's SAE of one seed."""
    folder = sae_dir(results, model, step, layer, seed)
    return [_join(folder, SAE_WEIGHTS), _join(folder, SAE_CONFIG)]


# scores and SAE quality, per (model, step): every layer in one file
def score_path(results: str | Path, model: str, step: int | str) -> str:
    return _join(results, "scores", model, f"step{step}.nc")


# aggregates
def cube_path(results: str | Path) -> str:
    return _join(results, "cube.nc")


def tables_dir(results: str | Path) -> str:
    return _join(results, "tables")


def table_path(results: str | Path, name: str) -> str:
    return in_tables(tables_dir(results), name)


def summary_path(results: str | Path) -> str:
    return in_tables(tables_dir(results), SUMMARY_FILE)


SUMMARY_FILE = "summary.json"


def in_tables(folder: str | Path, name: str) -> str:
    """A table (by its name, e.g. 'reactivation') or the summary file, in a given tables folder."""
    return _join(folder, name if name == SUMMARY_FILE else f"{name}.tsv")


def analysis_path(results: str | Path) -> str:
    """Represented cells, emergence and reactivation, computed once from the cube."""
    return _join(tables_dir(results), "analysis.nc")


def heatmap_path(results: str | Path, model: str) -> str:
    return _join(results, "figures", "heatmaps", f"{model}.png")


def quality_heatmap_path(results: str | Path, model: str) -> str:
    """One model's downstream SAE quality (CE loss recovered and increase) over layer x step."""
    return _join(results, "figures", "quality", f"{model}.png")


def figure_path(results: str | Path, figure: str) -> str:
    return _join(results, "figures", f"{figure}.png")


def report_path(results: str | Path) -> str:
    return _join(results, "report.html")


def results_of(cube: str | Path) -> Path:
    """The results folder a cube lives in (to find its analysis beside it)."""
    return Path(cube).parent


def log_for(results: str | Path, output: str | Path) -> str:
    """The log of the job that writes `output`: the same path under results/logs/, plus '.log'."""
    relative = os.path.relpath(str(output), str(results))
    return _join(results, "logs", f"{relative}.log")
