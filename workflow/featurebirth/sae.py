"""Train one sparse autoencoder per (model, step, layer) with dictionary-learning's trainers.

The loop mirrors dictionary-learning's `trainSAE` (same trainers, same update calls, the
same unit-mean-squared-norm normalisation folded back into the biases on save) and adds
what a per-cell job needs: a streamed HDF5 cache, a held-out evaluation split, divergence
checks that fail loudly with the cell's name, and a metrics file.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch
from tqdm import tqdm

from .io import atomic_path, plain_attrs, read_json, write_json
from .layout import layer_dataset

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
        "steps": settings["steps"],
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


class ActivationStream:
    """Shuffled float32 batches from a per-layer cache; the last `eval_tokens` rows are held out."""

    def __init__(self, path: Path, layer: int, batch_size: int, eval_tokens: int, seed: int, block_tokens: int = 2**18):
        self.path, self.batch_size, self.seed, self.block_tokens = Path(path), batch_size, seed, block_tokens
        self.dataset = layer_dataset(layer)
        with h5py.File(self.path, "r") as handle:
            n_tokens, self.d_model = handle[self.dataset].shape
            self.meta = plain_attrs(handle[self.dataset].attrs)
            if eval_tokens >= n_tokens:
                raise ValueError(f"{path}: {n_tokens} cached tokens cannot hold out {eval_tokens} for evaluation")
            self.n_train = n_tokens - eval_tokens
            self.eval = torch.from_numpy(handle[self.dataset][self.n_train :].astype(np.float32))

    def norm_factor(self) -> float:
        """Scale that gives the training tokens unit mean squared norm (as trainSAE's normalisation)."""
        with h5py.File(self.path, "r") as handle:
            sample = torch.from_numpy(handle[self.dataset][: min(self.n_train, 2**16)].astype(np.float32))
        return math.sqrt(sample.pow(2).sum(dim=1).mean().item())

    def batches(self, steps: int, device: torch.device, scale: float = 1.0) -> Iterator[torch.Tensor]:
        """`steps` batches, epoch after epoch, each a random draw without replacement within a block."""
        rng = np.random.default_rng(self.seed)
        produced = 0
        with h5py.File(self.path, "r") as handle:
            while True:
                for start in rng.permutation(range(0, self.n_train, self.block_tokens)):
                    stop = min(start + self.block_tokens, self.n_train)
                    block = torch.from_numpy(handle[self.dataset][start:stop].astype(np.float32))
                    order = torch.from_numpy(rng.permutation(len(block)))
                    for i in range(0, len(block) - self.batch_size + 1, self.batch_size):
                        yield (block[order[i : i + self.batch_size]] / scale).to(device, non_blocking=True)
                        produced += 1
                        if produced == steps:
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
        "fraction_variance_explained": 1.0 - squared_error / total_variance,
        "l0": l0_total / len(x),
        "dead_fraction": 1.0 - fired.float().mean().item(),
        "reconstruction_mse": squared_error / len(x),
        "eval_tokens": len(x),
    }


def _check_finite(cell: str, step: int, value: float, limit: float, what: str) -> None:
    if not math.isfinite(value):
        raise SAETrainingError(f"SAE {cell}: {what} is {value} at step {step} (NaN/inf: training failed)")
    if value > limit:
        raise SAETrainingError(f"SAE {cell}: {what} {value:.4g} at step {step} exceeds {limit:.4g} (diverged)")


def train_sae(
    cache: Path, settings: dict, out_dir: Path, *, model: str, layer: int, cell: str, device: torch.device
) -> dict:
    """Train the cell's SAE on its activation cache; write ae.pt, config.json and metrics.json."""
    stream = ActivationStream(cache, layer, settings["batch_size"], settings["eval_tokens"], settings["seed"])
    norm = stream.norm_factor()
    config = trainer_config(settings, stream.d_model, device, model=model, layer=layer)
    trainer = build_trainer(config)
    if hasattr(trainer, "dead_feature_threshold"):
        trainer.dead_feature_threshold = settings["dead_feature_tokens"]
    check = (stream.eval[:CHECK_TOKENS] / norm).to(device)
    limit = settings["divergence_factor"] * (check - check.mean(dim=0)).pow(2).sum(dim=1).mean().item()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    started = time.perf_counter()
    progress = tqdm(stream.batches(settings["steps"], device, norm), total=settings["steps"], desc=f"SAE {cell}", mininterval=2)
    for step, batch in enumerate(progress):
        with autocast:
            loss = trainer.update(step, batch)
        if loss is not None:
            _check_finite(cell, step, loss, math.inf, "training loss")
        if step % CHECK_EVERY == 0 or step == settings["steps"] - 1:
            with torch.no_grad():
                error = (check - trainer.ae(check)).pow(2).sum(dim=1).mean().item()
            _check_finite(cell, step, error, limit, "held-out reconstruction error")
    seconds = time.perf_counter() - started
    trainer.ae.scale_biases(norm)
    ae = trainer.ae.float().cpu()
    metrics = quality(ae, stream.eval)
    metrics.update(
        tokens_trained=settings["steps"] * settings["batch_size"],
        train_seconds=round(seconds, 3),
        tokens_per_second=round(settings["steps"] * settings["batch_size"] / seconds, 1),
        training_cache=Path(cache).name,  # which cache fed it: the workflow keeps naming it, see training_cache()
    )
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "ae.pt") as tmp:
        torch.save({k: v.cpu() for k, v in ae.state_dict().items()}, tmp)
    saved = {**{k: v for k, v in trainer.config.items()}, "norm_factor": norm, "architecture": settings["architecture"]}
    write_json({"trainer": saved, "settings": settings, "cell": cell, "cache": stream.meta}, out_dir / "config.json")
    write_json(metrics, out_dir / "metrics.json")
    return metrics


def dictionary_classes() -> dict[str, type]:
    """dictionary-learning's dictionary classes, by the `dict_class` name its trainers record."""
    trainer_classes()
    from dictionary_learning.dictionary import AutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    return {cls.__name__: cls for cls in (AutoEncoder, AutoEncoderTopK, BatchTopKSAE)}


def load_sae(sae_dir: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The trained dictionary of a cell, ready to encode activations in their original scale."""
    sae_dir = Path(sae_dir)
    dict_class = read_json(sae_dir / "config.json")["trainer"]["dict_class"]
    ae = dictionary_classes()[dict_class].from_pretrained(str(sae_dir / "ae.pt"))
    return ae.to(device).eval()
