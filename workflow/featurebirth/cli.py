"""Command-line entry points: one subcommand per workflow stage, called by the Snakemake rules."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger("featurebirth")


def _spec(text: str) -> dict:
    return json.loads(text)


def cmd_corpus(args: argparse.Namespace) -> None:
    from .corpus import build_corpus

    spec = args.spec
    build_corpus(spec["corpus"], spec["probes"], args.out)


def cmd_train_model(args: argparse.Namespace) -> None:
    from .toy_models import train_checkpoint

    spec = {**args.spec, "name": args.model}
    metadata = train_checkpoint(spec, args.step, args.tokens, args.tokenizer, args.out)
    log.info("trained %s to step %d: %s", args.model, args.step, {k: v for k, v in metadata.items() if k != "train_loss_curve"})


def cmd_cache_train(args: argparse.Namespace) -> None:
    from .activations import cache_training_activations
    from .models import resolve_device

    n_tokens = cache_training_activations(
        args.model_dir, args.tokens, args.layers, args.out,
        model_name=args.model, step=args.step, batch_size=args.batch_size,
        max_tokens=args.max_tokens, device=resolve_device(args.device), gpu_dtype=args.gpu_dtype,
    )
    log.info("cached %d tokens x %d layers for %s step %d", n_tokens, len(args.layers), args.model, args.step)


def cmd_cache_probes(args: argparse.Namespace) -> None:
    from .activations import cache_probe_activations
    from .models import resolve_device

    n_items = cache_probe_activations(
        args.model_dir, args.probes, args.out, model_name=args.model, step=args.step,
        batch_size=args.batch_size, device=resolve_device(args.device), gpu_dtype=args.gpu_dtype,
    )
    log.info("cached %d probe items for %s step %d", n_items, args.model, args.step)


def cmd_sae(args: argparse.Namespace) -> None:
    from .models import resolve_device
    from .sae import train_sae

    cell = f"{args.model}/step{args.step}/layer{args.layer}"
    metrics = train_sae(
        args.cache, args.settings, args.out, model=args.model, layer=args.layer, cell=cell,
        device=resolve_device(args.device),
    )
    log.info("trained SAE %s: %s", cell, metrics)


def _cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="configured model name")
    parser.add_argument("--step", type=int, required=True, help="training step of the checkpoint")


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--gpu-dtype", default="float16", choices=["float16", "bfloat16"])


def build_parser() -> argparse.ArgumentParser:
    """The `featurebirth` argument parser with one subparser per stage."""
    parser = argparse.ArgumentParser(prog="featurebirth", description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(handler=handler)
        return command

    p = add("corpus", cmd_corpus, "generate the planted corpus, tokenizer and probe set")
    p.add_argument("--spec", type=_spec, required=True, help="JSON with the corpus and probes config sections")
    p.add_argument("--out", type=Path, required=True)

    p = add("train-model", cmd_train_model, "train a toy GPT-NeoX to one step and save it")
    _cell_arguments(p)
    p.add_argument("--spec", type=_spec, required=True, help="JSON model spec (size and training recipe)")
    p.add_argument("--tokens", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = add("cache-train", cmd_cache_train, "cache SAE-training activations of every requested layer")
    _cell_arguments(p)
    _device_arguments(p)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--tokens", type=Path, required=True)
    p.add_argument("--layers", type=int, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="HDF5 cache, one dataset per layer")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--max-tokens", type=int, required=True)

    p = add("cache-probes", cmd_cache_probes, "cache every layer's activation at each probe target")
    _cell_arguments(p)
    _device_arguments(p)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--probes", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch-size", type=int, required=True)

    p = add("sae", cmd_sae, "train one cell's sparse autoencoder")
    _cell_arguments(p)
    _device_arguments(p)
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--settings", type=_spec, required=True, help="JSON SAE recipe for this model")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, set up logging and CPU threads, run one stage."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.handler(args)
