"""Train one sparse autoencoder per (model, step, layer) with dictionary-learning's trainers.

The loop mirrors dictionary-learning's `trainSAE` (same trainers, same update calls, the
same unit-mean-squared-norm normalisation folded back into the biases on save) and adds
what a job needs: one forward pass of the model, truncated after the group's deepest layer,
feeding every SAE of the group (its layers x its seeds) in lockstep from a shuffled buffer (stream.py: each seed
its own order of each chunk's tokens, and its own initialisation); a training
state saved every few minutes and on SIGTERM, from which a retry resumes (resume.py);
progress lines a person can follow in a SLURM log; divergence checks that fail loudly with
the cell's name; and one folder per cell. Quality is measured later, by the score job, on
held-out text: evaluating differently never retrains an SAE.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .activations import ChunkSource, forward_chunks, held_chunks, token_rows
from .corpus import SAE_SPLIT
from .io import atomic_path, read_json, write_json
from .layout import SAE_CONFIG, SAE_WEIGHTS, cell_name, group_sae_dirs, manifest_group, training_state
from .models import forward_dtype, load_truncated, resolve_device
from .resume import TrainingInterrupted, TrainingState, restore_trainer, sigterm_requested, state_key, trainer_state
from .stream import ChunkSchedule, chunk_schedule, kept_positions, rows_wanted
from .text import check_budget, check_stream_rows

log = logging.getLogger(__name__)

TRAINER_NAMES = {"topk": "TopKTrainer", "batchtopk": "BatchTopKTrainer", "relu": "StandardTrainer"}
CHECK_EVERY = 25
CHECK_TOKENS = 1024
NORM_TOKENS = 2**16
PROGRESS_SECONDS = 60.0


class SAETrainingError(RuntimeError):
    """SAE training diverged or produced non-finite values; the message names the cell."""


def trainer_classes() -> dict[str, type]:
    """dictionary-learning's trainer classes, by our architecture names.

    The package's top-level `__init__` imports its ActivationBuffer and with it nnsight
    (about 6 s per job, unused here), so the package is registered without running it
    and only the trainers subpackage is imported.
    """
    if "dictionary_learning" not in sys.modules:
        spec = importlib.util.find_spec("dictionary_learning")
        sys.modules["dictionary_learning"] = importlib.util.module_from_spec(spec)
    from dictionary_learning import trainers

    return {name: getattr(trainers, cls) for name, cls in TRAINER_NAMES.items()}


def trainer_config(settings: dict, d_model: int, device: torch.device, *, model: str, layer: int) -> dict:
    """Keyword arguments for the dictionary-learning trainer chosen by `settings['architecture']`."""
    arch = settings["architecture"]
    config = {
        "trainer": trainer_classes()[arch],
        "steps": settings["updates"],
        "activation_dim": d_model,
        "dict_size": settings["expansion"] * d_model,
        "layer": layer,
        "lm_name": model,
        "warmup_steps": settings["warmup_steps"],
        "seed": settings["seed"],
        "device": str(device),
        "wandb_name": f"{model}-L{layer}",
    }
    if settings["lr"] is not None:
        config["lr"] = settings["lr"]
    if arch == "relu":
        config.update(l1_penalty=settings["l1_penalty"], sparsity_warmup_steps=settings["sparsity_warmup_steps"])
    else:
        config.update(k=settings["k"], threshold_start_step=settings["threshold_start_step"])
    return config


def build_trainer(config: dict):
    """Instantiate a trainer from `trainer_config` output (as trainSAE does)."""
    kwargs = dict(config)
    return kwargs.pop("trainer")(**kwargs)


def norm_factor(activations: torch.Tensor) -> float:
    """Scale that gives the training tokens unit mean squared norm (as trainSAE's normalisation)."""
    sample = activations[:NORM_TOKENS].float()
    return math.sqrt(sample.pow(2).sum(dim=1).mean().item())


@torch.no_grad()
def quality(ae: torch.nn.Module, x: torch.Tensor, batch: int = 4096) -> dict:
    """Fraction of variance explained, L0, dead-feature fraction and reconstruction error on `x`."""
    squared_error, l0_total, fired = 0.0, 0.0, None
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        codes = ae.encode(chunk)
        recon = ae.decode(codes)
        squared_error += (chunk - recon).pow(2).sum().item()
        l0_total += (codes > 0).sum().item()
        batch_fired = (codes > 0).any(dim=0)
        fired = batch_fired if fired is None else fired | batch_fired
    total_variance = (x - x.mean(dim=0)).pow(2).sum().item()
    return {
        "variance_explained": 1.0 - squared_error / total_variance,
        "l0": l0_total / len(x),
        "dead_fraction": 1.0 - fired.float().mean().item(),
        "reconstruction_mse": squared_error / len(x),
    }


def _check_finite(cell: str, update: int, value: float, limit: float, what: str) -> None:
    if not math.isfinite(value):
        raise SAETrainingError(f"SAE {cell}: {what} is {value} at SAE update {update} (NaN/inf: training failed)")
    if value > limit:
        raise SAETrainingError(f"SAE {cell}: {what} {value:.4g} at SAE update {update} exceeds {limit:.4g} (diverged)")


Unit = tuple[int, int]  # (layer, seed): one SAE of a group


@dataclass
class LayerRun:
    """One SAE of a group while it trains: the trainer, the scale of its inputs and its divergence check."""

    layer: int
    seed: int
    cell: str
    trainer: object
    norm: float
    check: torch.Tensor
    limit: float
    loss: float = math.nan

    @property
    def unit(self) -> Unit:
        return self.layer, self.seed

    def step(self, update: int, values: torch.Tensor, picks: torch.Tensor, device: torch.device, autocast) -> None:
        """One SAE update on the picked tokens of this layer's chunk, checked every CHECK_EVERY updates."""
        batch = values[picks].to(device, non_blocking=True).float().div_(self.norm)  # fp16 over the bus
        with autocast:
            loss = self.trainer.update(update, batch)
        if loss is not None:
            self.loss = loss
            _check_finite(self.cell, update, loss, math.inf, "training loss")
        if update % CHECK_EVERY == 0 or update == self.trainer.steps - 1:
            _check_finite(self.cell, update, self.check_error(), self.limit, "reconstruction error")

    @torch.no_grad()
    def check_error(self) -> float:
        return (self.check - self.trainer.ae(self.check)).pow(2).sum(dim=1).mean().item()

    @torch.no_grad()
    def check_l0(self) -> float:
        return (self.trainer.ae.encode(self.check) > 0).sum(dim=1).float().mean().item()

    def saved(self) -> dict:
        return {**trainer_state(self.trainer), "norm": self.norm, "check": self.check.cpu(), "limit": self.limit}


def layer_trainer(unit: Unit, d_model: int, settings: dict, device: torch.device, model: str):
    """A freshly built trainer for one (layer, seed), its dead-feature window set from the recipe (trainSAE cannot).
    The trainer seeds torch's generator with the seed as it builds the SAE: the initialisation is the seed's alone."""
    layer, seed = unit
    trainer = build_trainer(trainer_config({**settings, "seed": seed}, d_model, device, model=model, layer=layer))
    if hasattr(trainer, "dead_feature_threshold"):
        trainer.dead_feature_threshold = settings["dead_feature_tokens"]
    return trainer


def start_run(
    unit: Unit, cell: str, values: torch.Tensor, settings: dict, device: torch.device, model: str
) -> LayerRun:
    """A fresh SAE for one (layer, seed), its inputs scaled by the first chunk's mean squared norm."""
    norm = norm_factor(values)
    trainer = layer_trainer(unit, values.shape[1], settings, device, model)
    check = (values[:CHECK_TOKENS].float() / norm).to(device)
    limit = settings["divergence_factor"] * (check - check.mean(dim=0)).pow(2).sum(dim=1).mean().item()
    return LayerRun(*unit, cell, trainer, norm, check, limit)


def resume_run(unit: Unit, cell: str, saved: dict, settings: dict, device: torch.device, model: str) -> LayerRun:
    """One (layer, seed)'s SAE put back in the state a previous attempt of the job saved."""
    trainer = layer_trainer(unit, saved["check"].shape[1], settings, device, model)
    restore_trainer(trainer, saved)
    return LayerRun(*unit, cell, trainer, saved["norm"], saved["check"].to(device), saved["limit"])


class Progress:
    """Lines a person can follow in a SLURM log file: tokens done of the budget, tokens/s, time left, loss, L0."""

    def __init__(self, label: str, updates: int, batch_size: int, start: int) -> None:
        self.label, self.updates, self.batch_size, self.start = label, updates, batch_size, start
        self.started = self.logged = time.monotonic()

    def tick(self, done: int, runs: list[LayerRun]) -> None:
        now = time.monotonic()
        if done != self.updates and now - self.logged < PROGRESS_SECONDS:
            return
        self.logged = now
        rate = (done - self.start) * self.batch_size / max(now - self.started, 1e-9)
        left = (self.updates - done) * self.batch_size / max(rate, 1e-9)
        layers = "; ".join(f"L{run.layer}/s{run.seed} loss {run.loss:.4g} L0 {run.check_l0():.1f}" for run in runs)
        log.info(
            "%s: %s of %s tokens (%.1f%%), SAE update %d/%d, %.0f tokens/s, %s left; %s",
            self.label,
            f"{done * self.batch_size:,}",
            f"{self.updates * self.batch_size:,}",
            100 * done / self.updates,
            done,
            self.updates,
            rate,
            _duration(left),
            layers,
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def train_group(
    source: ChunkSource,
    schedule: ChunkSchedule,
    cells: dict[Unit, str],
    settings: dict,
    device: torch.device,
    *,
    model: str,
    state: TrainingState | None = None,
) -> dict[Unit, tuple[torch.nn.Module, dict, dict]]:
    """Train one SAE per (layer, seed) of `cells` in lockstep, every update's batch picked from the current chunk in
    the seed's order (the schedule with the seed in place of its own: the same chunks, permuted per seed).

    Resumes from `state` when it holds a matching saved state; saves it when due and on SIGTERM (then raises
    TrainingInterrupted). Returns per (layer, seed) the SAE (original scale), its trainer config and training stats.
    """
    updates, batch_size = settings["updates"], settings["batch_size"]
    seeds = sorted({seed for _, seed in cells})
    saved = state.load() if state else None
    start = saved["update"] if saved else 0
    chunk, _ = schedule.position(min(start, updates - 1))
    values, loaded_rows, orders = source(schedule.rows(chunk)), schedule.rows(chunk), _orders(schedule, seeds, chunk)
    if saved:
        runs = [
            resume_run(unit, cell, saved["layers"].pop(unit), settings, device, model) for unit, cell in cells.items()
        ]
        torch.set_rng_state(saved["rng"])
        del saved  # the restored copy is on the trainers now: do not hold a second one for the whole run
        log.info("resumed from SAE update %d of %d (%s)", start, updates, state.path)
    else:
        runs = [start_run(unit, cell, values[unit[0]], settings, device, model) for unit, cell in cells.items()]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    progress = Progress(f"SAEs {', '.join(cells.values())}", updates, batch_size, start)
    started = time.perf_counter()
    with sigterm_requested() as stop:
        for update in range(start, updates):
            position, index = schedule.position(update)
            if position != chunk:
                chunk, rows = position, schedule.rows(position)
                if not np.array_equal(rows, loaded_rows):
                    values = None  # the old chunk is released before the next is captured: one buffer at a time
                    values, loaded_rows = source(rows), rows
                orders = _orders(schedule, seeds, chunk)
            batch = slice(index * batch_size, (index + 1) * batch_size)
            for run in runs:
                run.step(update, values[run.layer], orders[run.seed][batch], device, autocast)
            progress.tick(update + 1, runs)
            if stop[0] or (state is not None and state.due() and update + 1 < updates):
                _save(state, update + 1, runs)
                if stop[0]:
                    log.warning(
                        "SIGTERM after SAE update %d: stopping; a rerun resumes from the saved state", update + 1
                    )
                    raise TrainingInterrupted(update + 1)
    seconds = time.perf_counter() - started
    stats = {
        "tokens_trained": updates * batch_size,
        "distinct_tokens": schedule.n_rows * schedule.tokens_per_row,
        "passes": round(updates * batch_size / (schedule.n_rows * schedule.tokens_per_row), 4),
        "resumed_from_update": start,
        "train_seconds": round(seconds, 3),
        "tokens_per_second": round((updates - start) * batch_size / max(seconds, 1e-9), 1),
    }
    return {run.unit: _finished(run, settings, stats) for run in runs}


def _orders(schedule: ChunkSchedule, seeds: list[int], chunk: int) -> dict[int, torch.Tensor]:
    """Each seed's token order of one chunk."""
    return {seed: torch.from_numpy(replace(schedule, seed=seed).order(chunk)) for seed in seeds}


def _save(state: TrainingState | None, done: int, runs: list[LayerRun]) -> None:
    """Save the group's state; a failed save (disk full) is logged and training goes on from the last good one."""
    if state is None:
        return
    try:
        state.save({"update": done, "layers": {run.unit: run.saved() for run in runs}, "rng": torch.get_rng_state()})
    except OSError as error:
        log.warning("could not save the training state at SAE update %d (%s): %s", done, state.path, error)
        return
    log.info("saved the training state at SAE update %d (%s)", done, state.path)


def _finished(run: LayerRun, settings: dict, stats: dict) -> tuple[torch.nn.Module, dict, dict]:
    """The SAE in the activations' original scale, its trainer config and its stats."""
    run.trainer.ae.scale_biases(run.norm)
    saved = {**run.trainer.config, "norm_factor": run.norm, "architecture": settings["architecture"]}
    return run.trainer.ae.float().cpu(), saved, {**stats, "dead_fraction_train": dead_fraction_in_training(run.trainer)}


def train_sae(
    activations: torch.Tensor, settings: dict, device: torch.device, *, model: str, layer: int, cell: str
) -> tuple[torch.nn.Module, dict, dict]:
    """Train one SAE on one layer's activations already in memory [tokens, d_model], passed over while the budget lasts."""
    source, n_tokens = held_chunks({layer: activations})
    schedule = chunk_schedule("memory", n_tokens, n_tokens, 1, settings["batch_size"], settings["seed"])
    unit = (layer, settings["seed"])
    return train_group(source, schedule, {unit: cell}, settings, device, model=model)[unit]


def dead_fraction_in_training(trainer) -> float | None:
    """The trainer's own count at the end of training: the share of features silent for its dead-feature window
    (TopK and BatchTopK keep one; ReLU without resampling keeps none: None)."""
    silent = getattr(trainer, "num_tokens_since_fired", None)
    if silent is None:
        return None
    return float((silent >= trainer.dead_feature_threshold).float().mean())


def save_sae(ae: torch.nn.Module, trainer: dict, settings: dict, stats: dict, cell: str, out_dir: Path) -> None:
    """A cell's SAE folder: the weights and a config with the trainer's settings and the training stats."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / SAE_WEIGHTS) as tmp:
        torch.save({k: v.cpu() for k, v in ae.state_dict().items()}, tmp)
    write_json({"trainer": trainer, "settings": settings, "training": stats, "cell": cell}, out_dir / SAE_CONFIG)


def train_layer_group(
    checkpoint: Path,
    tokens: Path,
    settings: dict,
    manifest_path: Path,
    *,
    model: str,
    step: int,
    save_every_minutes: float,
) -> dict:
    """One forward pass per chunk of the SAE split feeds every SAE of the group (its layers x its seeds); each SAE
    lands in its own folder (layout.sae_dir).

    The group is named by its manifest (layout.sae_group), which is written last: its presence means every SAE of
    the group is complete; its name gives the layers and seeds (layout.group_name). The training state beside it
    (layout.training_state) lets a retry resume.
    """
    folders = group_sae_dirs(manifest_path)
    layers, seeds = (sorted(values) for values in manifest_group(manifest_path))
    device = resolve_device(settings["device"])
    recipe, context, buffer = settings["sae"], settings["tokens"], settings["buffer"]
    kept = kept_positions(context)
    ids = token_rows(
        tokens, checkpoint, SAE_SPLIT, rows_wanted(buffer, recipe, kept) * context["seq_len"], context["seq_len"]
    )
    check_budget(recipe, ids.shape[0] * kept, tokens)  # both fail before the model is loaded
    check_stream_rows(recipe, buffer, len(ids), kept, tokens)
    schedule = chunk_schedule(
        buffer["mode"], buffer["buffer_tokens"], len(ids), kept, recipe["batch_size"], recipe["seed"]
    )
    network, metadata = load_truncated(checkpoint, device, forward_dtype(device, settings["gpu_dtype"]), max(layers))
    source = forward_chunks(network, ids, layers, settings["forward_batch_size"], context["exclude_first"])
    state = TrainingState(
        training_state(manifest_path),
        state_key(settings, list(folders), metadata["fingerprint"], ids),
        save_every_minutes,
    )
    cells = {(layer, seed): cell_name(model, step, layer, seed) for layer, seed in folders}
    log.info(
        "%s step %d layers %s seeds %s: %d SAE updates of %d tokens, %s mode, chunks of %d rows x %d tokens, %.2f passes over"
        " %d rows; model truncated after block %d (%d parameters in the checkpoint)",
        model,
        step,
        layers,
        seeds,
        recipe["updates"],
        recipe["batch_size"],
        buffer["mode"],
        schedule.rows_per_chunk,
        kept,
        recipe["tokens"] / (len(ids) * kept),
        len(ids),
        max(layers),
        metadata["n_params"],
    )
    trained = train_group(source, schedule, cells, recipe, device, model=model, state=state)
    manifest = {"model": model, "step": step, "layers": layers, "seeds": seeds, "tokens": int(ids.numel())}
    manifest |= {"checkpoint": metadata, "cells": {}}
    for unit, (ae, trainer, stats) in trained.items():
        save_sae(ae, trainer, {**recipe, "seed": unit[1]}, stats, cells[unit], Path(folders[unit]))
        manifest["cells"][cells[unit]] = stats
        log.info("trained SAE %s: %s", cells[unit], stats)
    write_json(manifest, manifest_path)
    state.remove()
    return manifest


def dictionary_classes() -> dict[str, type]:
    """dictionary-learning's dictionary classes, by the `dict_class` name its trainers record."""
    trainer_classes()
    from dictionary_learning.dictionary import AutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    return {cls.__name__: cls for cls in (AutoEncoder, AutoEncoderTopK, BatchTopKSAE)}


def load_sae(folder: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The trained dictionary of a cell, ready to encode activations in their original scale."""
    folder = Path(folder)
    dict_class = read_json(folder / SAE_CONFIG)["trainer"]["dict_class"]
    ae = dictionary_classes()[dict_class].from_pretrained(str(folder / SAE_WEIGHTS))
    return ae.to(device).eval()
