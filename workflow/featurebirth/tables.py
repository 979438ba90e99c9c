"""The answers as tables: one TSV per question, each with a header that explains its columns, and a JSON summary.

Everything is cut from the analyses, one per probe set (template; with real text also mined); nothing is recomputed
here. Every table has a `probe_set` column; the summary a section per probe set. Where the analysis has an answer per
SAE seed, a table gives the median over seeds (emergence.over_seeds: the later middle one for an even count, never
ranking after every step) and how many seeds agree with it exactly; the reactivation table has a row per seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import emergence as em
from .analysis import Analysis
from .cube import probe_set_view
from .io import atomic_path, write_json
from .layout import SUMMARY_FILE, in_tables

EMERGENCE_STEP_COLUMNS = {
    "model": "configured model name",
    "layer": "block index (residual stream after the block)",
    "relative_depth": "(layer + 1) / n_layers",
    "category": "planted category",
    "planted_frequency": "relative frequency the category was planted with (its planted_frequency in the lexicon)",
    "emergence_step": "first step from which the category stays represented for `persistence` more steps, median over "
    "SAE seeds; empty if never",
    "seeds_agreeing": "seeds whose emergence step is exactly emergence_step (never agreeing with never)",
    "n_seeds": "SAE seeds trained (sae.seeds)",
    "seed_steps": "each seed's emergence step in sae.seeds order ('-': never)",
    "tokens_seen": "training tokens seen at the emergence step",
    "final_score": "category score at the last step, mean over seeds",
}
EMERGENCE_LAYER_COLUMNS = {
    "model": "configured model name",
    "step": "training step (optimizer steps)",
    "category": "planted category",
    "emergence_layer": "shallowest layer where the category is represented, median over seeds; empty if none",
    "relative_depth": "(emergence_layer + 1) / n_layers",
    "seeds_agreeing": "seeds whose emergence layer is exactly emergence_layer",
}
SCALE_COLUMNS = {
    "step": "training step (optimizer steps)",
    "category": "planted category",
    "depth_bin": "relative-depth bin the represented layer must fall in (all: any layer)",
    "scale_model": "smallest model (by parameters) with a represented layer, in the seed with the median threshold; "
    "empty if none",
    "scale_threshold": "its parameter count; empty if none",
    "seeds_agreeing": "seeds whose smallest represented model is scale_model",
}
SUMMARY_COLUMNS = {
    "model": "configured model name",
    "category": "planted category",
    "planted_frequency": "relative planted frequency",
    "earliest_emergence_step": "earliest emergence step over the model's layers, median over seeds; empty if never",
    "earliest_emergence_layer": "the layer that step belongs to in the median seed (the shallowest on ties); empty if "
    "never",
    "seeds_agreeing": "seeds whose earliest emergence step is exactly earliest_emergence_step",
    "emergence_layer": "shallowest represented layer at the last step, median over seeds; empty if none",
    "scale_model": "smallest model (by parameters) with a represented layer at the last step (median seed); empty if "
    "none",
    "scale_threshold": "its parameter count; empty if none",
    "reactivations": "reactivation events (l1>l2>l3@step, with the seeds that find each of the seeds trained)",
}
PROBE_COLUMNS = {
    "model": "configured model name",
    "category": "planted category",
    "planted_frequency": "relative planted frequency",
    "sae_emergence_step": "earliest emergence step of the SAE score (best feature chosen and scored on every word); "
    "empty if never",
    "heldout_emergence_step": "earliest emergence step of the SAE on held-out words (feature chosen on the other "
    "folds' words); empty if never",
    "probe_emergence_step": "earliest emergence step of the linear probe on held-out words; empty if never",
    "sae_emergence_layer": "the layer of sae_emergence_step (shallowest on ties); empty if never",
    "heldout_emergence_layer": "the layer of heldout_emergence_step; empty if never",
    "probe_emergence_layer": "the layer of probe_emergence_step; empty if never",
    "sae_seeds_agreeing": "seeds whose sae_emergence_step is exactly the median (the probe reads no SAE: one answer)",
    "heldout_seeds_agreeing": "seeds whose heldout_emergence_step is exactly the median",
    "lag": "heldout_emergence_step - probe_emergence_step (optimizer steps): how long the SAE trails the probe on "
    "the same held-out words (negative: it leads); empty if either never emerges",
    "lag_in_sample": "sae_emergence_step - probe_emergence_step; empty if either never emerges",
}

LINEAGE_COLUMNS = {
    "model": "configured model name",
    "layer": "block index (residual stream after the block)",
    "category": "planted category",
    "step": "training step (optimizer steps)",
    "previous_step": "the configured step before it, whose best feature it is compared with",
    "lineage_cosine": "cosine of the best feature's decoder direction with the previous step's best feature's, each "
    "seed against the other seeds' (two initialisations, as in seed_cosine; one seed: against itself), mean over seeds",
    "lineage_correlation": "Pearson correlation of their codes over the probe items, mean over seeds",
    "seed_cosine": "the same cosine between two seeds' best features at this step (mean over pairs; empty with one "
    "seed): what one feature seen twice looks like",
    "seed_correlation": "the same correlation between two seeds' best features at this step",
    "cosine_gap": "seed_cosine - lineage_cosine: at or below 0, the step-to-step feature is as alike as two seeds' "
    "features at this step (carried over, as far as SAE training noise can tell); empty where either is missing",
    "correlation_gap": "seed_correlation - lineage_correlation, read the same way (the codes: the measure the drifting "
    "residual basis does not move)",
}

TITLES = {
    "emergence_steps": "When: emergence step per (model, layer, category)",
    "emergence_layers": "Where: emergence layer per (model, step, category)",
    "scale_thresholds": "Scale: smallest represented model per (step, category), overall and per relative-depth bin",
    "reactivation": "Reactivation: represented, dipped, represented again across layers",
    "summary_table": "Per (model, category): the four answers",
    "probe_baseline": "Probe baseline: emergence of the SAE and of a linear probe per (model, category), and the lag",
    "lineage": "Lineage: is the category's best feature the previous step's (and what the same feature in two seeds "
    "looks like)",
}
INTEGER_COLUMNS = (
    "step",
    "emergence_step",
    "earliest_emergence_step",
    "earliest_emergence_layer",
    "emergence_layer",
    "tokens_seen",
    "scale_threshold",
    "sae_emergence_step",
    "heldout_emergence_step",
    "probe_emergence_step",
    "sae_emergence_layer",
    "heldout_emergence_layer",
    "probe_emergence_layer",
    "lag",
    "lag_in_sample",
    "l1",
    "l2",
    "l3",
    "previous_step",
    "seed",
    "seeds_agreeing",
    "n_seeds",
    "seeds_with_event",
    "sae_seeds_agreeing",
    "heldout_seeds_agreeing",
)


def write_table(frame: pd.DataFrame, columns: dict[str, str], path: Path, title: str) -> None:
    """A TSV whose leading '#' lines explain the table and every column (read back with comment='#')."""
    frame = frame[list(columns)].copy()
    for name in set(INTEGER_COLUMNS) & set(columns):
        frame[name] = frame[name].astype("Int64")
    header = [f"# {title}"] + [f"# {name}: {text}" for name, text in columns.items()]
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write("\n".join(header) + "\n")
        frame.to_csv(handle, sep="\t", index=False, float_format="%.4g")


def seed_values(values: xr.DataArray) -> xr.DataArray:
    """Each entry's values over seeds as one string in seed order, e.g. '16/32/-' ('-': never)."""
    ordered = values.transpose(..., "seed").values
    rows = [
        "/".join("-" if np.isnan(v) else str(int(v)) for v in row) for row in ordered.reshape(-1, ordered.shape[-1])
    ]
    joined = np.array(rows, dtype=object).reshape(ordered.shape[:-1])
    return xr.DataArray(joined, dims=[d for d in values.dims if d != "seed"])


