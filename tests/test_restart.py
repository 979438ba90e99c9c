"""Restart after a crash: the whole local run killed mid-way (SIGKILL to its process group), restarted as the README
says (`--unlock`, then the same command), redoes only what was unfinished and ends with the uninterrupted run's cube."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import JOB_ENV, REPO

from featurebirth import layout
from featurebirth.cube import open_cube

pytestmark = pytest.mark.workflow

WAIT_SECONDS = 600


def run_command(workdir: Path, config: Path, results: Path, *args: str) -> list[str]:
    """The workflow in its own working directory (its own .snakemake: locks, metadata), like a user's checkout."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--config",
        f"results={results}",
        *args,
    ]


def finished_jobs(log: str, rule: str) -> list[str]:
    """The outputs of the jobs of `rule` that Snakemake reported finished (after recording them complete)."""
    outputs, current, block = {}, None, False
    for line in log.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            block, current = line.split()[1].rstrip(":") == rule, None
        elif block and line.startswith("output:"):
            current = line.split(":", 1)[1].strip()
        elif block and line.startswith("jobid:") and current:
            outputs[line.split(":", 1)[1].strip()] = current
    done = re.findall(rf"Finished jobid: (\d+) \(Rule: {rule}\)", log)
    return [outputs[jobid] for jobid in done]


def kill_after_first(command: list[str], log_path: Path, rule: str) -> list[str]:
    """Start the run in a process group of its own, SIGKILL the group once a job of `rule` has finished; return the
    finished outputs of `rule` at that moment."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=JOB_ENV, start_new_session=True)
    deadline = time.monotonic() + WAIT_SECONDS
    while not finished_jobs(log_path.read_text(), rule):
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "no job finished in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    while True:  # every job the run had started is gone with it
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return finished_jobs(log_path.read_text(), rule)


def stamps(paths: list[str]) -> dict[str, int]:
    return {path: os.stat(path).st_mtime_ns for path in paths}


def test_a_killed_run_restarts_redoing_only_unfinished_cells(micro_run, micro_raw, tmp_path):
    workdir, results = tmp_path / "work", tmp_path / "work" / "results"
    workdir.mkdir()
    config = workdir / "micro.yaml"
    config.write_text(yaml.safe_dump(micro_raw))
    command = run_command(workdir, config, results, "--cores", "1")

    done = kill_after_first(command, tmp_path / "killed.log", "train_saes")
    print(f"killed after {len(done)} of 4 SAE jobs: {done}")
    assert done and not Path(layout.cube_path(results)).exists(), "the kill came too late"
    # the finished SAE jobs: each manifest and every file of its layer group's SAE folders
    finished = [
        *done,
        *(str(f) for m in done for folder in layout.group_sae_dirs(m).values() for f in Path(folder).iterdir()),
    ]
    before = stamps(finished)

    # the killed run left its lock: the same command is refused until --unlock
    refused = subprocess.run(command, capture_output=True, text=True, env=JOB_ENV)
    assert refused.returncode != 0 and "--unlock" in refused.stdout + refused.stderr
    unlock = subprocess.run(
        run_command(workdir, config, results, "--unlock"), capture_output=True, text=True, env=JOB_ENV
    )
    assert unlock.returncode == 0, unlock.stderr[-3000:]

    # what the restart will run: the SAE jobs not finished, never the finished ones
    plan = subprocess.run(
        run_command(workdir, config, results, "-n", "--quiet", "rules"), capture_output=True, text=True, env=JOB_ENV
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    planned = re.search(r"^train_saes\s+(\d+)$", plan.stdout, flags=re.MULTILINE)
    assert int(planned.group(1)) == 4 - len(done)

    rerun = subprocess.run(
        run_command(workdir, config, results, "--cores", "2"), capture_output=True, text=True, env=JOB_ENV
    )
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert stamps(finished) == before, "a finished SAE job was redone"

    reference, _, _ = micro_run
    restarted, uninterrupted = open_cube(layout.cube_path(results)), open_cube(layout.cube_path(reference))
    assert sorted(restarted.variables) == sorted(uninterrupted.variables)
    for name in uninterrupted.variables:
        # bitwise: every job is seeded and single-threaded on the CPU, so a restart reproduces each number exactly
        assert same(restarted[name].values, uninterrupted[name].values), name
    assert restarted.attrs == uninterrupted.attrs


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equal arrays, NaN equal to NaN."""
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f")
