"""Throughput ratios measured side by side in one run (one command: python benchmarks/run.py).

1. Activation caching (hooks + float16 HDF5 writes of every layer) against a bare forward
   pass of the same model over the same batches.       target: ratio >= 0.9
2. The SAE job's training loop (streamed HDF5 cache, divergence checks) against
   dictionary-learning's trainSAE fed from an in-memory tensor, same trainer and batches.
                                                       target: ratio >= 0.9
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

from featurebirth.activations import cache_training_activations, layer_dataset  # noqa: E402
from featurebirth.config import model_spec, sae_settings, validate_config  # noqa: E402
from featurebirth.corpus import build_corpus  # noqa: E402
from featurebirth.models import load_model, resolve_device  # noqa: E402
from featurebirth.sae import build_trainer, train_sae, trainer_config  # noqa: E402
from featurebirth.toy_models import train_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def bench_config(d_model: int, n_layers: int, tokens: int, sae_steps: int) -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["models"] = {"bench": {"source": "toy", "d_model": d_model, "n_layers": n_layers, "n_heads": 4}}
    raw["corpus"]["n_sae_sequences"] = tokens // raw["corpus"]["seq_len"]
    raw["activations"]["max_tokens"] = tokens
    raw["sae"]["steps"] = sae_steps
    # trainSAE cannot set the trainers' dead-feature window; use its default on both sides
    raw["sae"]["dead_feature_tokens"] = 10_000_000
    return validate_config(raw)


def bare_forward_seconds(model_dir: Path, tokens: Path, config: dict, device: torch.device) -> float:
    """Load the model and run the same batches through it, keeping nothing."""
    started = time.perf_counter()
    model = load_model(model_dir, device)
    with h5py.File(tokens) as handle:
        seq_len = handle["sae"].shape[1]
        ids = torch.from_numpy(handle["sae"][: config["activations"]["max_tokens"] // seq_len].astype(np.int64))
    batch = config["activations"]["batch_size"]
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            model.gpt_neox(input_ids=ids[start : start + batch].to(device))
    return time.perf_counter() - started


def trainsae_seconds(cache: Path, layer: int, settings: dict, device: torch.device) -> float:
    """dictionary-learning's trainSAE on the same tokens, held in memory as one tensor."""
    from dictionary_learning.training import trainSAE

    with h5py.File(cache) as handle:
        data = torch.from_numpy(handle[layer_dataset(layer)][: -settings["eval_tokens"]].astype(np.float32))
    data /= data.pow(2).sum(dim=1).mean().sqrt()
    batch = settings["batch_size"]

    def batches():
        generator = torch.Generator().manual_seed(0)
        while True:
            order = torch.randperm(len(data), generator=generator)
            for i in range(0, len(data) - batch + 1, batch):
                yield data[order[i : i + batch]].to(device)

    config = trainer_config(settings, data.shape[1], device, model="bench", layer=layer)
    started = time.perf_counter()
    trainSAE(data=batches(), trainer_configs=[config], steps=settings["steps"], device=str(device))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--sae-steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = bench_config(args.d_model, args.n_layers, args.tokens, args.sae_steps)
    device = resolve_device(config["device"])
    layers = list(range(args.n_layers))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_corpus(config["corpus"], config["probes"], tmp / "corpus")
        model_dir = tmp / "model"
        train_checkpoint(model_spec(config, "bench"), 4, tmp / "corpus/tokens.h5", tmp / "corpus/tokenizer", model_dir)
        bare, cached = [], []
        for _ in range(args.repeats):
            bare.append(bare_forward_seconds(model_dir, tmp / "corpus/tokens.h5", config, device))
            started = time.perf_counter()
            cache_training_activations(
                model_dir, tmp / "corpus/tokens.h5", layers, tmp / "train.h5", model_name="bench", step=4,
                batch_size=config["activations"]["batch_size"], max_tokens=args.tokens, device=device,
            )
            cached.append(time.perf_counter() - started)
        settings = sae_settings(config, "bench")
        ours, theirs = [], []
        for _ in range(args.repeats):
            metrics = train_sae(tmp / "train.h5", settings, tmp / "sae", model="bench", layer=1, cell="bench/L1", device=device)
            ours.append(settings["steps"] * settings["batch_size"] / metrics["tokens_per_second"])
            theirs.append(trainsae_seconds(tmp / "train.h5", 1, settings, device))
    tokens_trained = settings["steps"] * settings["batch_size"]
    rows = [
        ("activation caching vs bare forward", args.tokens / min(cached), args.tokens / min(bare)),
        ("SAE job vs trainSAE (in-memory)", tokens_trained / min(ours), tokens_trained / min(theirs)),
    ]
    print(f"device={device} d_model={args.d_model} layers={args.n_layers} tokens={args.tokens} "
          f"sae_steps={args.sae_steps} best of {args.repeats}")
    print(f"{'comparison':40s} {'ours tok/s':>12s} {'baseline tok/s':>15s} {'ratio':>7s}")
    for name, ours_rate, base_rate in rows:
        print(f"{name:40s} {ours_rate:12.0f} {base_rate:15.0f} {ours_rate / base_rate:7.2f}")


if __name__ == "__main__":
    main()