def on_studied_layers(frame: pd.DataFrame, cube: xr.Dataset) -> pd.DataFrame:
    """The rows of a (model, layer, ...) table whose layer is studied for its model."""
    studied = em.studied_layers(cube).to_series()
    return frame[studied.loc[list(zip(frame["model"], frame["layer"]))].values]


def emergence_steps_table(cube: xr.Dataset, analysis: Analysis) -> pd.DataFrame:
    """One row per studied (model, layer, category)."""
    estimate, agreeing = em.over_seeds(analysis.emergence_step)
    frame = (
        xr.Dataset(
            {
                "emergence_step": estimate,
                "seeds_agreeing": agreeing,
                "seed_steps": seed_values(analysis.emergence_step).assign_coords(estimate.coords),
                "final_score": cube["score"].isel(step=-1, drop=True).mean("seed"),
                "relative_depth": em.relative_depth(cube["layer"], cube["n_layers"]),
            }
        )
        .reset_coords(drop=True)
        .to_dataframe()
        .reset_index()
    )
    frame = on_studied_layers(frame, cube)
    frame["planted_frequency"] = frame["category"].map(cube["planted_frequency"].to_series())
    frame["n_seeds"] = cube.sizes["seed"]
    frame["tokens_seen"] = [
        cube["tokens_seen"].sel(model=model, step=int(step)).item() if pd.notna(step) else np.nan
        for model, step in zip(frame["model"], frame["emergence_step"])
    ]
    return frame.reset_index(drop=True)


