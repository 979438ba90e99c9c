"""The answers as tables: one TSV per question, each with a header that explains its columns, and a JSON summary."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from . import emergence as em
from .io import atomic_path, write_json

EMERGENCE_STEP_COLUMNS = {
    "model": "configured model name",
    "layer": "block index (residual stream after the block)",
    "relative_depth": "(layer + 1) / n_layers",
    "category": "planted category",
    "planted_frequency": "relative frequency the category was planted with (NaN for corpora without one)",
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
    "threshold_model": "smallest model (by parameters) with a represented layer; empty if none",
    "threshold_params": "its parameter count",
}
SUMMARY_COLUMNS = {
    "model": "configured model name",
    "category": "planted category",
    "planted_frequency": "relative planted frequency",
    "emergence_step": "earliest emergence step over the model's layers; empty if never",
    "emergence_step_layer": "the layer that emergence step belongs to",
    "emergence_layer": "shallowest represented layer at the last step",
    "scale_threshold": "smallest represented model at the last step",
    "reactivations": "reactivation events (l1>l2>l3@step)",
}


INTEGER_COLUMNS = ("step", "emergence_step", "emergence_step_layer", "emergence_layer", "tokens_seen",
                   "threshold_params", "l1", "l2", "l3")


def write_table(frame: pd.DataFrame, columns: dict[str, str], path: Path, title: str) -> None:
    """A TSV whose leading '#' lines explain the table and every column (read back with comment='#')."""
    frame = frame[list(columns)].copy()
    for name in set(INTEGER_COLUMNS) & set(columns):
        frame[name] = frame[name].astype("Int64")
    header = [f"# {title}"] + [f"# {name}: {text}" for name, text in columns.items()]
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write("\n".join(header) + "\n")
            frame.to_csv(handle, sep="\t", index=False, float_format="%.4g")


def emergence_steps_table(cube: xr.Dataset, steps: xr.DataArray) -> pd.DataFrame:
    """One row per studied (model, layer, category)."""
    frame = xr.Dataset({
        "emergence_step": steps, "final_score": cube["score"].isel(step=-1, drop=True),
        "relative_depth": em.relative_depth(cube),
    }).reset_coords(drop=True).to_dataframe().reset_index()
    exists = em.studied(cube).any("step").to_series()
    frame = frame[exists.loc[list(zip(frame["model"], frame["layer"]))].values]
    frame["planted_frequency"] = frame["category"].map(cube["planted_frequency"].to_series())
    frame["tokens_seen"] = [
        cube["tokens_seen"].sel(model=model, step=int(step)).item() if step == step else np.nan
        for model, step in zip(frame["model"], frame["emergence_step"])
    ]
    return frame.reset_index(drop=True)


def emergence_layers_table(cube: xr.Dataset, layers: xr.DataArray) -> pd.DataFrame:
    """One row per (model, step, category)."""
    depth = (layers + 1) / cube["n_layers"]
    frame = xr.Dataset({"emergence_layer": layers, "relative_depth": depth}).to_dataframe().reset_index()
    return frame.drop(columns=[c for c in frame.columns if c not in EMERGENCE_LAYER_COLUMNS])


def scale_table(cube: xr.Dataset, flags: xr.DataArray, n_bins: int) -> pd.DataFrame:
    """One row per (step, category, depth bin), 'all' being any layer."""
    overall = em.scale_threshold(flags, cube["n_params"]).expand_dims(depth_bin=["all"])
    by_depth = em.scale_threshold_by_depth(cube, flags, n_bins)
    thresholds = xr.concat([overall, by_depth], "depth_bin").rename("threshold_params")
    frame = thresholds.to_dataframe().reset_index()
    frame["threshold_model"] = frame["threshold_params"].map(_model_by_size(cube))
    return frame


class Analysis(NamedTuple):
    """What every table is cut from: represented cells, emergence steps and reactivation events."""

    flags: xr.DataArray
    steps: xr.DataArray
    events: pd.DataFrame


def analyse(cube: xr.Dataset, settings: dict) -> Analysis:
    """Represented cells, emergence steps and reactivation events of the cube, computed once."""
    flags = em.represented(cube, settings)
    return Analysis(flags, em.emergence_step(flags, settings["persistence"]), em.reactivation_events(cube, flags, settings))


def _model_by_size(cube: xr.Dataset) -> dict[float, str]:
    """Model name by parameter count, to name a scale threshold."""
    return dict(zip(cube["n_params"].values.astype(float), cube["model"].values))


def summary_frame(cube: xr.Dataset, settings: dict, analysis: Analysis | None = None) -> tuple[pd.DataFrame, dict]:
    """Per (model, category): the four answers in one row; plus the JSON summary."""
    flags, steps, events = analysis or analyse(cube, settings)
    earliest = steps.min("layer")
    earliest_layer = xr.where(steps.notnull().any("layer"), steps.fillna(np.inf).argmin("layer"), np.nan)
    layers = em.emergence_layer(flags).isel(step=-1)
    scale = em.scale_threshold(flags, cube["n_params"]).isel(step=-1)
    names = _model_by_size(cube)
    rows = []
    for model in cube["model"].values:
        for category in cube["category"].values:
            mine = events[(events["model"] == model) & (events["category"] == category)]
            rows.append({
                "model": model, "category": category,
                "planted_frequency": float(cube["planted_frequency"].sel(category=category)),
                "emergence_step": _number(earliest.sel(model=model, category=category)),
                "emergence_step_layer": _number(earliest_layer.sel(model=model, category=category)),
                "emergence_layer": _number(layers.sel(model=model, category=category)),
                "scale_threshold": names.get(float(scale.sel(category=category)), None),
                "reactivations": ", ".join(f"{r.l1}>{r.l2}>{r.l3}@{r.step}" for r in mine.itertuples()),
            })
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    summary = {
        "settings": settings,
        "final_step": int(cube["step"][-1]),
        "represented_cells": int(flags.sum()),
        "represented_at_step0": int(flags.sel(step=0).sum()) if 0 in cube["step"].values else None,
        "reactivation_events": int(len(events)),
        "duplicate_checkpoints": em.duplicate_checkpoints(cube),
        "spearman_frequency_vs_emergence_step": em.spearman_by_model(earliest, cube["planted_frequency"]),
        "categories": frame.replace({np.nan: None}).to_dict(orient="records"),
    }
    return frame, summary


def _number(value: xr.DataArray) -> float | None:
    value = float(value)
    return None if np.isnan(value) else int(value)


def write_tables(cube: xr.Dataset, settings: dict, out_dir: Path) -> dict:
    """Every table and the JSON summary into `out_dir`; return the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis = analyse(cube, settings)
    write_table(emergence_steps_table(cube, analysis.steps), EMERGENCE_STEP_COLUMNS, out_dir / "emergence_steps.tsv",
                "When: emergence step per (model, layer, category)")
    write_table(emergence_layers_table(cube, em.emergence_layer(analysis.flags)), EMERGENCE_LAYER_COLUMNS,
                out_dir / "emergence_layers.tsv", "Where: emergence layer per (model, step, category)")
    write_table(scale_table(cube, analysis.flags, settings["depth_bins"]), SCALE_COLUMNS, out_dir / "scale_thresholds.tsv",
                "Scale: smallest represented model per (step, category), overall and per relative-depth bin")
    write_table(analysis.events, em.REACTIVATION_COLUMNS,
                out_dir / "reactivation.tsv", "Reactivation: represented, dipped, represented again across layers")
    frame, summary = summary_frame(cube, settings, analysis)
    write_table(frame, SUMMARY_COLUMNS, out_dir / "summary_table.tsv", "Per (model, category): the four answers")
    write_json(summary, out_dir / "summary.json")
    return summary
