"""Command-line entry points: one subcommand per workflow stage, called by the Snakemake rules."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Callable

from .config import grid

log = logging.getLogger("featurebirth")


def _spec(text: str) -> dict:
    return json.loads(text)


def _layer_list(text: str) -> list[int]:
    """'0-1-2' (the cache's file-name form) -> [0, 1, 2]."""
    return [int(part) for part in text.split("-")]


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
        seq_len=args.seq_len,
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


def cmd_prefetch(args: argparse.Namespace) -> None:
    from .hub import prefetch

    pointer = prefetch(args.spec, args.step, args.cache_dir, args.out, offline=args.offline)
    log.info("%s %s is in %s", pointer["repo"], pointer["revision"], pointer["snapshot"])


def cmd_score(args: argparse.Namespace) -> None:
    from .score import score_cell

    scores = score_cell(
        args.probes, args.sae_dir, args.out, model=args.model, step=args.step, layer=args.layer,
        categories=args.categories, settings=args.settings,
    )
    log.info("scored %s/step%d/layer%d: %s", args.model, args.step, args.layer,
             dict(zip(args.categories, scores["score"].values.round(3))))


def cmd_cube(args: argparse.Namespace) -> None:
    from .cube import build_cube, read_cells, write_cube
    from .layout import score_path

    config = args.config
    paths = [score_path(config["results"], m, s, layer) for m, s, layer in grid(config)]
    cells = read_cells(paths)
    frequency = {c: spec["frequency"] for c, spec in config["corpus"]["categories"].items()}
    cube = build_cube(cells, args.order["models"], config["steps"], args.order["categories"], frequency, config)
    write_cube(cube, args.out)
    log.info("cube of %d cells written to %s", len(cells), args.out)


def cmd_tables(args: argparse.Namespace) -> None:
    from .cube import open_cube
    from .tables import write_tables

    summary = write_tables(open_cube(args.cube), args.settings, args.out_dir)
    log.info("tables written to %s; %s", args.out_dir, {k: v for k, v in summary.items() if k != "categories"})


def cmd_figure(args: argparse.Namespace) -> None:
    from . import figures
    from .cube import cube_config, open_cube

    cube = open_cube(args.cube)
    config = cube_config(cube)
    settings, dpi = config["analysis"], config["figures"]["dpi"]
    steps = figures.shown_steps([int(s) for s in cube["step"].values], config["figures"]["steps"])
    if args.kind == "heatmaps":
        if args.model not in cube["model"].values:
            raise SystemExit(f"figure heatmaps: --model {args.model!r} is not in the cube {list(cube['model'].values)}")
        figures.heatmaps(cube, args.model, settings, args.out, dpi)
    elif args.kind == "emergence":
        figures.emergence_curves(cube, settings, args.out, dpi)
    elif args.kind == "scale":
        figures.scale(cube, settings, steps, args.out, dpi)
    else:
        figures.reactivation(cube, settings, steps, args.out, dpi)


def cmd_summary(args: argparse.Namespace) -> None:
    from .cube import cube_config, open_cube
    from .summary import print_summary

    cube = open_cube(args.cube)
    settings = {**cube_config(cube)["analysis"], **{k: v for k, v in vars(args).items() if k in OVERRIDES and v is not None}}
    print_summary(cube, settings)


OVERRIDES = ("tau", "margin", "tau_low", "persistence", "min_variance_explained", "return_cosine")


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
    p.add_argument("--tokens", type=Path, required=True, help="corpus tokens.h5 (toy) or sae.txt (hub)")
    p.add_argument("--seq-len", type=int, default=64, help="row length when --tokens is text")
    p.add_argument("--layers", type=_layer_list, required=True, help="layers to cache, e.g. 0-1-2")
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

    p = add("prefetch", cmd_prefetch, "fetch one hub revision into the cache and write its pointer")
    _cell_arguments(p)
    p.add_argument("--spec", type=_spec, required=True, help="JSON model spec (repo, revision pattern, tokens_per_step)")
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--offline", action="store_true", help="only look in the cache (HF_HUB_OFFLINE)")
    p.add_argument("--out", type=Path, required=True)

    p = add("score", cmd_score, "score one cell: category selectivity of its SAE features and the null")
    _cell_arguments(p)
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--probes", type=Path, required=True, help="the (model, step) probe activation cache")
    p.add_argument("--sae-dir", type=Path, required=True)
    p.add_argument("--categories", type=_spec, required=True, help="JSON list of categories, in cube order")
    p.add_argument("--settings", type=_spec, required=True, help="JSON scoring section of the config")
    p.add_argument("--out", type=Path, required=True)

    p = add("cube", cmd_cube, "gather every scored cell into one netCDF cube")
    p.add_argument("--config", type=_spec, required=True, help="JSON of the validated config")
    p.add_argument("--order", type=_spec, required=True, help='JSON {"models": [...], "categories": [...]}: cube order')
    p.add_argument("--out", type=Path, required=True)

    p = add("tables", cmd_tables, "emergence, emergence layer, scale and reactivation tables from the cube")
    p.add_argument("--cube", type=Path, required=True)
    p.add_argument("--settings", type=_spec, required=True, help="JSON analysis section of the config")
    p.add_argument("--out-dir", type=Path, required=True)

    p = add("figure", cmd_figure, "one figure of the cube (settings are read from the cube's config)")
    p.add_argument("kind", choices=["heatmaps", "emergence", "scale", "reactivation"])
    p.add_argument("--cube", type=Path, required=True)
    p.add_argument("--model", help="the model (heatmaps)")
    p.add_argument("--out", type=Path, required=True)

    p = add("summary", cmd_summary, "print each category's emergence step, layer, scale threshold and reactivations")
    p.add_argument("cube", type=Path, help="results/cube.nc")
    for name in OVERRIDES:
        p.add_argument(f"--{name.replace('_', '-')}", type=int if name == "persistence" else float,
                       help=f"override analysis.{name} stored in the cube")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, set up logging and CPU threads, run one stage."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch  # only the stages that run models pay for importing torch

        torch.set_num_threads(args.threads)
    args.handler(args)