def emergence_layers_table(cube: xr.Dataset, analysis: Analysis) -> pd.DataFrame:
    """One row per (model, step, category)."""
    layers, agreeing = em.over_seeds(analysis.emergence_layer)
    depth = em.relative_depth(layers, cube["n_layers"])
    frame = xr.Dataset({"emergence_layer": layers, "relative_depth": depth, "seeds_agreeing": agreeing})
    frame = frame.to_dataframe().reset_index()
    return frame.drop(columns=[c for c in frame.columns if c not in EMERGENCE_LAYER_COLUMNS])


def scale_estimate(analysis: Analysis) -> xr.Dataset:
    """The scale threshold and model of the seed with the median threshold, and the seeds naming the same model."""
    index = em.median_seed(analysis.scale_threshold)
    model = analysis.scale_model.isel(seed=index).reset_coords(drop=True)
    return xr.Dataset(
        {
            "scale_threshold": analysis.scale_threshold.isel(seed=index).reset_coords(drop=True),
            "scale_model": model,
            "seeds_agreeing": (analysis.scale_model == model).sum("seed"),
        }
    )


def scale_table(analysis: Analysis) -> pd.DataFrame:
    """One row per (depth bin, step, category), 'all' being any layer."""
    return scale_estimate(analysis).to_dataframe(dim_order=["depth_bin", "step", "category"]).reset_index()


