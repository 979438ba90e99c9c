"""The answer without a notebook: one readable table per model, printed from the cube and its analysis."""

from __future__ import annotations

import pandas as pd
import xarray as xr
from rich.console import Console
from rich.table import Table

from . import emergence as em
from .analysis import Analysis
from .tables import probe_table, summary_frame


def _agreement(counts: dict[str, int], key: str) -> str:
    return f"{counts[key]} of {counts['found']}"


def _cell(value: object) -> str:
    """Missing values as '-', whole floats without their '.0'."""
    if pd.isna(value) or value == "":
        return "-"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def print_summary(cube: xr.Dataset, analysis: Analysis, probe_set: str, console: Console | None = None) -> None:
    """Each category's emergence step, emergence layer, scale threshold and reactivations, per model, and the
    emergence steps of the held-out controls (the SAE and the linear probe on unseen words), on one probe set
    (`cube` its cube.probe_set_view)."""
    console = console or Console()
    settings = analysis.settings
    frame, summary = summary_frame(cube, analysis)
    controls = probe_table(cube, analysis).set_index(["model", "category"])
    final = int(cube["step"][-1])
    console.print(
        f"probe set {probe_set}: represented: score >= {settings['tau']}, score - null >= {settings['margin']}, "
        f"SAE variance explained >= {settings['min_variance_explained']}; persistence {settings['persistence']}"
    )
    if summary["not_scored"]:
        console.print(
            f"probe set {probe_set}: not scored (fewer than two words with contexts): {summary['not_scored']}"
        )
    n_seeds = len(summary["seeds"])
    if n_seeds > 1:
        found = summary["findings_in_every_seed"]
        console.print(
            f"probe set {probe_set}: {n_seeds} SAE seeds {summary['seeds']}; steps are medians over seeds. The same in "
            f"every seed: {_agreement(found['emergence_steps'], 'same_step_in_every_seed')} emergence steps, "
            f"{_agreement(found['earliest_emergence_steps'], 'same_step_in_every_seed')} earliest steps, "
            f"{_agreement(found['reactivation_events'], 'in_every_seed')} reactivation events"
        )
    for model, rows in frame.groupby("model", sort=False):
        rho = summary["spearman_frequency_vs_emergence_step"][model]["rho"]
        lasting = summary["spearman_frequency_vs_emergence_step_every_later_step"][model]["rho"]
        table = Table(
            title=f"{model}, {probe_set} probes  (Spearman frequency vs emergence step: {_cell(rho and round(rho, 2))};"
            f" represented at every later step: {_cell(lasting and round(lasting, 2))})"
        )
        for header in (
            "category",
            "planted freq",
            "emerges at step (layer)",
            f"layer @ step {final}",
            f"scale @ step {final}",
            "reactivations l1>l2>l3@step",
            "held-out words: SAE / probe step",
        ):
            table.add_column(header, overflow="fold")
        for row in rows.itertuples():
            step = _cell(row.earliest_emergence_step)
            emerged = step if step == "-" else f"{step} (layer {_cell(row.earliest_emergence_layer)})"
            if n_seeds > 1 and step != "-":
                emerged += f", {row.seeds_agreeing}/{n_seeds} seeds"
            table.add_row(
                row.category,
                f"{row.planted_frequency:g}",
                emerged,
                _cell(row.emergence_layer),
                _cell(row.scale_model),
                _cell(row.reactivations),
                " / ".join(_cell(controls.loc[(model, row.category), f"{r}_emergence_step"]) for r in em.CONTROLS),
            )
        console.print(table)
