"""Train one sparse autoencoder per (model, step, layer) with dictionary-learning's trainers.

The loop mirrors dictionary-learning's `trainSAE` (same trainers, same update calls, the
same unit-mean-squared-norm normalisation folded back into the biases on save) and adds
what a job needs: one forward pass feeding a group of layers from memory, divergence checks
that fail loudly with the cell's name, and one folder per cell. Quality is measured later,
by the score job, on held-out text: evaluating differently never retrains an SAE.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from .activations import layer_activations, token_rows
from .corpus import SAE_SPLIT
from .io import atomic_path, read_json, write_json
from .layout import SAE_CONFIG, SAE_WEIGHTS, cell_name, group_sae_dirs
from .models import forward_dtype, load_model, resolve_device
from .text import check_budget

log = logging.getLogger(__name__)

TRAINER_NAMES = {"topk": "TopKTrainer", "batchtopk": "BatchTopKTrainer", "relu": "StandardTrainer"}
CHECK_EVERY = 25
CHECK_TOKENS = 1024


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
    sample = activations[: 2**16].float()
    return math.sqrt(sample.pow(2).sum(dim=1).mean().item())


def shuffled_batches(
    activations: torch.Tensor, updates: int, batch_size: int, seed: int, device: torch.device, scale: float
) -> Iterator[torch.Tensor]:
    """`updates` float32 batches, epoch after epoch, each epoch a seeded permutation of the tokens."""
    generator = torch.Generator().manual_seed(seed)
    produced = 0
    while True:
        order = torch.randperm(len(activations), generator=generator)
        for i in range(0, len(activations) - batch_size + 1, batch_size):
            yield (activations[order[i : i + batch_size]].float() / scale).to(device, non_blocking=True)
            produced += 1
            if produced == updates:
                return


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


def train_sae(
    activations: torch.Tensor, settings: dict, device: torch.device, *, model: str, layer: int, cell: str
) -> tuple[torch.nn.Module, dict, dict]:
    """Train one SAE on one layer's activations [tokens, d_model]; return it (original scale), its config and stats."""
    norm = norm_factor(activations)
    config = trainer_config(settings, activations.shape[1], device, model=model, layer=layer)
    trainer = build_trainer(config)
    if hasattr(trainer, "dead_feature_threshold"):
        trainer.dead_feature_threshold = settings["dead_feature_tokens"]
    check = (activations[:CHECK_TOKENS].float() / norm).to(device)
    limit = settings["divergence_factor"] * (check - check.mean(dim=0)).pow(2).sum(dim=1).mean().item()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    updates = settings["updates"]
    batches = shuffled_batches(activations, updates, settings["batch_size"], settings["seed"], device, norm)
    started = time.perf_counter()
    for update, batch in enumerate(tqdm(batches, total=updates, desc=f"SAE {cell}", mininterval=10)):
        with autocast:
            loss = trainer.update(update, batch)
        if loss is not None:
            _check_finite(cell, update, loss, math.inf, "training loss")
        if update % CHECK_EVERY == 0 or update == updates - 1:
            with torch.no_grad():
                error = (check - trainer.ae(check)).pow(2).sum(dim=1).mean().item()
            _check_finite(cell, update, error, limit, "reconstruction error")
    seconds = time.perf_counter() - started
    trainer.ae.scale_biases(norm)
    tokens = updates * settings["batch_size"]
    stats = {
        "dead_fraction_train": dead_fraction_in_training(trainer),
        "tokens_trained": tokens,
        "distinct_tokens": len(activations),
        "train_seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 1),
    }
    saved = {**trainer.config, "norm_factor": norm, "architecture": settings["architecture"]}
    return trainer.ae.float().cpu(), saved, stats


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
    checkpoint: Path, tokens: Path, settings: dict, manifest_path: Path, *, model: str, step: int
) -> dict:
    """One forward pass over the SAE split feeds every layer of the group; each SAE lands in its own cell's folder.

    The group is named by its manifest (layout.sae_group), which is written last: its presence means every
    SAE of the group is complete.
    """
    folders = group_sae_dirs(manifest_path)
    layers = list(folders)
    device = resolve_device(settings["device"])
    network = load_model(checkpoint, device, forward_dtype(device, settings["gpu_dtype"]))
    recipe, context = settings["sae"], settings["tokens"]
    kept = context["seq_len"] - context["exclude_first"]
    rows = -(-recipe["tokens"] // kept)  # enough rows for the budget in kept positions, if the split holds them
    ids = token_rows(tokens, checkpoint, SAE_SPLIT, rows * context["seq_len"], context["seq_len"])
    check_budget(recipe, ids.shape[0] * (ids.shape[1] - context["exclude_first"]), tokens)  # fails before the forward
    activations = layer_activations(network, ids, layers, settings["forward_batch_size"], context["exclude_first"])
    del network
    manifest = {"model": model, "step": step, "layers": layers, "tokens": int(ids.numel()), "cells": {}}
    for layer in layers:
        cell = cell_name(model, step, layer)
        ae, trainer, stats = train_sae(
            activations.pop(layer), settings["sae"], device, model=model, layer=layer, cell=cell
        )
        save_sae(ae, trainer, settings["sae"], stats, cell, Path(folders[layer]))
        manifest["cells"][str(layer)] = stats
        log.info("trained SAE %s: %s", cell, stats)
    write_json(manifest, manifest_path)
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
