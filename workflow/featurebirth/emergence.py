"""When, where and at what scale each category is born, and where it reactivates: from the cube alone.

A category is *represented* in a cell when its score clears `tau`, beats its permutation null
by `margin`, and the cell's SAE is healthy (variance explained >= `min_variance_explained` and, where
set, the downstream floors `min_ce_recovered` and `max_ce_increase`: see `healthy`).
The held-out controls (score.heldout_scores) are judged by the same rule on their own scores and nulls: the SAE
on held-out words needs a healthy SAE as well, the linear probe reads no SAE (`control_represented`).
These are the kernels; `analysis.analyse` combines them once per cube for the tables, figures and summary.
"""

from __future__ import annotations

import math
from itertools import pairwise, product

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import spearmanr


class DuplicateCheckpointError(ValueError):
    """Two steps of one model have identical weights; the analysis refuses them unless allowed."""


def duplicate_checkpoints(cube: xr.Dataset) -> list[dict]:
    """Every (model, step) whose weights equal another step's of the same model."""
    if "duplicate_checkpoint" not in cube:
        return []
    flagged = cube["duplicate_checkpoint"].to_series()
    return [
        {"model": model, "step": int(step), "fingerprint": str(cube["fingerprint"].sel(model=model, step=step).item())}
        for (model, step), is_duplicate in flagged.items()
        if is_duplicate
    ]


CONTROLS = ("heldout", "probe")  # the held-out readouts: cube variables {readout}_score and {readout}_null


def selective(score: xr.DataArray, null: xr.DataArray, settings: dict) -> xr.DataArray:
    """score >= tau and score - null >= margin (False where either is NaN)."""
    return (score >= settings["tau"]) & (score - null >= settings["margin"])


def represented(cube: xr.Dataset, settings: dict) -> xr.DataArray:
    """Boolean (model, step, layer, category); cells that do not exist are False."""
    return selective(cube["score"], cube["null"], settings) & healthy(cube, settings)


def control_represented(cube: xr.Dataset, settings: dict) -> xr.DataArray:
    """Boolean (readout, model, step, layer, category) of the held-out controls: `selective` on each one's score
    and null; the SAE's (heldout) also needs a healthy SAE, the probe's reads no SAE."""
    missing = [f"{r}_{kind}" for r in CONTROLS for kind in ("score", "null") if f"{r}_{kind}" not in cube]
    if missing:
        raise ValueError(f"the cube has no {missing} (scored before the held-out controls): rerun the score jobs")
    sae = selective(cube["heldout_score"], cube["heldout_null"], settings) & healthy(cube, settings)
    probe = selective(cube["probe_score"], cube["probe_null"], settings)  # no SAE: the same for every seed
    return xr.concat(xr.broadcast(sae, probe), "readout").assign_coords(readout=list(CONTROLS))


def healthy(cube: xr.Dataset, settings: dict) -> xr.DataArray:
    """Boolean (model, step, layer): the cell's SAE is good enough to read features from.

    Variance explained >= `min_variance_explained`; where set (not None), ce_loss_recovered >= `min_ce_recovered`
    and ce_loss_increase <= `max_ce_increase`. A cell whose ce_loss_recovered is NaN (zero ablation costs less
    than evaluation.ce_floor, as at step 0: the ratio means nothing there) is not excluded by
    `min_ce_recovered`; `max_ce_increase`, on the raw loss increase, judges every cell, those included.
    """
    ok = cube["variance_explained"] >= settings["min_variance_explained"]
    limits = {"min_ce_recovered": "ce_loss_recovered", "max_ce_increase": "ce_loss_increase"}
    for setting, name in limits.items():
        if settings.get(setting) is not None and name not in cube:
            raise ValueError(
                f"analysis.{setting} is set but the cube has no {name} (scored before downstream quality was "
                "measured): rescore, or unset it"
            )
    if settings.get("min_ce_recovered") is not None:
        recovered = cube["ce_loss_recovered"]
        ok &= (recovered >= settings["min_ce_recovered"]) | recovered.isnull()
    if settings.get("max_ce_increase") is not None:
        ok &= cube["ce_loss_increase"] <= settings["max_ce_increase"]
    return ok


def refuse_duplicates(duplicates: list[dict], settings: dict) -> None:
    """Raise DuplicateCheckpointError for duplicate checkpoints unless `allow_duplicate_checkpoints` is set."""
    if duplicates and not settings["allow_duplicate_checkpoints"]:
        listed = ", ".join(f"{d['model']} step {d['step']} ({d['fingerprint']})" for d in duplicates)
        raise DuplicateCheckpointError(
            f"checkpoints with identical weights: {listed}; a revision is probably mislabelled. Fix the steps "
            "or set analysis.allow_duplicate_checkpoints: true to analyse them anyway"
        )


def studied(cube: xr.Dataset) -> xr.DataArray:
    """Boolean (model, step, layer): the cell exists in the cube."""
    return cube["score"].notnull().any("category")


def studied_layers(cube: xr.Dataset) -> xr.DataArray:
    """Boolean (model, layer): the layer is studied for the model (scored at some step, in some seed)."""
    return studied(cube).any(["step", "seed"])


