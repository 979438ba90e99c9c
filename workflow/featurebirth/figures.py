"""Seaborn figures of the cube: heatmaps with the emergence boundary, emergence curves (the SAE's, and the held-out
controls': the SAE and a linear probe on unseen words), scale, reactivation, and per model the SAEs' downstream
quality (CE loss recovered and increase) over layer x step; and the lineage of each category's best feature.

Scores come from the cube; every analysed quantity and setting (tau, tau_low) from an `Analysis`. With several SAE
seeds a line is the mean over seeds and its band their whole range; a heatmap shows the mean and the median
emergence step (emergence.over_seeds).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from . import emergence as em
from .analysis import Analysis
from .io import atomic_path

SCORE_LABEL = "category score (best feature F1)"
STEP_LABEL = "training step (optimizer steps, symlog)"


def shown_steps(steps: list[int], chosen: list[int] | None, at_most: int = 4) -> list[int]:
    """The configured figure steps, or up to `at_most` spread evenly over the schedule (last included)."""
    if chosen:
        return list(chosen)
    picks = np.unique(np.round(np.linspace(0, len(steps) - 1, min(at_most, len(steps)))).astype(int))
    return [int(steps[i]) for i in picks]


def drawn_probe_set(cube: xr.Dataset, chosen: str | None) -> str:
    """The probe set the figures draw: figures.probe_set, or (null) mined where the cube has it, else template."""
    sets = [str(p) for p in cube["probe_set"].values]
    if chosen is not None and chosen not in sets:
        raise ValueError(f"figures.probe_set: the cube has no probe set '{chosen}' (it has {sets})")
    return chosen or ("mined" if "mined" in sets else sets[0])


def _save(fig: plt.Figure, path: Path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip("."))
    plt.close(fig)


def _symlog_steps(ax: plt.Axes, steps: np.ndarray) -> None:
    positive = steps[steps > 0]
    ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
    ax.set_xticks(steps)
    ax.set_xticklabels([str(s) for s in steps], rotation=45, ha="right")
    ax.minorticks_off()


def heatmaps(cube: xr.Dataset, analysis: Analysis, model: str, path: Path, dpi: int) -> None:
    """One panel per category: score (mean over seeds) over layer x step; the black line is the emergence boundary
    (the median step over seeds)."""
    score = cube["score"].sel(model=model).mean("seed")
    layers = cube["layer"].values[em.studied_layers(cube).sel(model=model).values]
    first = em.over_seeds(analysis.emergence_step)[0].sel(model=model, layer=layers)
    steps = cube["step"].values
    categories = cube["category"].values
    columns = min(3, len(categories))
    rows = int(np.ceil(len(categories) / columns))
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.6 * columns, 0.5 * len(layers) * rows + 1.6 * rows),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, category in zip(axes.flat, categories):
        table = score.sel(category=category, layer=layers).transpose("layer", "step").to_pandas()
        sns.heatmap(
            table, ax=ax, vmin=0, vmax=1, cmap="viridis", cbar=False, square=False, linewidths=0.3, linecolor="white"
        )
        ax.invert_yaxis()
        _draw_boundary(ax, first.sel(category=category).values, steps)
        ax.set_title(f"{category}", fontsize=10)
        ax.set_xlabel("training step (optimizer steps)")
        ax.set_ylabel("layer (block index)")
        ax.tick_params(axis="x", labelrotation=45)
        ax.tick_params(axis="y", labelrotation=0)
    for ax in axes.flat[len(categories) :]:
        ax.set_visible(False)
    fig.colorbar(
        plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap="viridis"), ax=axes, shrink=0.8, label=SCORE_LABEL
    )
    fig.suptitle(
        f"{model}: category score by layer and step, mean over {cube.sizes['seed']} SAE seed(s) (black line: "
        "emergence boundary, median over seeds)",
        fontsize=11,
    )
    _save(fig, path, dpi)


QUALITY_PANELS = {  # variable: (title, colour bar label, colour map, vmin, vmax, number format)
    "ce_loss_recovered": (
        "CE loss recovered, (L_zero - L_sae) / (L_zero - L_clean)",
        "fraction recovered",
        "viridis",
        0.0,
        1.0,
        ".2f",
    ),
    "ce_loss_increase": ("CE loss increase, L_sae - L_clean", "nats per token", "magma_r", 0.0, None, ".3f"),
}
MARK_AT = (0.85, 0.82)  # where in a cell (x, y from its lower left corner) the unhealthy mark goes
ANNOTATE_CELLS = 256  # write each cell's value in it when a panel has at most this many cells
NAN_COLOUR = "#d9d9d9"


def quality_heatmaps(cube: xr.Dataset, analysis: Analysis, model: str, path: Path, dpi: int) -> None:
    """Downstream SAE quality of one model over layer x step: CE loss recovered and CE loss increase.

    Values are the mean over SAE seeds. Grey cells of the ratio are NaN (zero ablation cheaper than
    evaluation.ce_floor, e.g. step 0); a cross marks the cells where the analysis's downstream limits
    (min_ce_recovered, max_ce_increase), where set, call any seed's SAE unhealthy.
    """
    exists = em.studied(cube).sel(model=model)
    layers = cube["layer"].values[em.studied_layers(cube).sel(model=model).values]
    cells = cube.sel(model=model, layer=layers).mean("seed")
    healthy = em.healthy(cube, {**analysis.settings, "min_variance_explained": -np.inf}).sel(model=model, layer=layers)
    unhealthy = (exists.sel(layer=layers) & ~healthy).any("seed").transpose("layer", "step").values
    limits = {k: analysis.settings.get(k) for k in ("min_ce_recovered", "max_ce_increase")}
    fig, axes = plt.subplots(
        1,
        len(QUALITY_PANELS),
        figsize=(max(4.0, 0.55 * cube.sizes["step"]) * len(QUALITY_PANELS), 0.45 * len(layers) + 2.0),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, (name, (title, label, cmap, vmin, vmax, fmt)) in zip(axes.flat, QUALITY_PANELS.items()):
        table = cells[name].transpose("layer", "step").to_pandas()
        ax.set_facecolor(NAN_COLOUR)
        sns.heatmap(
            table,
            ax=ax,
            vmin=vmin,
            vmax=vmax,
            cmap=cmap,
            annot=table.size <= ANNOTATE_CELLS,
            fmt=fmt,
            annot_kws={"fontsize": 7},
            linewidths=0.3,
            linecolor="white",
            cbar_kws={"label": label, "shrink": 0.8},
        )
        rows, columns = np.nonzero(unhealthy)
        ax.scatter(
            columns + MARK_AT[0], rows + MARK_AT[1], marker="x", s=25, color="red", linewidths=1.5, label="unhealthy"
        )
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step (optimizer steps)")
        ax.set_ylabel("layer (block index)")
        ax.tick_params(axis="x", labelrotation=45)
        ax.tick_params(axis="y", labelrotation=0)
    shown = ", ".join(f"{k} = {v}" for k, v in limits.items() if v is not None) or "none set"
    fig.suptitle(
        f"{model}: downstream SAE quality on the evaluation split\n(grey: ratio NaN, zero ablation cheaper than "
        f"evaluation.ce_floor; red x: fails the analysis's limits, {shown})",
        fontsize=10,
    )
    _save(fig, path, dpi)


def _draw_boundary(ax: plt.Axes, emergence: np.ndarray, steps: np.ndarray) -> None:
    """A staircase at the left edge of each layer's emergence column (right edge when it never emerges)."""
    x = [len(steps) if np.isnan(e) else int(np.searchsorted(steps, e)) for e in emergence]
    xs, ys = [], []
    for row, column in enumerate(x):
        xs += [column, column]
        ys += [row, row + 1]
    ax.plot(xs, ys, color="black", linewidth=2.2)


