"""Throughput ratios measured side by side in one run (one command: python benchmarks/run.py).

1. Capturing every layer's activations into host memory (hooks, float16 copies) against a bare
   forward pass of the same model over the same batches.          target: ratio >= 0.9
2. The SAE job's training loop (shuffled in-memory batches, divergence checks) against
   dictionary-learning's trainSAE fed from the same in-memory tensor, same trainer and batches.
                                                                   target: ratio >= 0.9
3. One SAE job training every layer of a checkpoint (one forward pass) against one job per
   layer (a forward pass each), tokens trained per second.         expect > 1 with several layers
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

from featurebirth import layout  # noqa: E402
from featurebirth.activations import layer_activations, token_rows  # noqa: E402
from featurebirth.config import model_spec, sae_training_settings, validate_config  # noqa: E402
from featurebirth.corpus import build_corpus  # noqa: E402
from featurebirth.models import load_model, resolve_device  # noqa: E402
from featurebirth.sae import norm_factor, train_layer_group, train_sae, trainer_config  # noqa: E402
from featurebirth.toy_models import train_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def bench_config(d_model: int, n_layers: int, tokens: int, sae_steps: int) -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["corpus"]["lexicon"] = str(REPO / raw["corpus"]["lexicon"])
    raw["models"] = {"bench": {"source": "toy", "d_model": d_model, "n_layers": n_layers, "n_heads": 4}}
    raw["corpus"]["n_sae_sequences"] = tokens // raw["corpus"]["seq_len"]
    raw["activations"]["max_tokens"] = tokens
    raw["sae"]["steps"] = sae_steps
    # trainSAE cannot set the trainers' dead-feature window; use its default on both sides
    raw["sae"]["dead_feature_tokens"] = 10_000_000
    return validate_config(raw)


def manifest(results: str, layers: list[int]) -> Path:
    """The manifest of an SAE job of the benchmark model's layer group (it names the layers)."""
    return Path(layout.sae_group(results, "bench", 4, layout.layer_group(layers)))


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


@torch.inference_mode()
def bare_forward(model: torch.nn.Module, ids: torch.Tensor, batch: int) -> None:
    """The same batches through the model, keeping nothing."""
    for start in range(0, len(ids), batch):
        model.gpt_neox(input_ids=ids[start : start + batch].to(next(model.parameters()).device))


def trainsae(activations: torch.Tensor, settings: dict, device: torch.device) -> None:
    """dictionary-learning's trainSAE on the same tokens, held in memory as one float32 tensor."""
    from dictionary_learning.training import trainSAE

    data = activations.float() / norm_factor(activations)
    batch = settings["batch_size"]

    def batches():
        generator = torch.Generator().manual_seed(0)
        while True:
            order = torch.randperm(len(data), generator=generator)
            for i in range(0, len(data) - batch + 1, batch):
                yield data[order[i : i + batch]].to(device)

    config = trainer_config(settings, data.shape[1], device, model="bench", layer=1)
    trainSAE(data=batches(), trainer_configs=[config], steps=settings["steps"], device=str(device))


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
    settings = sae_training_settings(config, "bench")
    layers = list(range(args.n_layers))
    with tempfile.TemporaryDirectory() as tmp:
        tokens, tokenizer = layout.corpus_file(tmp, "tokens"), layout.corpus_file(tmp, "tokenizer")
        build_corpus(config["corpus"], config["probes"], layout.corpus_dir(tmp))
        checkpoint = Path(layout.toy_checkpoint(tmp, "bench", 4))
        train_checkpoint(model_spec(config, "bench"), 4, tokens, tokenizer, checkpoint)
        model = load_model(checkpoint, device)
        ids = token_rows(tokens, checkpoint, "sae", args.tokens, config["corpus"]["seq_len"])
        batch = config["activations"]["batch_size"]
        bare = [timed(bare_forward, model, ids, batch)[0] for _ in range(args.repeats)]
        captured = [timed(layer_activations, model, ids, layers, batch) for _ in range(args.repeats)]
        activations = captured[0][1][1]
        ours = [
            timed(train_sae, activations, settings["sae"], device, model="bench", layer=1, cell="bench")[0]
            for _ in range(args.repeats)
        ]
        theirs = [timed(trainsae, activations, settings["sae"], device)[0] for _ in range(args.repeats)]
        grouped = timed(train_layer_group, checkpoint, tokens, settings, manifest(tmp, layers), model="bench", step=4)[
            0
        ]
        single = sum(
            timed(train_layer_group, checkpoint, tokens, settings, manifest(tmp, [layer]), model="bench", step=4)[0]
            for layer in layers
        )
    trained = settings["sae"]["steps"] * settings["sae"]["batch_size"]
    rows = [
        ("capture every layer vs bare forward", ids.numel() / min(t for t, _ in captured), ids.numel() / min(bare)),
        ("SAE loop vs trainSAE (in-memory)", trained / min(ours), trained / min(theirs)),
        (
            f"one job, {len(layers)} layers vs one job per layer",
            trained * len(layers) / grouped,
            trained * len(layers) / single,
        ),
    ]
    print(
        f"device={device} d_model={args.d_model} layers={args.n_layers} tokens={args.tokens} "
        f"sae_steps={args.sae_steps} best of {args.repeats} (the job comparison: one run each)"
    )
    print(f"{'comparison':44s} {'ours tok/s':>12s} {'baseline tok/s':>15s} {'ratio':>7s}")
    for name, ours_rate, base_rate in rows:
        print(f"{name:44s} {ours_rate:12.0f} {base_rate:15.0f} {ours_rate / base_rate:7.2f}")


if __name__ == "__main__":
    main()