def relative_depth(layer: xr.DataArray, n_layers: xr.DataArray) -> xr.DataArray:
    """(layer + 1) / n_layers: the share of the model's blocks applied, in (0, 1]; NaN where `layer` is NaN."""
    return (layer + 1) / n_layers


def first_persistent(flags: np.ndarray, persistence: int) -> np.ndarray:
    """Index along the last axis of the first True that stays True for `persistence` more entries
    (or to the end); -1 where there is none."""
    stays = flags.copy()
    n = flags.shape[-1]
    for k in range(1, persistence + 1):
        if k < n:
            stays[..., : n - k] &= flags[..., k:]
    first = stays.argmax(axis=-1)
    return np.where(stays.any(axis=-1), first, -1)


def _take(values: np.ndarray, index: xr.DataArray) -> xr.DataArray:
    """values[index] as floats, NaN where the index is -1."""
    return xr.where(index >= 0, xr.DataArray(np.asarray(values, dtype=float))[index.clip(min=0)], np.nan)


def emergence_step(flags: xr.DataArray, persistence: int) -> xr.DataArray:
    """First step from which the category stays represented (model, layer, category); NaN if never."""
    index = xr.apply_ufunc(
        first_persistent,
        flags.astype(bool),
        kwargs={"persistence": persistence},
        input_core_dims=[["step"]],
    )
    return _take(flags["step"].values, index).rename("emergence_step")


