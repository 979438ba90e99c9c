"""Gather every scored cell into one xarray cube: probe_set x seed x model x step x layer x category.

Cells a model does not have (layers beyond its depth, layers not studied) are NaN. The config that
made it is kept in the attributes as provenance only: the analysis takes its settings from the
workflow, never from there. Every category variable is kept per probe set (template; with real text also mined);
the SAE quality variables, measured on the evaluation split, are not. Every variable of an SAE is kept per SAE seed
(sae.seeds); the linear probe reads no SAE and has no seed. Beside the scores (in-sample, and the held-out
controls: a linear probe and the SAE on unseen words) the cube keeps, per (probe set, seed, model, step, category),
the cosine between the best features' decoder directions of every pair of layers, so reactivation can be judged from
the cube alone; and the lineage of each best feature (lineage.py): how like the previous step's it is, and how alike
two seeds' are at the same step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from .io import atomic_path
from .lineage import across_seeds, across_steps, correlation, cosine

CELL_VARIABLES = ("score", "null", "auroc", "precision", "recall", "heldout_score", "heldout_null")  # per SAE seed
PROBE_VARIABLES = ("probe_score", "probe_null", "probe_auroc")  # the linear probe: no SAE, no seed
LINEAGE_VARIABLES = ("lineage_cosine", "lineage_correlation")  # per seed: against the previous configured step
SEED_VARIABLES = ("seed_cosine", "seed_correlation")  # the same step, across seeds: what "the same feature" looks like
BEST = {"best_direction": "hidden", "best_codes": "item"}  # what the score files keep of each best feature
LINEAGE_KERNELS = {"cosine": ("best_direction", cosine), "correlation": ("best_codes", correlation)}
QUALITY_VARIABLES = (
    "variance_explained",
    "l0",
    "dead_fraction",
    "dead_fraction_train",
    "ce_loss_clean",
    "ce_loss_sae",
    "ce_loss_zero",
    "ce_loss_recovered",
    "ce_loss_increase",
    "kl_score",
)
MISSING_FEATURE = -1

DESCRIPTIONS = {
    "score": "category score S(c): best feature's F1 of 'fires' against 'is a target of c'",
    "null": "S0(c): high quantile of the category score under word-level label permutations",
    "auroc": "AUROC of the best feature's code value for the category",
    "precision": "P(c | best feature fires)",
    "recall": "P(best feature fires | c)",
    "probe_score": "F1 on held-out words of a linear probe (L2 logistic regression on the raw activations), each "
    "word predicted by the probe of the fold that held it out (folds grouped by word)",
    "probe_null": "high quantile of probe_score under word-level label permutations (same folds)",
    "probe_auroc": "AUROC of the probe's held-out logits for the category",
    "heldout_score": "F1 on held-out words of the SAE feature with the best F1 on the other folds' words (same folds)",
    "heldout_null": "high quantile of heldout_score under word-level label permutations (same folds)",
    "best_feature": f"id of the best feature in the cell's SAE ({MISSING_FEATURE} where no cell)",
    "variance_explained": "SAE fraction of variance explained on held-out activations (evaluation split)",
    "l0": "SAE mean active features per token",
    "dead_fraction": "fraction of SAE features that never fired on held-out activations",
    "dead_fraction_train": "fraction of SAE features silent for the trainer's dead-feature window at the end of "
    "training, by the trainer's own counter (NaN for relu, which keeps none)",
    "ce_loss_clean": "next-token loss (nats per prediction) of the untouched model on the evaluation split; the same "
    "for every layer of a (model, step)",
    "ce_loss_sae": "next-token loss (nats) with the layer's residual stream replaced by the SAE reconstruction "
    "(the first exclude_first positions pass through clean and no prediction made there counts)",
    "ce_loss_zero": "next-token loss (nats) with the layer's residual stream replaced by zeros",
    "ce_loss_recovered": "(ce_loss_zero - ce_loss_sae) / (ce_loss_zero - ce_loss_clean); NaN where zero ablation "
    "costs less than evaluation.ce_floor (read ce_loss_increase there)",
    "ce_loss_increase": "ce_loss_sae - ce_loss_clean (nats): the cost of splicing in the SAE",
    "kl_score": "(KL_zero - KL_sae) / KL_zero, KL(p_clean || p_patched) averaged over the counted predictions; NaN "
    "where KL_zero < evaluation.ce_floor",
    "direction_cosine": "cosine of the best features' decoder directions at layer and other_layer",
    "lineage_cosine": "cosine of the best feature's decoder direction with the other seeds' best features' at the "
    "previous configured step, averaged (with one seed: its own); NaN at the first step",
    "lineage_correlation": "Pearson correlation over the probe items of the best feature's codes with the other "
    "seeds' best features' at the previous configured step, averaged (with one seed: its own); NaN at the first "
    "step, or where either never fires",
    "seed_cosine": "cosine of the best features' decoder directions of two SAE seeds at the same step (the mean over "
    "pairs of seeds; NaN with one seed): the lineage_cosine of one feature seen twice",
    "seed_correlation": "Pearson correlation of the best features' codes of two SAE seeds at the same step (mean over "
    "pairs; NaN with one seed): the lineage_correlation of one feature seen twice",
    "duplicate_checkpoint": "another step of this model has identical weights (a mislabelled revision?)",
}


UNUSED = ("feature_f1",)  # kept in the score files for a closer look, not gathered (every feature's F1)


@contextmanager
def opened_scores(paths: Iterable[Path]) -> Iterator[list[xr.Dataset]]:
    """Every (model, step) score file, opened lazily and closed on exit: build_cube reads each variable as it gathers
    it, so memory holds one file's values and the previous step's best features at a time, not every file's (the
    best features' codes and directions of config/pythia.yaml are about 15 GB in all)."""
    with ExitStack() as stack:
        yield [stack.enter_context(xr.open_dataset(p, engine="h5netcdf", drop_variables=UNUSED)) for p in paths]


