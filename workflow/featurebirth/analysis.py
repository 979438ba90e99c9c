"""The analysis of a cube, computed once: what the tables, the figures and the summary all show.

Settings come by one route: the caller passes the analysis settings (the validated config's
`analysis` section). The config stored in the cube is provenance only and is never read here.
Each probe set (template; with real text also mined) is analysed on its own, by the same rules: the emergence of a
category on the template contexts and on contexts mined from text are two answers, side by side in the tables.
Every SAE seed is analysed alike (the arrays keep the cube's seed dimension); where one answer is asked for, it is
the median over seeds (emergence.over_seeds), and the tables say how many seeds agree with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xarray as xr

from . import emergence as em
from .cube import probe_set_view
from .io import atomic_path

EVENT_PREFIX = "event_"
ARRAY_FIELDS = (
    "represented",
    "emergence_step",
    "emergence_layer",
    "earliest_step",
    "earliest_layer",
    "scale_threshold",
    "scale_model",
    "control_represented",
    "control_emergence_step",
    "control_earliest_step",
    "control_earliest_layer",
)
JSON_FIELDS = ("settings", "spearman", "spearman_every_later_step", "duplicates")
DESCRIPTIONS = {
    "represented": "score >= tau, score - null >= margin and SAE variance explained >= min_variance_explained; "
    "where set, ce_loss_recovered >= min_ce_recovered (cells whose ratio is NaN pass) and ce_loss_increase <= "
    "max_ce_increase",
    "emergence_step": "first step from which the category stays represented for `persistence` more steps",
    "emergence_layer": "shallowest represented layer",
    "earliest_step": "earliest emergence step over the model's layers",
    "earliest_layer": "the layer of the earliest emergence step (shallowest on ties)",
    "scale_threshold": "parameters of the smallest model with a represented layer (in the depth bin)",
    "scale_model": "name of that model (the first in model order among equal sizes); empty if none",
    "control_represented": "the held-out controls (readout heldout: the SAE feature chosen on other words; probe: "
    "the linear probe) under the same rule on their own score and null; heldout also needs a healthy SAE",
    "control_emergence_step": "first step from which the control stays represented for `persistence` more steps",
    "control_earliest_step": "the control's earliest emergence step over the model's layers",
    "control_earliest_layer": "the layer of the control's earliest emergence step (shallowest on ties)",
}


@dataclass(frozen=True, eq=False)
class Analysis:
    """Every answer about a cube, with the settings that produced it."""

    settings: dict  # the analysis settings used (validated config's `analysis` section)
    represented: xr.DataArray  # bool (model, step, layer, category)
    emergence_step: xr.DataArray  # (model, layer, category); NaN if never
    emergence_layer: xr.DataArray  # (model, step, category): shallowest represented layer; NaN if none
    earliest_step: xr.DataArray  # (model, category): earliest emergence step over layers; NaN if never
    earliest_layer: xr.DataArray  # (model, category): the layer of that step (shallowest on ties)
    scale_threshold: xr.DataArray  # (step, category, depth_bin): parameters of the smallest represented model
    scale_model: xr.DataArray  # (step, category, depth_bin): that model's name; '' if none
    control_represented: xr.DataArray  # bool (readout, model, step, layer, category): held-out SAE and probe
    control_emergence_step: xr.DataArray  # (readout, model, layer, category); NaN if never
    control_earliest_step: xr.DataArray  # (readout, model, category); NaN if never
    control_earliest_layer: xr.DataArray  # (readout, model, category)
    reactivation: pd.DataFrame  # one event per row, columns em.REACTIVATION_COLUMNS
    spearman: dict[str, dict]  # per model: frequency vs earliest emergence step, median over seeds (rho, p, n)
    spearman_every_later_step: dict[str, dict]  # the same when emerging means represented at every later step
    duplicates: list[dict]  # duplicate checkpoints (model, step, fingerprint), analysed only when allowed

    def arrays(self) -> dict[str, xr.DataArray]:
        """The labelled arrays by name."""
        return {name: getattr(self, name) for name in ARRAY_FIELDS}

    def equals(self, other: Analysis) -> bool:
        """Same settings, arrays (values, coordinates, names, attributes), events and JSON fields."""
        mine, theirs = self.arrays(), other.arrays()
        return (
            all(mine[name].identical(theirs[name]) for name in mine)
            and self.reactivation.equals(other.reactivation)
            and all(getattr(self, name) == getattr(other, name) for name in JSON_FIELDS)
        )


def _plain(array: xr.DataArray, name: str) -> xr.DataArray:
    """The array with its dimension coordinates only, no inherited attributes, named and described."""
    return array.reset_coords(drop=True).drop_attrs().rename(name).assign_attrs(description=DESCRIPTIONS[name])


def corpus_frequency(cube: xr.Dataset) -> xr.DataArray:
    """What predicts the emergence order: the planted frequencies of the generated corpus, else (real text) the
    frequencies measured in the SAE-training text."""
    planted = cube["planted_frequency"]
    if planted.notnull().any() or "text_frequency" not in cube.coords:
        return planted
    return cube["text_frequency"]


def analyse(cube: xr.Dataset, settings: dict) -> Analysis:
    """Represented cells, emergence, scale thresholds, reactivation and Spearman of a one-probe-set cube (a
    cube.probe_set_view) under `settings`.

    Refuses a cube with duplicate checkpoints unless `allow_duplicate_checkpoints` is set.
    """
    duplicates = em.duplicate_checkpoints(cube)
    em.refuse_duplicates(duplicates, settings)
    flags = _plain(em.represented(cube, settings), "represented")
    steps = _plain(em.emergence_step(flags, settings["persistence"]), "emergence_step")
    lasting = em.emergence_step(flags, cube.sizes["step"]).min("layer")  # represented at every later step
    earliest_step, earliest_layer = (_plain(a, a.name) for a in em.earliest_emergence(steps))
    binned = em.depth_binned(cube, flags, settings["depth_bins"])
    smallest = em.smallest_model(binned, cube["n_params"]).transpose(..., "step", "category", "depth_bin")
    controls = _plain(em.control_represented(cube, settings), "control_represented")
    control_steps = _plain(em.emergence_step(controls, settings["persistence"]), "control_emergence_step")
    control_first, control_layer = (_plain(a, f"control_{a.name}") for a in em.earliest_emergence(control_steps))
    return Analysis(
        settings=json.loads(json.dumps(settings)),
        represented=flags,
        emergence_step=steps,
        emergence_layer=_plain(em.emergence_layer(flags), "emergence_layer"),
        earliest_step=earliest_step,
        earliest_layer=earliest_layer,
        scale_threshold=_plain(em.threshold_params(smallest, cube["n_params"]), "scale_threshold"),
        scale_model=_plain(em.threshold_names(smallest, cube["model"]), "scale_model"),
        control_represented=controls,
        control_emergence_step=control_steps,
        control_earliest_step=control_first,
        control_earliest_layer=control_layer,
        reactivation=em.reactivation_events(cube, flags, settings),
        spearman=em.spearman_by_model(em.over_seeds(earliest_step)[0], corpus_frequency(cube)),
        spearman_every_later_step=em.spearman_by_model(em.over_seeds(lasting)[0], corpus_frequency(cube)),
        duplicates=duplicates,
    )


def analyse_probe_sets(cube: xr.Dataset, settings: dict) -> dict[str, Analysis]:
    """The analysis of every probe set of the cube, each on its own (cube.probe_set_view), in the cube's order."""
    return {str(p): analyse(probe_set_view(cube, str(p)), settings) for p in cube["probe_set"].values}


