"""Throughput ratios measured side by side in one run (one command: python benchmarks/run.py).

A GPT-NeoX model with random weights (no download, no training) of the chosen shape (`--shape pythia-70m` or
`pythia-410m`, from featurebirth.costs.PYTHIA; or a tiny one for the CPU), random token ids.

1. Capturing every layer's activations into host memory (hooks, float16 copies) against a bare forward
   pass of the same model over the same batches.                          target: ratio >= 0.9
2. The SAE loop on activations held in memory against dictionary-learning's trainSAE fed from the same
   tensor, same trainer and batch size.                                   target: ratio >= 0.9
3. A stream-mode SAE job (truncated forward pass per chunk, shuffled buffer, lockstep SAEs, state saves,
   progress) against the bare truncated forward pass plus the trainer's updates on the same tokens,
   sequential batches, nothing else.                                      target: ratio >= 0.85
4. One stream-mode job training every layer against one job training one layer: tokens per second
   of SAE training summed over the job's SAEs (one forward pass feeds all).   expect > 1
5. One stream-mode job training two SAE seeds of the last layer against one training one seed: tokens per
   second summed over the job's SAEs (the forward pass and the buffer are shared). expect > 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml
from transformers import GPTNeoXForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))

from featurebirth import layout  # noqa: E402
from featurebirth.activations import layer_activations  # noqa: E402
from featurebirth.config import sae_training_settings, validate_config  # noqa: E402
from featurebirth.corpus import SAE_SPLIT  # noqa: E402
from featurebirth.costs import PYTHIA  # noqa: E402
from featurebirth.models import forward_dtype, load_model, load_truncated, resolve_device  # noqa: E402
from featurebirth.sae import build_trainer, norm_factor, train_layer_group, train_sae, trainer_config  # noqa: E402
from featurebirth.toy_models import neox_config  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHAPES = {"tiny": (4, 128), **{name: (size.n_layers, size.d_model) for name, size in PYTHIA.items()}}
HEAD_DIM = 64  # Pythia-70m and -410m: 512 / 8 and 1024 / 16
VOCAB = 50304  # Pythia's padded GPT-NeoX-20B vocabulary


def bench_config(args: argparse.Namespace) -> dict:
    """The embedded default's config with one model of the benchmark's shape, the budget and the buffer given."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["corpus"]["lexicon"] = str(REPO / raw["corpus"]["lexicon"])
    raw["corpus"].update(seq_len=args.seq_len, n_sae_sequences=args.tokens)  # only validated: the job reads random ids
    raw["models"] = {"bench": {"source": "toy", "d_model": SHAPES[args.shape][1], "n_layers": SHAPES[args.shape][0]}}
    raw["models"]["bench"]["n_heads"] = max(1, SHAPES[args.shape][1] // HEAD_DIM)
    raw.setdefault("sae", {}).update(tokens=args.tokens, batch_size=args.sae_batch, max_epochs=1, save_every_minutes=10)
    raw["sae"]["dead_feature_tokens"] = 10_000_000  # trainSAE cannot set the trainers' window: its default, both sides
    raw.setdefault("activations", {}).update(
        mode="stream", buffer_tokens=args.buffer_tokens, batch_size=args.forward_batch
    )
    return validate_config(raw)


def random_checkpoint(config: dict, folder: Path) -> Path:
    """A random-weight GPT-NeoX checkpoint of the benchmark's shape, saved like a toy checkpoint."""
    spec = config["models"]["bench"]
    model = GPTNeoXForCausalLM(neox_config(spec, VOCAB, config["corpus"]["seq_len"], 0))
    model.save_pretrained(folder)
    return folder


def random_tokens(path: Path, rows: int, seq_len: int) -> torch.Tensor:
    """A token file whose SAE split is `rows` rows of random ids."""
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(rows, seq_len), dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset(SAE_SPLIT, data=ids.astype(np.int32))
    return torch.from_numpy(ids)


def timed(function, *args, **kwargs) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


@torch.inference_mode()
def bare_forward(model: torch.nn.Module, ids: torch.Tensor, batch: int) -> None:
    """The same batches through the model, keeping nothing."""
    device = next(model.parameters()).device
    for start in range(0, len(ids), batch):
        model.gpt_neox(input_ids=ids[start : start + batch].to(device), use_cache=False)


def trainsae(activations: torch.Tensor, settings: dict, device: torch.device) -> None:
    """dictionary-learning's trainSAE on the same tokens, held in memory as one float32 tensor."""
    from dictionary_learning.training import trainSAE

    data = activations.float() / norm_factor(activations)
    batch = settings["batch_size"]
    batches = (data[i : i + batch].to(device) for i in range(0, len(data) - batch + 1, batch))
    config = trainer_config(settings, data.shape[1], device, model="bench", layer=0)
    trainSAE(data=batches, trainer_configs=[config], steps=settings["updates"], device=str(device))


def bare_stream(checkpoint: Path, ids: torch.Tensor, layer: int, settings: dict, device: torch.device) -> None:
    """The floor of a stream job: the truncated forward pass over the tokens, then the trainer's updates on them
    in order (no shuffle, no checks, no state), in chunks of the same size."""
    recipe, batch = settings["sae"], settings["sae"]["batch_size"]
    model, _ = load_truncated(checkpoint, device, forward_dtype(device, settings["gpu_dtype"]), layer)
    trainer = build_trainer(trainer_config(recipe, model.config.hidden_size, device, model="bench", layer=layer))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    exclude = settings["tokens"]["exclude_first"]
    rows = max(1, settings["buffer"]["buffer_tokens"] // (ids.shape[1] - exclude))
    update = 0
    for start in range(0, len(ids), rows):
        chunk = layer_activations(model, ids[start : start + rows], [layer], settings["forward_batch_size"], exclude)[
            layer
        ]
        for i in range(0, len(chunk) - batch + 1, batch):
            if update == recipe["updates"]:
                return
            with autocast:
                trainer.update(update, chunk[i : i + batch].float().to(device))
            update += 1


def job(checkpoint: Path, tokens: Path, settings: dict, results: str, layers: list[int], seeds=()) -> float:
    """Seconds of one stream-mode SAE job over `layers` (and `seeds`; none: the recipe's seed alone)."""
    manifest = layout.sae_group(results, "bench", 0, layout.group_name(layers, seeds))
    return timed(
        train_layer_group, checkpoint, tokens, settings, manifest, model="bench", step=0, save_every_minutes=10
    )[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--tokens", type=int, default=2**17, help="SAE budget (tokens), one pass")
    parser.add_argument("--sae-batch", type=int, default=1024)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--buffer-tokens", type=int, default=2**15)
    parser.add_argument("--forward-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    config = bench_config(args)
    settings = sae_training_settings(config, "bench")
    device = resolve_device(settings["device"])
    n_layers = config["models"]["bench"]["n_layers"]
    exclude = settings["tokens"]["exclude_first"]
    rows = -(-args.tokens // (args.seq_len - exclude)) + 2 * max(1, args.buffer_tokens // args.seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = random_checkpoint(config, Path(tmp) / "checkpoint")
        tokens = Path(layout.corpus_file(tmp, "text_sae"))  # where real text's SAE part lives
        ids = random_tokens(tokens, rows, args.seq_len)
        model = load_model(checkpoint, device, forward_dtype(device, settings["gpu_dtype"]))
        sample = ids[: -(-args.tokens // args.seq_len)]
        forward_batch = settings["forward_batch_size"]
        bare = min(timed(bare_forward, model, sample, forward_batch)[0] for _ in range(args.repeats))
        every_layer = list(range(n_layers))
        capture = min(
            timed(layer_activations, model, sample, every_layer, forward_batch, 0)[0] for _ in range(args.repeats)
        )
        held = layer_activations(model, sample, [0], forward_batch, exclude)[0]
        del model
        recipe = settings["sae"]
        ours = min(
            timed(train_sae, held, recipe, device, model="bench", layer=0, cell="bench")[0] for _ in range(args.repeats)
        )
        theirs = min(timed(trainsae, held, recipe, device)[0] for _ in range(args.repeats))
        floor = min(timed(bare_stream, checkpoint, ids, 0, settings, device)[0] for _ in range(args.repeats))
        streamed = min(job(checkpoint, tokens, settings, f"{tmp}/one{i}", [0]) for i in range(args.repeats))
        deepest = min(job(checkpoint, tokens, settings, f"{tmp}/last{i}", [n_layers - 1]) for i in range(args.repeats))
        every = job(checkpoint, tokens, settings, f"{tmp}/all", list(range(n_layers)))
        last = [n_layers - 1]
        seeds = [recipe["seed"], recipe["seed"] + 1]
        two_seeds = min(job(checkpoint, tokens, settings, f"{tmp}/seeds{i}", last, seeds) for i in range(args.repeats))
    trained = recipe["updates"] * recipe["batch_size"]
    rows_out = [
        ("capture every layer vs bare forward", sample.numel() / capture, sample.numel() / bare),
        ("SAE loop vs trainSAE (held in memory)", trained / ours, trained / theirs),
        ("stream job (layer 0) vs forward + updates", trained / streamed, trained / floor),
        (f"stream job: {n_layers} layers vs last layer alone", trained * n_layers / every, trained / deepest),
        ("stream job: 2 seeds vs 1 seed (last layer)", trained * 2 / two_seeds, trained / deepest),
    ]
    print(
        f"device={device} shape={args.shape} (d_model {config['models']['bench']['d_model']}, {n_layers} layers)"
        f" budget={args.tokens} sae_batch={args.sae_batch} buffer={args.buffer_tokens} seq_len={args.seq_len}"
        f" best of {args.repeats} (the all-layer job: one run)"
    )
    print(f"{'comparison':48s} {'ours tok/s':>12s} {'baseline tok/s':>15s} {'ratio':>7s}")
    for name, ours_rate, base_rate in rows_out:
        print(f"{name:48s} {ours_rate:12.0f} {base_rate:15.0f} {ours_rate / base_rate:7.2f}")


if __name__ == "__main__":
    main()