def earliest_emergence(steps: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Earliest emergence step over layers (model, category) and its layer (the shallowest on ties); NaN if never."""
    first = xr.where(steps.notnull().any("layer"), steps.fillna(np.inf).argmin("layer"), -1)
    return steps.min("layer").rename("earliest_step"), _take(steps["layer"].values, first).rename("earliest_layer")


def emergence_layer(flags: xr.DataArray) -> xr.DataArray:
    """Shallowest represented layer (model, step, category); NaN where no layer is represented."""
    any_layer = flags.any("layer")
    return xr.where(any_layer, flags.argmax("layer"), np.nan).rename("emergence_layer")


def smallest_present(present: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Index along the last axis of the smallest present entry by `sizes`, ties to the earlier one; -1 where none."""
    order = np.argsort(sizes, kind="stable")
    ranked = present[..., order]
    return np.where(ranked.any(axis=-1), order[ranked.argmax(axis=-1)], -1)


def smallest_model(flags: xr.DataArray, n_params: xr.DataArray) -> xr.DataArray:
    """Position in the model order of the smallest model with a represented layer (step, category[, ...]); -1 if none.

    Models of equal size go to the one listed first, so a threshold always names the model it was found in.
    """
    present = flags.any("layer")
    sizes = n_params.sel(model=present["model"]).reset_coords(drop=True)
    return xr.apply_ufunc(smallest_present, present, sizes, input_core_dims=[["model"], ["model"]]).rename(
        "smallest_model"
    )


def threshold_params(smallest: xr.DataArray, n_params: xr.DataArray) -> xr.DataArray:
    """Parameter count of the model each `smallest_model` index names; NaN where it is -1."""
    return _take(n_params.values, smallest).rename("scale_threshold")


def threshold_names(smallest: xr.DataArray, models: xr.DataArray) -> xr.DataArray:
    """Name of the model each `smallest_model` index names; '' where it is -1."""
    names = np.append(models.values.astype(object), "")
    return xr.DataArray(names)[smallest].astype(object).rename("scale_model")


def depth_bin_labels(n_bins: int) -> list[str]:
    """Labels of equal relative-depth bins, e.g. '0-33%', '33-67%', '67-100%'."""
    edges = np.linspace(0, 100, n_bins + 1)
    return [f"{a:.0f}-{b:.0f}%" for a, b in pairwise(edges)]


def depth_binned(cube: xr.Dataset, flags: xr.DataArray, n_bins: int) -> xr.DataArray:
    """Flags with a leading depth_bin dimension: 'all' (every layer), then each relative-depth bin (its layers only)."""
    bins = np.ceil(relative_depth(cube["layer"], cube["n_layers"]) * n_bins).clip(1, n_bins) - 1
    per_bin = [flags.where(bins == b, False) for b in range(n_bins)]
    return xr.concat([flags, *per_bin], "depth_bin").assign_coords(depth_bin=["all", *depth_bin_labels(n_bins)])


def dip_events(scores: np.ndarray, flags: np.ndarray, tau_low: float) -> list[tuple[int, int, int]]:
    """(l1, l2, l3) positions: represented at l1, a dip to <= tau_low whose lowest point is l2, represented at l3.

    l1 is the last represented position before the dip and l3 the first after it; positions
    that are neither represented nor low neither start nor end a dip.
    """
    events, last_represented, dip = [], None, None
    for position, (score, is_represented) in enumerate(zip(scores, flags)):
        if is_represented:
            if last_represented is not None and dip is not None:
                events.append((last_represented, dip, position))
            last_represented, dip = position, None
        elif last_represented is not None and score <= tau_low and (dip is None or score < scores[dip]):
            dip = position
    return events


def reactivation_events(cube: xr.Dataset, flags: xr.DataArray, settings: dict) -> pd.DataFrame:
    """Every reactivation event (seed, model, step, category, l1, l2, l3) with the feature-level verdict, and in how
    many seeds the same event (model, step, category, l1, l2, l3) is found."""
    rows = []
    exists = studied(cube)
    for seed, model, step, category in product(*(cube[d].values for d in ("seed", "model", "step", "category"))):
        cell = {"seed": seed, "model": model, "step": step, "category": category}
        layers = cube["layer"].values[exists.sel(seed=seed, model=model, step=step).values]
        scores = cube["score"].sel(cell).sel(layer=layers).values
        found = dip_events(scores, flags.sel(cell).sel(layer=layers).values, settings["tau_low"])
        for i1, i2, i3 in found:
            l1, l2, l3 = (int(layers[i]) for i in (i1, i2, i3))
            cosine = cube["direction_cosine"].sel(cell)
            back = float(cosine.sel(layer=l3, other_layer=l1))
            rows.append(
                {
                    **cell,
                    "seed": int(seed),
                    "step": int(step),
                    "l1": l1,
                    "l2": l2,
                    "l3": l3,
                    "score_l1": scores[i1],
                    "score_l2": scores[i2],
                    "score_l3": scores[i3],
                    "cosine_l3_l1": back,
                    "cosine_l2_l1": float(cosine.sel(layer=l2, other_layer=l1)),
                    "feature_verdict": "returns" if back >= settings["return_cosine"] else "new",
                }
            )
    events = pd.DataFrame(rows, columns=list(REACTIVATION_COLUMNS))
    events["seeds_with_event"] = events.groupby(list(EVENT_KEY))["seed"].transform("size")
    events["n_seeds"] = cube.sizes["seed"]
    return events.astype(REACTIVATION_DTYPES)


EVENT_KEY = ("model", "step", "category", "l1", "l2", "l3")  # the same event, whichever seed finds it
REACTIVATION_COLUMNS = {
    "seed": "SAE seed whose SAEs show the event (one row per seed that finds it)",
    "model": "configured model name",
    "step": "training step (optimizer steps)",
    "category": "planted category",
    "l1": "layer where the category is represented before the dip",
    "l2": "lowest-scoring layer of the dip (score <= tau_low)",
    "l3": "first layer after the dip where the category is represented again",
    "score_l1": "category score at l1",
    "score_l2": "category score at l2",
    "score_l3": "category score at l3",
    "cosine_l3_l1": "cosine of the best features' decoder directions at l3 and l1",
    "cosine_l2_l1": "cosine of the best features' decoder directions at l2 and l1",
    "feature_verdict": "returns: the l3 feature points back to the l1 feature (cosine >= return_cosine); new: it does not",
    "seeds_with_event": "how many seeds find this event (the same model, step, category, l1, l2 and l3)",
    "n_seeds": "how many seeds were trained (sae.seeds)",
}

REACTIVATION_DTYPES = {
    **dict.fromkeys(REACTIVATION_COLUMNS, "float64"),
    **dict.fromkeys(("model", "category", "feature_verdict"), object),
    **dict.fromkeys(("seed", "step", "l1", "l2", "l3", "seeds_with_event", "n_seeds"), "int64"),
}


def median_seed(values: xr.DataArray) -> xr.DataArray:
    """Per entry, the position along `seed` of the median value over seeds: the later middle one for an even count,
    NaN (never) ranking after every value, ties to the earlier seed."""

    def middle(array: np.ndarray) -> np.ndarray:
        order = np.argsort(np.where(np.isnan(array), np.inf, array), axis=-1, kind="stable")
        return order[..., array.shape[-1] // 2]

    return xr.apply_ufunc(middle, values, input_core_dims=[["seed"]])


def over_seeds(values: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """The estimate over seeds (the value at median_seed) and how many seeds agree with it exactly (NaN with NaN)."""
    estimate = values.isel(seed=median_seed(values)).reset_coords(drop=True)
    return estimate, seeds_agreeing(values, estimate)


def seeds_agreeing(values: xr.DataArray, estimate: xr.DataArray) -> xr.DataArray:
    """How many seeds' values equal the estimate exactly (NaN agreeing with NaN)."""
    return ((values == estimate) | (values.isnull() & estimate.isnull())).sum("seed")


def spearman_by_model(steps: xr.DataArray, frequency: xr.DataArray) -> dict[str, dict]:
    """Spearman correlation of planted frequency with emergence step (model, category) per model; never-emerged ranks
    last, ties share their mean rank."""
    out = {}
    for model in steps["model"].values:
        emerged = steps.sel(model=model).fillna(np.inf).values
        if len(set(emerged)) < 2 or len(set(frequency.values)) < 2:
            out[str(model)] = {"rho": None, "p_value": None, "n_categories": len(emerged)}
            continue
        rho, p_value = spearmanr(frequency.values, emerged)
        out[str(model)] = {"rho": _finite(rho), "p_value": _finite(p_value), "n_categories": len(emerged)}
    return out


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)