def earliest_estimate(steps: xr.DataArray, layers: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """The earliest step over seeds (median), its layer in the same seed, and the seeds agreeing on the step."""
    index = em.median_seed(steps)
    estimate = steps.isel(seed=index).reset_coords(drop=True)
    return estimate, layers.isel(seed=index).reset_coords(drop=True), em.seeds_agreeing(steps, estimate)


def probe_table(cube: xr.Dataset, analysis: Analysis) -> pd.DataFrame:
    """One row per (model, category): earliest emergence of the SAE, the SAE on held-out words and the probe, each the
    median over seeds."""
    steps = analysis.control_earliest_step
    layers = analysis.control_earliest_layer
    sae = earliest_estimate(analysis.earliest_step, analysis.earliest_layer)
    heldout, probe = (earliest_estimate(steps.sel(readout=r), layers.sel(readout=r)) for r in ("heldout", "probe"))
    columns = {
        "sae_emergence_step": sae[0],
        "heldout_emergence_step": heldout[0],
        "probe_emergence_step": probe[0],
        "sae_emergence_layer": sae[1],
        "heldout_emergence_layer": heldout[1],
        "probe_emergence_layer": probe[1],
        "sae_seeds_agreeing": sae[2],
        "heldout_seeds_agreeing": heldout[2],
    }
    frame = xr.Dataset(columns).reset_coords(drop=True).to_dataframe().reset_index()
    frame["planted_frequency"] = frame["category"].map(cube["planted_frequency"].to_series())
    frame["lag"] = frame["heldout_emergence_step"] - frame["probe_emergence_step"]
    frame["lag_in_sample"] = frame["sae_emergence_step"] - frame["probe_emergence_step"]
    return frame


def event_labels(events: pd.DataFrame) -> str:
    """Distinct events as 'l1>l2>l3@step', with 'k/n seeds' when more than one seed was trained."""
    distinct = events.drop_duplicates(list(em.EVENT_KEY))
    return ", ".join(
        f"{r.l1}>{r.l2}>{r.l3}@{r.step}" + (f" ({r.seeds_with_event}/{r.n_seeds} seeds)" if r.n_seeds > 1 else "")
        for r in distinct.itertuples()
    )


def summary_frame(cube: xr.Dataset, analysis: Analysis) -> tuple[pd.DataFrame, dict]:
    """Per (model, category): the four answers in one row; plus the JSON summary."""
    earliest, earliest_layer, agreeing = earliest_estimate(analysis.earliest_step, analysis.earliest_layer)
    layers = em.over_seeds(analysis.emergence_layer.isel(step=-1))[0]
    scale = scale_estimate(analysis).sel(depth_bin="all").isel(step=-1)
    events = analysis.reactivation
    rows = []
    for model in cube["model"].values:
        for category in cube["category"].values:
            here = {"model": model, "category": category}
            mine = events[(events["model"] == model) & (events["category"] == category)]
            rows.append(
                {
                    **here,
                    "planted_frequency": float(cube["planted_frequency"].sel(category=category)),
                    "earliest_emergence_step": _number(earliest.sel(here)),
                    "earliest_emergence_layer": _number(earliest_layer.sel(here)),
                    "seeds_agreeing": int(agreeing.sel(here)),
                    "emergence_layer": _number(layers.sel(here)),
                    "scale_model": scale["scale_model"].sel(category=category).item() or None,
                    "scale_threshold": _number(scale["scale_threshold"].sel(category=category)),
                    "reactivations": event_labels(mine),
                }
            )
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    flags = analysis.represented
    summary = {
        "seeds": [int(seed) for seed in cube["seed"].values],
        "represented_cells_per_seed": [int(n) for n in flags.sum([d for d in flags.dims if d != "seed"]).values],
        "represented_cells_every_seed": int(flags.all("seed").sum()),
        "represented_at_step0": int(flags.sel(step=0).any("seed").sum()) if 0 in flags["step"].values else None,
        "reactivation_events": len(events.drop_duplicates(list(em.EVENT_KEY))),
        "spearman_frequency_vs_emergence_step": analysis.spearman,
        "spearman_frequency_vs_emergence_step_every_later_step": analysis.spearman_every_later_step,
        "findings_in_every_seed": every_seed_findings(cube, analysis),
        "not_scored": not_scored(cube),
        "categories": frame.replace({np.nan: None}).to_dict(orient="records"),
    }
    return frame, summary


def every_seed_findings(cube: xr.Dataset, analysis: Analysis) -> dict[str, dict[str, int]]:
    """How many findings hold for every seed: emergence steps (per model, layer, category; and the earliest per model,
    category) that every seed puts at the same step, among those any seed finds; reactivation events every seed finds."""
    n_seeds, studied = cube.sizes["seed"], em.studied_layers(cube)

    def agreement(steps: xr.DataArray) -> dict[str, int]:
        found = steps.notnull().any("seed")
        same = em.over_seeds(steps)[1] == n_seeds
        return {"found": int(found.sum()), "same_step_in_every_seed": int((found & same).sum())}

    distinct = analysis.reactivation.drop_duplicates(list(em.EVENT_KEY))
    return {
        "emergence_steps": agreement(analysis.emergence_step.where(studied)),
        "earliest_emergence_steps": agreement(analysis.earliest_step),
        "reactivation_events": {
            "found": len(distinct),
            "in_every_seed": int((distinct["seeds_with_event"] == n_seeds).sum()),
        },
    }


def lineage_table(cube: xr.Dataset) -> pd.DataFrame:
    """One row per studied (model, layer, category) and step after the first: the best feature against the previous
    step's, beside the same comparison across seeds."""
    lineage = xr.Dataset(
        {
            "lineage_cosine": cube["lineage_cosine"].mean("seed"),
            "lineage_correlation": cube["lineage_correlation"].mean("seed"),
            "seed_cosine": cube["seed_cosine"],
            "seed_correlation": cube["seed_correlation"],
        }
    ).isel(step=slice(1, None))
    lineage["previous_step"] = ("step", cube["step"].values[:-1])
    frame = lineage.reset_coords(drop=True).to_dataframe(dim_order=["model", "layer", "category", "step"])
    frame = frame.reset_index()
    frame = on_studied_layers(frame, cube)
    for measure in ("cosine", "correlation"):
        frame[f"{measure}_gap"] = frame[f"seed_{measure}"] - frame[f"lineage_{measure}"]
    return frame.reset_index(drop=True)


def not_scored(cube: xr.Dataset) -> dict[str, int]:
    """The categories of a one-probe-set cube with fewer than two words with contexts (unscored), with their count."""
    if "probe_words" not in cube.coords:
        return {}
    words = cube["probe_words"].to_series()
    return {str(category): int(n) for category, n in words[words < 2].items()}


def _number(value: xr.DataArray) -> int | None:
    """A whole number for the tables and JSON, None where missing (NaN)."""
    value = float(value)
    return None if np.isnan(value) else int(value)


PROBE_SET_COLUMN = {
    "probe_set": "template: held-out template contexts; mined: contexts mined from the probe-mining part of real text "
    "(each probe set analysed on its own)"
}


def probe_set_tables(cube: xr.Dataset, analysis: Analysis) -> tuple[dict[str, pd.DataFrame], dict]:
    """Every table of one probe set's analysis (`cube` its cube.probe_set_view), by name, and its JSON summary."""
    frame, summary = summary_frame(cube, analysis)
    tables = {
        "emergence_steps": emergence_steps_table(cube, analysis),
        "emergence_layers": emergence_layers_table(cube, analysis),
        "scale_thresholds": scale_table(analysis),
        "reactivation": analysis.reactivation,
        "summary_table": frame,
        "probe_baseline": probe_table(cube, analysis),
        "lineage": lineage_table(cube),
    }
    return tables, summary


TABLE_COLUMNS = {
    "emergence_steps": EMERGENCE_STEP_COLUMNS,
    "emergence_layers": EMERGENCE_LAYER_COLUMNS,
    "scale_thresholds": SCALE_COLUMNS,
    "reactivation": em.REACTIVATION_COLUMNS,
    "summary_table": SUMMARY_COLUMNS,
    "probe_baseline": PROBE_COLUMNS,
    "lineage": LINEAGE_COLUMNS,
}


def write_tables(cube: xr.Dataset, analyses: dict[str, Analysis], folder: str | Path) -> dict:
    """Every table (a row per probe set and ...) and the JSON summary of each probe set's analysis into `folder`;
    return the summary."""
    per_set = {p: probe_set_tables(probe_set_view(cube, p), analysis) for p, analysis in analyses.items()}
    for name, columns in TABLE_COLUMNS.items():
        frames = [tables[name].assign(probe_set=p) for p, (tables, _) in per_set.items()]
        write_table(
            pd.concat(frames, ignore_index=True),
            PROBE_SET_COLUMN | columns,
            Path(in_tables(folder, name)),
            TITLES[name],
        )
    first = next(iter(analyses.values()))
    summary = {
        "settings": first.settings,
        "final_step": int(cube["step"][-1]),
        "duplicate_checkpoints": first.duplicates,
        "probe_sets": {p: set_summary for p, (_, set_summary) in per_set.items()},
    }
    write_json(summary, in_tables(folder, SUMMARY_FILE))
    return summary