def _model_table(scored: list[xr.Dataset], models: list[str]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for step in scored:
        table.setdefault(step.attrs["model"], dict(step.attrs))
    missing = [m for m in models if m not in table]
    if missing:
        raise ValueError(f"no scored cell for model(s) {missing}")
    return table


def _empty(shape: tuple[int, ...], dtype=np.float64, fill=np.nan) -> np.ndarray:
    return np.full(shape, fill, dtype=dtype)


def _gather_lineage(arrays: dict, cell: tuple[int, int], best: dict, earlier: dict | None) -> None:
    """Fill one (model, step)'s seed_* (two seeds' best features alike?) and, where the model's previous configured
    step was scored (`earlier`: its best features), lineage_* (each seed's best feature against the other seeds' at
    that step, lineage.across_steps)."""
    m, s = cell
    layers = best["best_direction"]["layer"].values.tolist()
    for name, (variable, kernel) in LINEAGE_KERNELS.items():
        arrays[f"seed_{name}"][:, m, s, layers] = across_seeds(best[variable].values.transpose(1, 0, 2, 3, 4), kernel)
        if earlier is not None:
            shared = sorted(set(layers) & set(earlier[variable]["layer"].values.tolist()))
            now, then = (step[variable].sel(layer=shared).values.swapaxes(0, 1) for step in (best, earlier))
            arrays[f"lineage_{name}"][:, :, m, s, shared] = across_steps(now, then, kernel).swapaxes(0, 1)


def build_cube(scored: list[xr.Dataset], settings: dict, text_frequency: dict[str, float] | None = None) -> xr.Dataset:
    """One labelled dataset from every (model, step) score file; coordinates carry sizes, tokens seen and planted
    frequencies. `settings` is config.cube_settings: order, steps, seeds, planted frequencies and the provenance."""
    models, steps, categories = settings["models"], settings["steps"], settings["categories"]
    sets, seeds = settings["probe_sets"], settings["seeds"]
    info = _model_table(scored, models)
    n_layers = max(int(info[m]["n_layers"]) for m in models)
    shape = (len(sets), len(seeds), len(models), len(steps), n_layers, len(categories))
    probe_shape = shape[:1] + shape[2:]
    arrays = {name: _empty(shape) for name in CELL_VARIABLES + LINEAGE_VARIABLES}
    arrays |= {name: _empty(probe_shape) for name in PROBE_VARIABLES + SEED_VARIABLES}
    arrays["best_feature"] = _empty(shape, np.int32, MISSING_FEATURE)
    quality = {name: _empty(shape[1:5]) for name in QUALITY_VARIABLES}
    cosine_pairs = _empty((len(sets), len(seeds), len(models), len(steps), len(categories), n_layers, n_layers))
    tokens_seen = _empty(shape[2:4])
    fingerprint = np.full(shape[2:4], "", dtype=object)
    n_cells = 0
    previous: dict[int, tuple[int, dict]] = {}  # per model: the last step gathered and its best features
    for step_scores in sorted(
        scored, key=lambda d: (models.index(d.attrs["model"]), steps.index(int(d.attrs["step"])))
    ):
        m, s = models.index(step_scores.attrs["model"]), steps.index(int(step_scores.attrs["step"]))
        layers = [int(layer) for layer in step_scores["layer"].values]
        step_scores = step_scores.reindex(category=categories, probe_set=sets, seed=seeds)
        cell = ("probe_set", "seed", "layer", "category")
        for name in CELL_VARIABLES:
            arrays[name][:, :, m, s, layers] = step_scores[name].transpose(*cell).values
        for name in PROBE_VARIABLES:
            arrays[name][:, m, s, layers] = step_scores[name].transpose("probe_set", "layer", "category").values
        arrays["best_feature"][:, :, m, s, layers] = (
            step_scores["best_feature"].fillna(MISSING_FEATURE).transpose(*cell).values
        )
        for name in QUALITY_VARIABLES:
            quality[name][:, m, s, layers] = step_scores[name].transpose("seed", "layer").values
        best = {variable: step_scores[variable].transpose(*cell, other) for variable, other in BEST.items()}
        directions = best["best_direction"].values
        index = np.ix_(range(len(sets)), range(len(seeds)), range(len(categories)), layers, layers)
        cosine_pairs[:, :, m, s][index] = np.einsum("psich,psjch->pscij", directions, directions)
        before = previous.get(m)
        _gather_lineage(arrays, (m, s), best, before[1] if before and before[0] == s - 1 else None)
        previous[m] = (s, best)
        tokens_seen[m, s] = step_scores.attrs.get("tokens_seen", np.nan)
        fingerprint[m, s] = str(step_scores.attrs.get("fingerprint", ""))
        n_cells += len(layers)
    tokens_seen[tokens_seen < 0] = np.nan
    dims = ("probe_set", "seed", "model", "step", "layer", "category")
    without_seed = dims[:1] + dims[2:]
    data = {name: (without_seed if name in PROBE_VARIABLES + SEED_VARIABLES else dims, v) for name, v in arrays.items()}
    data.update({name: (dims[1:5], values) for name, values in quality.items()})
    cosine_dims = ("probe_set", "seed", "model", "step", "category", "layer", "other_layer")
    data["direction_cosine"] = (cosine_dims, cosine_pairs)
    data["duplicate_checkpoint"] = (("model", "step"), duplicate_steps(fingerprint))
    planted = settings["planted_frequency"]
    counts = probe_counts(scored, sets, categories)
    cube = xr.Dataset(
        data,
        coords={
            "probe_set": ("probe_set", sets, {"description": PROBE_SET_DESCRIPTION}),
            "seed": ("seed", np.asarray(seeds, dtype=np.int64), {"description": SEED_DESCRIPTION}),
            **{
                name: (("probe_set", "category"), values, {"description": text})
                for name, (values, text) in counts.items()
            },
            "model": models,
            "step": ("step", np.asarray(steps, dtype=np.int64), {"units": "optimizer steps"}),
            "layer": ("layer", np.arange(n_layers), {"long_name": "block index (residual stream after the block)"}),
            "other_layer": ("other_layer", np.arange(n_layers)),
            "category": categories,
            "tokens_seen": (("model", "step"), tokens_seen, {"units": "tokens"}),
            "fingerprint": (("model", "step"), fingerprint.astype(str), {"description": "SHA-256 of the weights"}),
            "n_params": ("model", [int(info[m]["n_params"]) for m in models], {"units": "parameters"}),
            "d_model": ("model", [int(info[m]["d_model"]) for m in models]),
            "n_layers": ("model", [int(info[m]["n_layers"]) for m in models]),
            "planted_frequency": (
                "category",
                [float(planted[c]) for c in categories],
                {"description": "relative weight the category was planted with (corpus lexicon)"},
            ),
            "text_frequency": (
                "category",
                [float((text_frequency or {}).get(c, np.nan)) for c in categories],
                {"description": "occurrences per million tokens of the category's words in the SAE-training text"},
            ),
        },
        attrs={
            "config": json.dumps(settings["provenance"], sort_keys=True),
            "n_cells": n_cells,
            "title": "featurebirth cube",
        },
    )
    for name, text in DESCRIPTIONS.items():
        cube[name].attrs["description"] = text
    return cube


SEED_DESCRIPTION = (
    "sae.seeds: each seed's SAE has its own initialisation and its own order of the training tokens within each "
    "buffer chunk; seed 0's SAEs keep the folders of the time before seeds"
)
PROBE_SET_DESCRIPTION = (
    "template: the lexicon words in held-out template contexts, filler-word controls; mined: contexts of the words "
    "mined from the probe-mining part of real text, frequency-matched non-lexicon controls (mining.py)"
)
COUNT_DESCRIPTIONS = {
    "probe_words": "the category's words with at least one context in the probe set (fewer than 2: not scored, NaN)",
    "probe_items": "the category's contexts in the probe set",
}


def probe_counts(scored: list[xr.Dataset], sets: list[str], categories: list[str]) -> dict[str, tuple]:
    """probe_words and probe_items (probe_set, category) as every score file gives them (the same probe files)."""
    first = scored[0].reindex(probe_set=sets, category=categories, fill_value=0)
    return {
        name: (first[name].transpose("probe_set", "category").values, text) for name, text in COUNT_DESCRIPTIONS.items()
    }


def probe_set_view(cube: xr.Dataset, probe_set: str) -> xr.Dataset:
    """The cube of one probe set (no probe_set dimension): what the analysis, tables and figures read."""
    return cube.sel(probe_set=probe_set, drop=True)


def duplicate_steps(fingerprint: np.ndarray) -> np.ndarray:
    """(model, step) flags: another step of the same model has the same weight fingerprint."""
    flags = np.zeros(fingerprint.shape, dtype=bool)
    for m, row in enumerate(fingerprint):
        known = [f for f in row if f]
        flags[m] = [bool(f) and known.count(f) > 1 for f in row]
    return flags


def write_cube(cube: xr.Dataset, path: Path) -> None:
    """netCDF4/HDF5 through h5netcdf, written under a temporary name and renamed when complete."""
    with atomic_path(path) as tmp:
        cube.to_netcdf(tmp, engine="h5netcdf")


def open_cube(path: str | Path) -> xr.Dataset:
    """The cube, loaded into memory (the file is closed again)."""
    with xr.open_dataset(path, engine="h5netcdf") as cube:
        return cube.load()
