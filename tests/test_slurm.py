"""The micro config through `snakemake --profile profiles/slurm` on a real single-node SLURM.

tests/slurm/cluster.sh starts munged, slurmctld and slurmd on this machine; the checkpoint,
SAE and score jobs must run as SLURM jobs and give the same outputs as the local run. Where SLURM cannot
start, the test fails with the reason: it is never skipped.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import JOB_ENV, REPO, TESTS, snakemake

from featurebirth import layout

# The SLURM tier; it also runs the micro workflow (micro_run), so it is a workflow test as well.
pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CLUSTER = TESTS / "slurm" / "cluster.sh"
SETUP_SLURM = REPO / "scripts" / "setup_slurm.sh"
GPU_RULES = ("train_saes", "score")
MICRO_LAYERS = {"tiny-a": [0, 1], "tiny-b": [0, 2]}


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    # The Debian packages are installed here, when the SLURM tier runs, not by scripts/test.sh up front.
    installed = subprocess.run(
        ["bash", str(SETUP_SLURM)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1200
    )
    if installed.returncode != 0:
        pytest.fail(
            f"SLURM packages could not be installed ({SETUP_SLURM.relative_to(REPO)}, exit "
            f"{installed.returncode}): {installed.stderr.strip()[-3000:] or installed.stdout.strip()[-3000:]}"
        )
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=120)
        pytest.fail(f"SLURM could not start: {started.stderr.strip() or started.stdout.strip()}")
    yield state
    subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=120)


def _slurm_jobs() -> dict[str, str]:
    """Every job the controller remembers: Snakemake's job comment (rule and wildcards) -> state."""
    listed = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%k|%T"],
        capture_output=True,
        text=True,
        check=True,
        env=JOB_ENV,
    ).stdout
    return dict(line.split("|", 1) for line in listed.splitlines() if "|" in line)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, micro_run, tmp_path_factory):
    results = tmp_path_factory.mktemp("slurm-run") / "results"
    no_gpus = [f"{rule}:gpu=0" for rule in GPU_RULES]  # the test node has no GPU
    run = snakemake(
        "--profile",
        "profiles/slurm",
        "--configfile",
        str(TESTS / "micro.yaml"),
        "--config",
        f"results={results}",
        "--default-resources",
        "slurm_partition=debug",
        "slurm_account=",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--set-resources",
        *no_gpus,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return results, run.stdout + run.stderr


def test_checkpoint_jobs_ran_as_slurm_jobs(slurm_run):
    _, log = slurm_run
    jobs = _slurm_jobs()
    for model, layers in MICRO_LAYERS.items():
        for step in (0, 6):
            for comment in (
                f"rule_train_saes_wildcards_{model}_{step}_{layout.layer_group(layers)}",
                f"rule_score_wildcards_{model}_{step}",
                f"rule_toy_model_wildcards_{model}_{step}",
            ):
                assert jobs.get(comment) == "COMPLETED", (comment, sorted(jobs))
    submitted = log.count("has been submitted with SLURM jobid")
    # 4 checkpoints, 4 SAE jobs (one per checkpoint: layers_per_job "all"), 4 score jobs; the rest stays local
    assert submitted == 12, submitted
    assert not any(key.startswith(("rule_cube", "rule_tables", "rule_figure", "rule_corpus")) for key in jobs)


def test_slurm_outputs_equal_the_local_run(slurm_run, micro_run):
    results, _ = slurm_run
    local, _, _ = micro_run
    for model, layers in MICRO_LAYERS.items():
        for step in (0, 6):
            for layer in layers:
                remote = torch.load(Path(layout.sae_dir(results, model, step, layer)) / layout.SAE_WEIGHTS)
                mine = torch.load(Path(layout.sae_dir(local, model, step, layer)) / layout.SAE_WEIGHTS)
                assert remote.keys() == mine.keys()
                for name in remote:
                    assert torch.equal(remote[name], mine[name]), (model, step, layer, name)
            with (
                xr.open_dataset(layout.score_path(results, model, step)) as remote,
                xr.open_dataset(layout.score_path(local, model, step)) as mine,
            ):
                for name in ("score", "null", "best_feature", "feature_f1", "best_direction", "variance_explained"):
                    np.testing.assert_array_equal(remote[name].values, mine[name].values, err_msg=f"{model} {name}")
    assert Path(layout.cube_path(results)).exists() and Path(layout.figure_path(results, "emergence")).exists()