READOUTS = {  # score variable: (its null, row title)
    "score": ("null", "SAE feature (all words)"),
    "heldout_score": ("heldout_null", "SAE feature, held-out words"),
    "probe_score": ("probe_null", "linear probe, held-out words"),
}


def _best_over_layers(cube: xr.Dataset, score: str) -> pd.DataFrame:
    """A readout's score and null, each at its best layer, per (model, step, category)."""
    best = xr.Dataset({"score": cube[score].max("layer"), "null": cube[READOUTS[score][0]].max("layer")})
    frame = best.reset_coords(drop=True).to_dataframe().reset_index()
    frame["n_params"] = frame["model"].map(cube["n_params"].to_series())
    return frame


def _score_lines(frame: pd.DataFrame, y: str = "score", **facets) -> sns.FacetGrid:
    """Category score as lines, one colour per category, faceted as asked (the line figures share this); rows that
    differ only by seed make one line, their mean, with a band over their whole range."""
    return sns.relplot(frame, y=y, hue="category", kind="line", marker="o", errorbar=("pi", 100), **facets)


def emergence_curves(cube: xr.Dataset, analysis: Analysis, path: Path, dpi: int) -> None:
    """Best score over layers against step, one column per model and one row per readout (the SAE, the SAE on
    held-out words, the linear probe on held-out words); dashed lines are each category's null (mean over seeds)."""
    tau = analysis.settings["tau"]
    frames = [_best_over_layers(cube, score).assign(readout=title) for score, (_, title) in READOUTS.items()]
    frame = pd.concat(frames, ignore_index=True)
    grid = _score_lines(frame, x="step", row="readout", col="model", height=2.8, aspect=1.2, facet_kws={"sharey": True})
    steps = cube["step"].values
    palette = dict(zip(frame["category"].unique(), sns.color_palette(n_colors=frame["category"].nunique())))
    for (readout, model), ax in grid.axes_dict.items():
        mine = frame[(frame["model"] == model) & (frame["readout"] == readout)]
        for category, rows in mine.groupby("category", sort=False):
            null = rows.groupby("step")["null"].mean()
            ax.plot(null.index, null.values, linestyle="--", color=palette[category], linewidth=0.8, alpha=0.7)
        ax.axhline(tau, color="grey", linewidth=0.8, linestyle=":")
        _symlog_steps(ax, steps)
        ax.set_ylim(0, 1.02)
    grid.set_axis_labels(STEP_LABEL, "F1, best layer")
    grid.set_titles("{row_name}\n{col_name}", size=9)
    grid.figure.suptitle(
        f"Emergence over training: the SAE, and on held-out words the SAE and a linear probe (dashed: permutation "
        f"null; dotted: tau = {tau})",
        y=1.02,
        fontsize=11,
    )
    _save(grid.figure, path, dpi)


