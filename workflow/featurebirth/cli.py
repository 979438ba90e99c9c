"""Command-line entry points: one subcommand per workflow stage, called by the Snakemake rules.

Each stage takes its settings as one JSON object (`--settings`), built from the validated config
by one function in `featurebirth.config`; defaults live in the config schema only. Paths come
from the rule (its inputs and outputs, themselves from `featurebirth.layout`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path

from .config import STEP_FIGURES
from .layout import FIGURES, analysis_path, parse_layer_group, results_of

log = logging.getLogger("featurebirth")


def _json(text: str) -> dict:
    return json.loads(text)


def cmd_corpus(args: argparse.Namespace) -> None:
    from .corpus import build_corpus

    build_corpus(args.settings["corpus"], args.settings["probes"], args.out_dir)


def cmd_eval_split(args: argparse.Namespace) -> None:
    from .corpus import build_eval_split

    build_eval_split(args.settings["corpus"], args.tokenizer, args.out_dir)


def cmd_probes(args: argparse.Namespace) -> None:
    from .corpus import build_probes

    build_probes(args.settings["corpus"], args.settings["probes"], args.out_dir)


def cmd_fetch_text(args: argparse.Namespace) -> None:
    from .text import fetch_text

    hub = args.settings["hub"]
    found = fetch_text(args.settings, hub["cache_dir"], hub["offline_prefetch"], args.out)
    log.info("%d file(s), about %d tokens: %s", len(found["files"]), found["estimated_tokens"], found["files"])


def cmd_tokenize_text(args: argparse.Namespace) -> None:
    from .models import load_tokenizer
    from .text import tokenize_text

    outputs = {"sae": args.sae, "eval": args.eval, "probe": args.probe}
    sizes = tokenize_text(args.source, load_tokenizer(args.tokenizer), args.settings, outputs)
    log.info("packed tokens per part: %s", sizes)


def cmd_check_text(args: argparse.Namespace) -> None:
    from .models import load_tokenizer
    from .text import check_text

    checked = check_text(args.split, args.eval, load_tokenizer(args.tokenizer), args.settings, args.model, args.out)
    log.info("%s: lexicon and budget checked against the text: %s", args.model, checked)


def cmd_mine_probes(args: argparse.Namespace) -> None:
    from .mining import mine_probes
    from .models import load_tokenizer

    found = mine_probes(args.probe, load_tokenizer(args.tokenizer), args.settings, args.out, args.record)
    log.info("lexicon words with contexts per category: %s", found["words_with_contexts"])
    missing = [word for word, entry in found["words"].items() if entry["contexts"] == 0]
    if missing:
        log.warning("%d lexicon word(s) never occur in the probe-mining part: %s", len(missing), missing)
    if found["too_few_words"]:
        log.warning("categories with fewer than two words with contexts (not scored): %s", found["too_few_words"])


def cmd_train_model(args: argparse.Namespace) -> None:
    from .toy_models import train_checkpoint

    spec = {**args.settings, "name": args.model}
    metadata = train_checkpoint(spec, args.step, args.tokens, args.tokenizer, args.out)
    log.info(
        "trained %s to step %d: %s",
        args.model,
        args.step,
        {k: v for k, v in metadata.items() if k != "train_loss_curve"},
    )


def cmd_prefetch(args: argparse.Namespace) -> None:
    from .hub import prefetch

    hub = args.settings["hub"]
    pointer = prefetch(args.settings["model"], args.step, hub["cache_dir"], args.out, offline=hub["offline_prefetch"])
    log.info("%s %s is in %s", pointer["repo"], pointer["revision"], pointer["snapshot"])


def cmd_train_saes(args: argparse.Namespace) -> None:
    from .sae import train_layer_group

    manifest = train_layer_group(
        args.checkpoint,
        args.tokens,
        args.settings,
        args.manifest,
        model=args.model,
        step=args.step,
        save_every_minutes=args.save_every_minutes,
    )
    log.info("trained the SAEs of %s step %d, layers %s", args.model, args.step, manifest["layers"])


def cmd_score(args: argparse.Namespace) -> None:
    from .score import score_step

    scores = score_step(
        args.checkpoint,
        args.probes,
        args.eval_tokens,
        args.saes,
        args.layers,
        args.settings,
        args.out,
        model=args.model,
        step=args.step,
        mined=args.mined,
    )
    words = scores["probe_words"].to_series()
    for (probe_set, category), n in words[words < 2].items():
        log.warning(
            "probe set %s: category %s has %d word(s) with contexts, fewer than two: not scored", probe_set, category, n
        )
    sets = scores["probe_set"].values.tolist()
    for layer, seed in itertools.product(scores["layer"].values, scores["seed"].values):
        cell = scores.sel(layer=layer, seed=seed)
        log.info(
            "%s step %d layer %d seed %d: variance explained %.3f, scores %s",
            args.model,
            args.step,
            layer,
            seed,
            float(cell["variance_explained"]),
            {p: dict(zip(args.settings["categories"], cell["score"].sel(probe_set=p).values.round(3))) for p in sets},
        )


def cmd_cube(args: argparse.Namespace) -> None:
    from .cube import build_cube, opened_scores, write_cube
    from .io import read_json

    text_frequency = read_json(args.text_check)["text_frequency"] if args.text_check else None
    with opened_scores(args.scores) as scored:
        cube = build_cube(scored, args.settings, text_frequency)
    write_cube(cube, args.out)
    log.info("cube of %d cells written to %s", cube.attrs["n_cells"], args.out)


def cmd_tables(args: argparse.Namespace) -> None:
    from .analysis import analyse_probe_sets, write_analyses
    from .cube import open_cube
    from .tables import write_tables

    cube = open_cube(args.cube)
    analyses = analyse_probe_sets(cube, args.settings)
    write_analyses(analyses, args.analysis)
    write_tables(cube, analyses, args.out_dir)
    log.info("analysis written to %s, tables beside it", args.analysis)


def cmd_figure(args: argparse.Namespace) -> None:
    from . import figures
    from .analysis import read_analysis
    from .cube import open_cube, probe_set_view

    cube, dpi = open_cube(args.cube), args.settings["dpi"]
    probe_set = figures.drawn_probe_set(cube, args.settings["probe_set"])
    cube, analysis = probe_set_view(cube, probe_set), read_analysis(args.analysis, probe_set)
    if args.kind in STEP_FIGURES:
        steps = figures.shown_steps([int(s) for s in cube["step"].values], args.settings["steps"])
    if args.kind in PER_MODEL_FIGURES and args.model not in cube["model"].values:
        raise SystemExit(f"figure {args.kind}: --model {args.model!r} is not in the cube {list(cube['model'].values)}")
    if args.kind == "heatmaps":
        figures.heatmaps(cube, analysis, args.model, args.out, dpi)
    elif args.kind == "quality":
        figures.quality_heatmaps(cube, analysis, args.model, args.out, dpi)
    elif args.kind == "emergence":
        figures.emergence_curves(cube, analysis, args.out, dpi)
    elif args.kind == "scale":
        figures.scale(cube, analysis, steps, args.out, dpi)
    elif args.kind == "lineage":
        figures.lineage(cube, args.settings["model"], args.settings["categories"], args.out, dpi)
    else:
        figures.reactivation(cube, analysis, steps, args.out, dpi)


def cmd_summary(args: argparse.Namespace) -> None:
    from .analysis import analyse, read_analyses
    from .cube import open_cube, probe_set_view
    from .summary import print_summary

    cube = open_cube(args.cube)
    analyses = read_analyses(args.analysis or analysis_path(results_of(args.cube)))
    overrides = {name: value for name, value in vars(args).items() if name in OVERRIDES and value is not None}
    for probe_set, analysis in analyses.items():
        view = probe_set_view(cube, probe_set)
        if overrides:
            analysis = analyse(view, {**analysis.settings, **overrides})
        print_summary(view, analysis, probe_set)


def cmd_plan(args: argparse.Namespace) -> None:
    from .plan import print_plan

    print_plan(args.configfile)


PER_MODEL_FIGURES = ("heatmaps", "quality")
OVERRIDES = {
    "tau": float,
    "margin": float,
    "tau_low": float,
    "persistence": int,
    "min_variance_explained": float,
    "return_cosine": float,
    "min_ce_recovered": float,
    "max_ce_increase": float,
}


def _cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="configured model name")
    parser.add_argument("--step", type=int, required=True, help="training step of the checkpoint")


def _settings_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--settings", type=_json, required=True, help=f"JSON: {what} (featurebirth.config)")


def build_parser() -> argparse.ArgumentParser:
    """The `featurebirth` argument parser with one subparser per stage."""
    parser = argparse.ArgumentParser(prog="featurebirth", description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(handler=handler)
        return command

    p = add("corpus", cmd_corpus, "generate the planted corpus (train and SAE splits), its tokenizer and lexicon")
    _settings_argument(p, "corpus_settings")
    p.add_argument("--out-dir", type=Path, required=True, help="the corpus folder")

    p = add("eval-split", cmd_eval_split, "generate the held-out evaluation split")
    _settings_argument(p, "eval_split_settings")
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True, help="the corpus folder")

    p = add("probes", cmd_probes, "write the probe set")
    _settings_argument(p, "probe_settings")
    p.add_argument("--out-dir", type=Path, required=True, help="the corpus folder")

    p = add("fetch-text", cmd_fetch_text, "find or fetch the text files, only as many shards as the budgets need")
    _settings_argument(p, "text_fetch_settings")
    p.add_argument("--out", type=Path, required=True, help="the pointer listing the files")

    p = add("tokenize-text", cmd_tokenize_text, "split the text by document, tokenize once, pack into contexts")
    _settings_argument(p, "text_tokenize_settings")
    p.add_argument("--source", type=Path, required=True, help="the fetch's pointer")
    p.add_argument("--tokenizer", type=Path, required=True, help="checkpoint folder or hub pointer of the tokenizer")
    for part in ("sae", "eval", "probe"):
        p.add_argument(f"--{part}", type=Path, required=True, help=f"the packed {part} part (HDF5)")

    p = add("check-text", cmd_check_text, "check one model's lexicon and SAE budget against the text, before its SAEs")
    _settings_argument(p, "text_check_settings")
    p.add_argument("--model", required=True)
    p.add_argument("--split", type=Path, required=True, help="the packed SAE-training part")
    p.add_argument("--eval", type=Path, required=True, help="the packed evaluation part")
    p.add_argument("--tokenizer", type=Path, required=True, help="the model's checkpoint folder or hub pointer")
    p.add_argument("--out", type=Path, required=True, help="the record of the check")

    p = add("mine-probes", cmd_mine_probes, "mine each lexicon word's contexts, and frequency-matched controls")
    _settings_argument(p, "mining_settings")
    p.add_argument("--probe", type=Path, required=True, help="the packed probe-mining part (HDF5)")
    p.add_argument("--tokenizer", type=Path, required=True, help="checkpoint folder or hub pointer of the tokenizer")
    p.add_argument("--out", type=Path, required=True, help="the mined windows (HDF5)")
    p.add_argument("--record", type=Path, required=True, help="what was found per word (JSON)")

    p = add("train-model", cmd_train_model, "train a toy GPT-NeoX to one step and save it")
    _cell_arguments(p)
    _settings_argument(p, "model_spec")
    p.add_argument("--tokens", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = add("prefetch", cmd_prefetch, "fetch one hub revision into the cache and write its pointer")
    _cell_arguments(p)
    _settings_argument(p, '{"model": model_spec, "hub": hub section}')
    p.add_argument("--out", type=Path, required=True)

    p = add("train-saes", cmd_train_saes, "train the SAEs of a layer group from one forward pass")
    _cell_arguments(p)
    _settings_argument(p, "sae_training_settings")
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder or hub pointer")
    p.add_argument(
        "--tokens", type=Path, required=True, help="the corpus token ids (toy) or the SAE split's text (hub)"
    )
    p.add_argument("--manifest", type=Path, required=True, help="the group's manifest (names the layers; written last)")
    p.add_argument("--save-every-minutes", type=float, required=True, help="training-state interval (sae section)")

    p = add("score", cmd_score, "score every layer of one checkpoint and measure its SAEs' quality")
    _cell_arguments(p)
    _settings_argument(p, "scoring_settings")
    p.add_argument("--layers", type=parse_layer_group, required=True, help="the studied layers, e.g. 0-1-2")
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder or hub pointer")
    p.add_argument("--probes", type=Path, required=True, help="the probe set (TSV)")
    p.add_argument(
        "--eval-tokens",
        type=Path,
        required=True,
        help="the corpus token ids (toy) or the evaluation split's text (hub)",
    )
    p.add_argument("--mined", type=Path, help="real text: the mined probes (HDF5), scored as the probe set 'mined'")
    p.add_argument("--saes", type=Path, nargs="+", required=True, help="the manifests of the SAE groups")
    p.add_argument("--out", type=Path, required=True)

    p = add("cube", cmd_cube, "gather every scored checkpoint into one netCDF cube")
    _settings_argument(p, "cube_settings")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--text-check", type=Path, help="real text: the tokenizer model's check (measured frequencies)")
    p.add_argument("scores", type=Path, nargs="+", help="the (model, step) score files")

    p = add("tables", cmd_tables, "the analysis of the cube, and its tables")
    _settings_argument(p, "the analysis section of the config")
    p.add_argument("--cube", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True, help="the tables folder")
    p.add_argument("--analysis", type=Path, required=True, help="where the analysis itself is written (netCDF)")

    p = add("figure", cmd_figure, "one figure of the cube and its analysis")
    p.add_argument("kind", choices=[*PER_MODEL_FIGURES, *FIGURES])
    _settings_argument(p, "figure_settings")
    p.add_argument("--cube", type=Path, required=True)
    p.add_argument("--analysis", type=Path, required=True)
    p.add_argument("--model", help="the model (heatmaps)")
    p.add_argument("--out", type=Path, required=True)

    p = add("summary", cmd_summary, "print each category's emergence step, layer, scale threshold and reactivations")
    p.add_argument("cube", type=Path, help="the cube file")
    p.add_argument(
        "--analysis", type=Path, help="the analysis file (default: the one the workflow writes beside the cube)"
    )
    for name, kind in OVERRIDES.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"re-analyse with another analysis.{name}")

    p = add(
        "plan", cmd_plan, "the cost plan of a config: jobs, GPU-hours, memory, disk, downloads (reads the config only)"
    )
    p.add_argument("--configfile", type=Path, required=True, help="the workflow config (YAML)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, set up logging and CPU threads, run one stage."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch  # only the stages that run models pay for importing torch

        torch.set_num_threads(args.threads)
    args.handler(args)
