"""Gather every scored cell into one xarray cube: model x step x layer x category.

Cells a model does not have (layers beyond its depth, layers not studied) are NaN. Beside the
scores the cube keeps, per (model, step, category), the cosine between the best features'
decoder directions of every pair of layers, so reactivation can be judged from the cube alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import xarray as xr

from .io import atomic_path

CELL_VARIABLES = ("score", "null", "auroc", "precision", "recall")
QUALITY_VARIABLES = ("variance_explained", "l0", "dead_fraction")
MISSING_FEATURE = -1

DESCRIPTIONS = {
    "score": "category score S(c): best feature's F1 of 'fires' against 'is a target of c'",
    "null": "S0(c): high quantile of the category score under word-level label permutations",
    "auroc": "AUROC of the best feature's code value for the category",
    "precision": "P(c | best feature fires)",
    "recall": "P(best feature fires | c)",
    "best_feature": f"id of the best feature in the cell's SAE ({MISSING_FEATURE} where no cell)",
    "variance_explained": "SAE fraction of variance explained on held-out activations",
    "l0": "SAE mean active features per token",
    "dead_fraction": "fraction of SAE features that never fired on held-out activations",
    "direction_cosine": "cosine of the best features' decoder directions at layer and other_layer",
    "duplicate_checkpoint": "another step of this model has identical weights (a mislabelled revision?)",
}


def read_cells(paths: Iterable[Path]) -> list[xr.Dataset]:
    """Every cell's score file, loaded into memory (the files are small)."""
    cells = []
    for path in paths:
        with xr.open_dataset(path, engine="h5netcdf") as cell:
            cells.append(cell.load())
    return cells


def _model_table(cells: list[xr.Dataset], models: list[str]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for cell in cells:
        table.setdefault(cell.attrs["model"], dict(cell.attrs))
    missing = [m for m in models if m not in table]
    if missing:
        raise ValueError(f"no scored cell for model(s) {missing}")
    return table


def _empty(shape: tuple[int, ...], dtype=np.float64, fill=np.nan) -> np.ndarray:
    return np.full(shape, fill, dtype=dtype)


def build_cube(cells: list[xr.Dataset], models: list[str], steps: list[int], categories: list[str],
               planted_frequency: dict[str, float], config: dict) -> xr.Dataset:
    """One labelled dataset from every cell; coordinates carry sizes, tokens seen and planted frequencies."""
    info = _model_table(cells, models)
    n_layers = max(int(info[m]["n_layers"]) for m in models)
    shape = (len(models), len(steps), n_layers, len(categories))
    arrays = {name: _empty(shape) for name in CELL_VARIABLES}
    arrays["best_feature"] = _empty(shape, np.int32, MISSING_FEATURE)
    quality = {name: _empty(shape[:3]) for name in QUALITY_VARIABLES}
    cosine = _empty((len(models), len(steps), len(categories), n_layers, n_layers))
    tokens_seen = _empty(shape[:2])
    fingerprint = np.full(shape[:2], "", dtype=object)
    directions: dict[tuple[int, int], dict[int, np.ndarray]] = {}
    for cell in cells:
        m, s, layer = models.index(cell.attrs["model"]), steps.index(int(cell.attrs["step"])), int(cell.attrs["layer"])
        cell = cell.reindex(category=categories)
        for name in CELL_VARIABLES:
            arrays[name][m, s, layer] = cell[name].values
        arrays["best_feature"][m, s, layer] = cell["best_feature"].fillna(MISSING_FEATURE).values
        for name in QUALITY_VARIABLES:
            quality[name][m, s, layer] = float(cell[name])
        tokens_seen[m, s] = cell.attrs.get("tokens_seen", np.nan)
        fingerprint[m, s] = str(cell.attrs.get("fingerprint", ""))
        directions.setdefault((m, s), {})[layer] = cell["best_direction"].values
    for (m, s), by_layer in directions.items():
        layers = sorted(by_layer)
        stacked = np.stack([by_layer[layer] for layer in layers], axis=1)  # [category, layer, hidden]
        cosine[m, s][np.ix_(range(len(categories)), layers, layers)] = np.einsum("cih,cjh->cij", stacked, stacked)
    tokens_seen[tokens_seen < 0] = np.nan
    dims = ("model", "step", "layer", "category")
    data = {name: (dims, values) for name, values in arrays.items()}
    data.update({name: (dims[:3], values) for name, values in quality.items()})
    data["direction_cosine"] = (("model", "step", "category", "layer", "other_layer"), cosine)
    data["duplicate_checkpoint"] = (("model", "step"), duplicate_steps(fingerprint))
    cube = xr.Dataset(
        data,
        coords={
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
            "planted_frequency": ("category", [float(planted_frequency.get(c, np.nan)) for c in categories]),
        },
        attrs={"config": json.dumps(config, sort_keys=True), "n_cells": len(cells), "title": "featurebirth cube"},
    )
    for name, text in DESCRIPTIONS.items():
        cube[name].attrs["description"] = text
    return cube


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


def cube_config(cube: xr.Dataset) -> dict:
    """The validated config stored in the cube's attributes."""
    return json.loads(cube.attrs["config"])
