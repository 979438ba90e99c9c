"""Dry-run planning time of the full Pythia suite (every size, all 154 revisions, every layer).

Times the plan of this workflow against plain Snakefiles of the same grid with one and with two
per-cell rules, side by side in one run, and prints the ratios. Two kinds of plan: `snakemake -n`,
which lists every job with its resources (captured, as a pipe would), and `snakemake -n --quiet rules`,
which prints the job count per rule only (Snakemake's advice for very large workflows: it skips
formatting every job). Each locally and through `--profile profiles/slurm` (the plain Snakefiles get
the same profile). Needs no SLURM and no network: `.venv/bin/python benchmarks/dry_run.py`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from featurebirth.config import grid, load_config  # noqa: E402

SUITE = {  # size: (n_layers, d_model)
    "pythia-14m": (6, 128),
    "pythia-31m": (6, 256),
    "pythia-70m": (6, 512),
    "pythia-160m": (12, 768),
    "pythia-410m": (24, 1024),
    "pythia-1b": (16, 2048),
    "pythia-1.4b": (24, 2048),
    "pythia-2.8b": (32, 2560),
    "pythia-6.9b": (32, 4096),
    "pythia-12b": (36, 5120),
}
ALL_STEPS = [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))

PLAIN = """
import yaml
cfg = yaml.safe_load(open("{config}"))
CELLS = [(m, s, l) for m, spec in cfg["models"].items() for s in cfg["steps"] for l in range(spec["n_layers"])]

rule all:
    input: [f"plain/{{m}}/step{{s}}/layer{{l}}.{last}" for m, s, l in CELLS]

rule cell:
    output: "plain/{{model}}/step{{step}}/layer{{layer}}.sae"
    shell: "touch {{output}}"
{second}
"""
SECOND = """
rule score:
    input: "plain/{model}/step{step}/layer{layer}.sae"
    output: "plain/{model}/step{step}/layer{layer}.score"
    shell: "touch {output}"
"""


def full_suite_config(path: Path) -> dict:
    """config/pythia.yaml extended to every size and all 154 revisions."""
    config = yaml.safe_load((REPO / "config" / "pythia.yaml").read_text())
    template = next(iter(config["models"].values()))
    config["models"] = {
        name: {**template, "repo": f"EleutherAI/{name}", "n_layers": depth, "d_model": width, "sae": {"expansion": 4}}
        for name, (depth, width) in SUITE.items()
    }
    config["steps"] = ALL_STEPS
    config["corpus"]["lexicon"] = str(REPO / config["corpus"]["lexicon"])
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(path)


# name: (the command as a user types it, the flags that make it after `snakemake all -n`)
PLANS = {"listing": ("snakemake -n", []), "summary": ("snakemake -n --quiet rules", ["--quiet", "rules", "progress"])}
PROFILES = {"local": ("", []), "slurm": (" --profile profiles/slurm", ["--profile", str(REPO / "profiles" / "slurm")])}


def time_plan(args: list[str], cwd: Path, repeats: int) -> float:
    """Best wall time of a dry run over `repeats` runs (it must succeed)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", "all", "-n", *args], cwd=cwd, capture_output=True, text=True
        )
        best = min(best, time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
    return best


def plan_times(tmp: Path, plan: str, profile: str, repeats: int) -> tuple[float, float, float]:
    """Plan times of this workflow and of the plain one- and two-rule Snakefiles, for one kind of plan and profile."""
    extra = PLANS[plan][1] + PROFILES[profile][1]
    ours = time_plan(
        [
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp / "ours"),
            "--configfile",
            str(tmp / "suite.yaml"),
            "--config",
            f"results={tmp / 'results'}",
            *extra,
        ],
        REPO,
        repeats,
    )
    return ours, time_plan(extra, tmp / "one", repeats), time_plan(extra, tmp / "two", repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--profiles",
        nargs="+",
        default=list(PROFILES),
        choices=list(PROFILES),
        help="plan locally (the workflow's default profile) and/or through profiles/slurm",
    )
    parser.add_argument(
        "--plans",
        nargs="+",
        default=list(PLANS),
        choices=list(PLANS),
        help="listing: `snakemake -n`, every job; summary: `snakemake -n --quiet rules`, counts per rule",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = full_suite_config(tmp / "suite.yaml")
        cells = len(grid(config))
        for name, second in (("one", ""), ("two", SECOND)):
            (tmp / name).mkdir()
            last = "score" if second else "sae"
            (tmp / name / "Snakefile").write_text(PLAIN.format(config=tmp / "suite.yaml", last=last, second=second))
        rows = [
            (plan, profile, *plan_times(tmp, plan, profile, args.repeats))
            for plan in args.plans
            for profile in args.profiles
        ]
    print(
        f"full Pythia suite: {len(config['models'])} sizes x {len(config['steps'])} steps, {cells} cells; "
        f"best of {args.repeats}"
    )
    for plan, profile, ours, plain_one, plain_two in rows:
        command = PLANS[plan][0] + PROFILES[profile][0]
        print(f"\n{command:50s} {'seconds':>8s} {'ours / this':>12s}")
        for label, seconds in (
            ("this workflow (SAE groups, score per checkpoint)", ours),
            ("plain Snakefile, one per-cell rule", plain_one),
            ("plain Snakefile, two per-cell rules", plain_two),
        ):
            print(f"{label:50s} {seconds:8.1f} {ours / seconds:12.2f}")


if __name__ == "__main__":
    main()
