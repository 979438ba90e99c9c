"""The micro config through `snakemake --profile profiles/slurm` on a real single-node SLURM.

tests/slurm/cluster.sh starts munged, slurmctld and slurmd on this machine; the per-cell
jobs must run as SLURM jobs and give the same outputs as the local run. Where SLURM cannot
start, the test fails with the reason: it is never skipped.
"""

import json
import subprocess

import numpy as np
import pytest
import xarray as xr
import yaml

from conftest import JOB_ENV, REPO, TESTS, planned_jobs, snakemake
from featurebirth.config import grid, load_config

CLUSTER = TESTS / "slurm" / "cluster.sh"
GPU_RULES = ("cache_training_activations", "cache_probe_activations", "sae")
MICRO_CELLS = [("tiny-a", step, layer) for step in (0, 6) for layer in (0, 1)] + [
    ("tiny-b", step, layer) for step in (0, 6) for layer in (0, 2)
]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=120)
        pytest.fail(f"SLURM could not start: {started.stderr.strip() or started.stdout.strip()}")
    yield state
    subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=120)


def _slurm_jobs() -> dict[str, str]:
    """Every job the controller remembers: Snakemake's job comment (rule and wildcards) -> state."""
    listed = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%k|%T"],
                            capture_output=True, text=True, check=True, env=JOB_ENV).stdout
    return dict(line.split("|", 1) for line in listed.splitlines() if "|" in line)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, micro_run, tmp_path_factory):
    results = tmp_path_factory.mktemp("slurm-run") / "results"
    no_gpus = [f"{rule}:gpu=0" for rule in GPU_RULES]  # the test node has no GPU
    run = snakemake(
        "--profile", "profiles/slurm", "--configfile", str(TESTS / "micro.yaml"), "--config", f"results={results}",
        "--default-resources", "slurm_partition=debug", "slurm_account=",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--set-resources", *no_gpus,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return results, run.stdout + run.stderr


def test_per_cell_jobs_ran_as_slurm_jobs(slurm_run):
    _, log = slurm_run
    jobs = _slurm_jobs()
    for model, step, layer in MICRO_CELLS:
        for rule in ("sae", "score"):
            comment = f"rule_{rule}_wildcards_{model}_{step}_{layer}"
            assert jobs.get(comment) == "COMPLETED", (comment, sorted(jobs))
    submitted = log.count("has been submitted with SLURM jobid")
    # 4 checkpoints, 4 + 4 activation caches, 8 SAEs, 8 scores; corpus and aggregates stay local
    assert submitted == 28, submitted
    assert not any(key.startswith(("rule_cube", "rule_tables", "rule_figure", "rule_corpus")) for key in jobs)


def test_slurm_outputs_equal_the_local_run(slurm_run, micro_run):
    results, _ = slurm_run
    local, _, _ = micro_run
    for model, step, layer in MICRO_CELLS:
        cell = f"{model}/step{step}/layer{layer}"
        remote_metrics = json.loads((results / f"sae/{cell}/metrics.json").read_text())
        local_metrics = json.loads((local / f"sae/{cell}/metrics.json").read_text())
        for key in ("fraction_variance_explained", "l0", "dead_fraction", "reconstruction_mse", "tokens_trained"):
            assert remote_metrics[key] == local_metrics[key], (cell, key)
        with xr.open_dataset(results / f"scores/{cell}.nc") as remote, xr.open_dataset(local / f"scores/{cell}.nc") as mine:
            for name in ("score", "null", "best_feature", "feature_f1", "best_direction"):
                np.testing.assert_array_equal(remote[name].values, mine[name].values, err_msg=f"{cell} {name}")
    assert (results / "cube.nc").exists() and (results / "figures/emergence.png").exists()


def test_slurm_plan_asks_for_gpus_without_slurm():
    """The plan of the profile alone: GPU requests on the per-cell GPU rules, none on the rest."""
    plan = snakemake("-n", "--profile", "profiles/slurm", "--configfile", str(TESTS / "micro.yaml"),
                     "--config", "results=/nonexistent/plan-only")
    assert plan.returncode == 0, plan.stderr[-3000:]
    gpu_by_rule = {}
    for job in planned_jobs(plan.stdout):
        gpu_by_rule.setdefault(job["rule"], set()).add("gpu=1" in job["resources"].split(", "))
    for name in GPU_RULES:
        assert gpu_by_rule[name] == {True}, name
    for name in ("toy_model", "score"):
        assert gpu_by_rule[name] == {False}, name


def test_pythia_plan_with_the_slurm_profile_needs_neither_slurm_nor_network(tmp_path):
    """config/pythia.yaml, cut to its smallest and largest model and two steps, plans offline."""
    config = yaml.safe_load((REPO / "config" / "pythia.yaml").read_text())
    config["models"] = {name: config["models"][name] for name in ("pythia-70m", "pythia-12b")}
    config["steps"] = [0, 143000]
    cut = tmp_path / "pythia-cut.yaml"
    cut.write_text(yaml.safe_dump(config))
    plan = snakemake("-n", "--profile", "profiles/slurm", "--configfile", str(cut),
                     "--config", f"results={tmp_path / 'results'}", env={**JOB_ENV, "HF_HUB_OFFLINE": "1"})
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = planned_jobs(plan.stdout)

    def of(rule: str, model: str) -> list[dict]:
        return [job for job in jobs if job["rule"] == rule and job["wildcards"].get("model") == model]

    prefetch = [job for job in jobs if job["rule"] == "prefetch"]
    # 2 models x 2 steps; a local rule (the real-SLURM test shows local rules are never submitted)
    assert len(prefetch) == 4 and not any("gpu=1" in job["resources"] for job in prefetch)
    # a download needs little memory, whatever the model's compute floor
    assert all("mem_mb=2000" in job["resources"].split(", ") for job in prefetch)
    sae_12b = of("sae", "pythia-12b")
    assert len(sae_12b) == 2 * 36
    assert all(all(f in job["resources"] for f in ("gpu=1", "mem_mb=128000", "runtime=960")) for job in sae_12b)
    assert all("gpu=1" in job["resources"] for job in of("cache_training_activations", "pythia-70m"))
    assert not any("gpu=1" in job["resources"] for job in of("score", "pythia-70m"))


def test_pythia_config_has_the_real_suite():
    config = load_config(REPO / "config" / "pythia.yaml")
    depths = {name: spec["n_layers"] for name, spec in config["models"].items()}
    assert depths == {"pythia-70m": 6, "pythia-160m": 12, "pythia-410m": 24, "pythia-1b": 16, "pythia-1.4b": 24,
                      "pythia-2.8b": 32, "pythia-6.9b": 32, "pythia-12b": 36}
    assert len(config["steps"]) == 25 and config["steps"][0] == 0 and config["steps"][-1] == 143000
    assert not {50000, 58000} & set(config["steps"])
    assert all(spec["layers"] == "all" and spec["source"] == "hub" for spec in config["models"].values())
    assert len(grid(config)) == 25 * sum(depths.values())