def scale(cube: xr.Dataset, analysis: Analysis, steps: list[int], path: Path, dpi: int) -> None:
    """Best score over layers against model size, one panel per shown step."""
    tau = analysis.settings["tau"]
    frame = _best_over_layers(cube, "score")
    frame = frame[frame["step"].isin(steps)]
    grid = _score_lines(frame, x="n_params", col="step", height=3.2, aspect=1.0)
    sizes = cube["n_params"].to_series()
    for ax in grid.axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sizes.values, [f"{name}\n{size / 1e6:.2g}M" for name, size in sizes.items()], fontsize=8)
        ax.minorticks_off()
        ax.axhline(tau, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylim(0, 1.02)
    grid.set_axis_labels("model size (parameters, log)", f"{SCORE_LABEL},\nbest layer")
    grid.set_titles("step {col_name}")
    grid.figure.suptitle(f"Scale: score against model size (dotted: tau = {tau})", y=1.04, fontsize=11)
    _save(grid.figure, path, dpi)


def reactivation(cube: xr.Dataset, analysis: Analysis, steps: list[int], path: Path, dpi: int) -> None:
    """Score against layer at the shown steps, one row per model; dips of reactivation events are marked."""
    settings, events = analysis.settings, analysis.reactivation
    exists = em.studied(cube)
    frame = cube["score"].sel(step=steps).where(exists.sel(step=steps)).reset_coords(drop=True)
    frame = frame.to_dataframe().dropna().reset_index()
    grid = _score_lines(frame, x="layer", row="model", col="step", height=2.6, aspect=1.2, facet_kws={"sharex": False})
    for (model, step), ax in grid.axes_dict.items():
        ax.axhline(settings["tau"], color="grey", linewidth=0.8, linestyle=":")
        ax.axhline(settings["tau_low"], color="firebrick", linewidth=0.8, linestyle=":")
        dips = events[(events["model"] == model) & (events["step"] == step)]
        ax.scatter(
            dips["l2"],
            dips["score_l2"],
            marker="v",
            s=90,
            color="firebrick",
            zorder=5,
            label="dip" if len(dips) else None,
        )
        layers = frame.loc[frame["model"] == model, "layer"].unique()
        ax.set_xticks(layers)
        ax.set_ylim(0, 1.02)
    grid.set_axis_labels("layer (block index)", SCORE_LABEL)
    grid.set_titles("{row_name}, step {col_name}")
    grid.figure.suptitle(
        f"Reactivation: score across layers (dotted grey: tau = {settings['tau']}; red: tau_low = "
        f"{settings['tau_low']}; triangles: dips of reactivation events, {len(events)} in all)",
        y=1.02,
        fontsize=11,
    )
    _save(grid.figure, path, dpi)


LINEAGE_MEASURES = {  # cube variable against the previous step: (the same across seeds, row title)
    "lineage_correlation": ("seed_correlation", "code correlation over the probe items"),
    "lineage_cosine": ("seed_cosine", "decoder-direction cosine"),
}


def lineage(cube: xr.Dataset, model: str, categories: list[str], path: Path, dpi: int) -> None:
    """Each category's best feature against the previous step's, per layer (solid; mean over seeds, band their
    range), beside two seeds' best features at the same step (dashed): one row per measure, one column per category."""
    layers = cube["layer"].values[em.studied_layers(cube).sel(model=model).values]
    cells = cube.sel(model=model, layer=layers, category=categories)
    frames = []
    for name, (reference, title) in LINEAGE_MEASURES.items():
        frame = cells[name].rename("value").reset_coords(drop=True).to_dataframe().reset_index()
        frames.append(frame.assign(measure=title))
    frame = pd.concat(frames, ignore_index=True)
    frame["layer"] = frame["layer"].astype(str)
    palette = dict(zip(frame["layer"].unique(), sns.color_palette("husl", n_colors=frame["layer"].nunique())))
    grid = sns.relplot(
        frame,
        x="step",
        y="value",
        hue="layer",
        palette=palette,
        row="measure",
        col="category",
        kind="line",
        marker="o",
        errorbar=("pi", 100),
        height=2.6,
        aspect=1.1,
    )
    steps = cube["step"].values
    for (title, category), ax in grid.axes_dict.items():
        reference = next(ref for ref, row in LINEAGE_MEASURES.values() if row == title)
        for layer in layers:
            seeds = cells[reference].sel(layer=layer, category=category)
            ax.plot(steps, seeds.values, linestyle="--", color=palette[str(layer)], linewidth=0.9, alpha=0.8)
        _symlog_steps(ax, steps)
        ax.set_ylim(-1.02, 1.02)
    grid.set_axis_labels("step (symlog)", "against the previous step")
    grid.set_titles("{row_name}\n{col_name}", size=9)
    grid.figure.suptitle(
        f"{model}: is a category's best feature the previous step's?\n(solid: against the previous step, mean over "
        "seeds; dashed: two SAE seeds at the same step, what one feature seen twice looks like)",
        y=1.12,
        fontsize=11,
    )
    _save(grid.figure, path, dpi)
