"""The answers as tables: one TSV per question, each with a header that explains its columns, and a JSON summary.

Everything is cut from the analyses, one per probe set (template; with real text also mined); nothing is recomputed
here. Every table has a `probe_set` column; the summary a section per probe set.
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
    "emergence_step": "first step from which the category stays represented for `persistence` more steps; empty if never",
    "tokens_seen": "training tokens seen at the emergence step",
    "final_score": "category score at the last step",
}
EMERGENCE_LAYER_COLUMNS = {
    "model": "configured model name",
    "step": "training step (optimizer steps)",
    "category": "planted category",
    "emergence_layer": "shallowest layer where the category is represented; empty if none",
    "relative_depth": "(emergence_layer + 1) / n_layers",
}
SCALE_COLUMNS = {
    "step": "training step (optimizer steps)",
    "category": "planted category",
    "depth_bin": "relative-depth bin the represented layer must fall in (all: any layer)",
    "scale_model": "smallest model (by parameters) with a represented layer; empty if none",
    "scale_threshold": "its parameter count; empty if none",
}
SUMMARY_COLUMNS = {
    "model": "configured model name",
    "category": "planted category",
    "planted_frequency": "relative planted frequency",
    "earliest_emergence_step": "earliest emergence step over the model's layers; empty if never",
    "earliest_emergence_layer": "the layer that step belongs to (the shallowest on ties); empty if never",
    "emergence_layer": "shallowest represented layer at the last step; empty if none",
    "scale_model": "smallest model (by parameters) with a represented layer at the last step; empty if none",
    "scale_threshold": "its parameter count; empty if none",
    "reactivations": "reactivation events (l1>l2>l3@step)",
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
    "lag": "heldout_emergence_step - probe_emergence_step (optimizer steps): how long the SAE trails the probe on "
    "the same held-out words (negative: it leads); empty if either never emerges",
    "lag_in_sample": "sae_emergence_step - probe_emergence_step; empty if either never emerges",
}


TITLES = {
    "emergence_steps": "When: emergence step per (model, layer, category)",
    "emergence_layers": "Where: emergence layer per (model, step, category)",
    "scale_thresholds": "Scale: smallest represented model per (step, category), overall and per relative-depth bin",
    "reactivation": "Reactivation: represented, dipped, represented again across layers",
    "summary_table": "Per (model, category): the four answers",
    "probe_baseline": "Probe baseline: emergence of the SAE and of a linear probe per (model, category), and the lag",
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


def emergence_steps_table(cube: xr.Dataset, analysis: Analysis) -> pd.DataFrame:
    """One row per studied (model, layer, category)."""
    frame = (
        xr.Dataset(
            {
                "emergence_step": analysis.emergence_step,
                "final_score": cube["score"].isel(step=-1, drop=True),
                "relative_depth": em.relative_depth(cube["layer"], cube["n_layers"]),
            }
        )
        .reset_coords(drop=True)
        .to_dataframe()
        .reset_index()
    )
    exists = em.studied(cube).any("step").to_series()
    frame = frame[exists.loc[list(zip(frame["model"], frame["layer"]))].values]
    frame["planted_frequency"] = frame["category"].map(cube["planted_frequency"].to_series())
    frame["tokens_seen"] = [
        cube["tokens_seen"].sel(model=model, step=int(step)).item() if pd.notna(step) else np.nan
        for model, step in zip(frame["model"], frame["emergence_step"])
    ]
    return frame.reset_index(drop=True)


def emergence_layers_table(cube: xr.Dataset, analysis: Analysis) -> pd.DataFrame:
    """One row per (model, step, category)."""
    layers = analysis.emergence_layer
    depth = em.relative_depth(layers, cube["n_layers"])
    frame = xr.Dataset({"emergence_layer": layers, "relative_depth": depth}).to_dataframe().reset_index()
    return frame.drop(columns=[c for c in frame.columns if c not in EMERGENCE_LAYER_COLUMNS])


def scale_table(analysis: Analysis) -> pd.DataFrame:
    """One row per (depth bin, step, category), 'all' being any layer."""
    thresholds = xr.Dataset({"scale_threshold": analysis.scale_threshold, "scale_model": analysis.scale_model})
    return thresholds.to_dataframe(dim_order=["depth_bin", "step", "category"]).reset_index()


def probe_table(cube: xr.Dataset, analysis: Analysis) -> pd.DataFrame:
    """One row per (model, category): earliest emergence of the SAE, the SAE on held-out words and the probe."""
    steps = analysis.control_earliest_step
    layers = analysis.control_earliest_layer
    columns = {
        "sae_emergence_step": analysis.earliest_step,
        "heldout_emergence_step": steps.sel(readout="heldout", drop=True),
        "probe_emergence_step": steps.sel(readout="probe", drop=True),
        "sae_emergence_layer": analysis.earliest_layer,
        "heldout_emergence_layer": layers.sel(readout="heldout", drop=True),
        "probe_emergence_layer": layers.sel(readout="probe", drop=True),
    }
    frame = xr.Dataset(columns).to_dataframe().reset_index()
    frame["planted_frequency"] = frame["category"].map(cube["planted_frequency"].to_series())
    frame["lag"] = frame["heldout_emergence_step"] - frame["probe_emergence_step"]
    frame["lag_in_sample"] = frame["sae_emergence_step"] - frame["probe_emergence_step"]
    return frame


def summary_frame(cube: xr.Dataset, analysis: Analysis) -> tuple[pd.DataFrame, dict]:
    """Per (model, category): the four answers in one row; plus the JSON summary."""
    layers = analysis.emergence_layer.isel(step=-1)
    scale_model = analysis.scale_model.sel(depth_bin="all").isel(step=-1)
    scale_threshold = analysis.scale_threshold.sel(depth_bin="all").isel(step=-1)
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
                    "earliest_emergence_step": _number(analysis.earliest_step.sel(here)),
                    "earliest_emergence_layer": _number(analysis.earliest_layer.sel(here)),
                    "emergence_layer": _number(layers.sel(here)),
                    "scale_model": scale_model.sel(category=category).item() or None,
                    "scale_threshold": _number(scale_threshold.sel(category=category)),
                    "reactivations": ", ".join(f"{r.l1}>{r.l2}>{r.l3}@{r.step}" for r in mine.itertuples()),
                }
            )
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    flags = analysis.represented
    summary = {
        "represented_cells": int(flags.sum()),
        "represented_at_step0": int(flags.sel(step=0).sum()) if 0 in flags["step"].values else None,
        "reactivation_events": len(events),
        "spearman_frequency_vs_emergence_step": analysis.spearman,
        "not_scored": not_scored(cube),
        "categories": frame.replace({np.nan: None}).to_dict(orient="records"),
    }
    return frame, summary


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
    }
    return tables, summary


TABLE_COLUMNS = {
    "emergence_steps": EMERGENCE_STEP_COLUMNS,
    "emergence_layers": EMERGENCE_LAYER_COLUMNS,
    "scale_thresholds": SCALE_COLUMNS,
    "reactivation": em.REACTIVATION_COLUMNS,
    "summary_table": SUMMARY_COLUMNS,
    "probe_baseline": PROBE_COLUMNS,
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