def _as_dataset(analysis: Analysis) -> xr.Dataset:
    """The arrays, the events along `event` and the JSON fields as attributes."""
    events = {
        f"{EVENT_PREFIX}{name}": ("event", analysis.reactivation[name].to_numpy()) for name in em.REACTIVATION_COLUMNS
    }
    return xr.Dataset(
        {**analysis.arrays(), **events}, attrs={name: json.dumps(getattr(analysis, name)) for name in JSON_FIELDS}
    )


def write_analyses(analyses: dict[str, Analysis], path: str | Path) -> None:
    """netCDF4/HDF5 (h5netcdf), atomically: one group per probe set; the root lists them in order."""
    with atomic_path(path) as tmp:
        xr.Dataset(attrs={"probe_sets": json.dumps(list(analyses))}).to_netcdf(tmp, engine="h5netcdf")
        for probe_set, analysis in analyses.items():
            _as_dataset(analysis).to_netcdf(tmp, engine="h5netcdf", group=probe_set, mode="a")


def read_analyses(path: str | Path) -> dict[str, Analysis]:
    """Every probe set's analysis that `write_analyses` stored, in order."""
    with xr.open_dataset(path, engine="h5netcdf") as root:
        sets = json.loads(root.attrs["probe_sets"])
    return {probe_set: read_analysis(path, probe_set) for probe_set in sets}


def read_analysis(path: str | Path, probe_set: str) -> Analysis:
    """One probe set's analysis that `write_analyses` stored, loaded into memory (the file is closed again)."""
    with xr.open_dataset(path, engine="h5netcdf", group=probe_set) as data:
        data = data.load()
    events = pd.DataFrame({name: data[f"{EVENT_PREFIX}{name}"].values for name in em.REACTIVATION_COLUMNS})
    arrays = {name: data[name] for name in ARRAY_FIELDS} | {"scale_model": data["scale_model"].astype(object)}
    json_fields = {name: json.loads(data.attrs[name]) for name in JSON_FIELDS}
    return Analysis(**arrays, **json_fields, reactivation=events.astype(em.REACTIVATION_DTYPES))
