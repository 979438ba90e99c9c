"""The real workflow, end to end on the micro config, through Snakemake."""

import json
import subprocess
import sys

import h5py
import pandas as pd
import yaml

from conftest import JOB_ENV, TESTS, planned_jobs, snakemake
from featurebirth.cube import open_cube


def test_plan_has_one_job_per_cell(micro_run):
    _, plan, _ = micro_run
    assert plan.returncode == 0, plan.stderr
    counts = {}
    for line in plan.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    # micro: tiny-a 2 layers, tiny-b 2 studied layers, 2 steps each
    assert counts["sae"] == 8
    assert counts["cache_training_activations"] == 4
    assert counts["cache_probe_activations"] == 4
    assert counts["toy_model"] == 4
    assert counts["score"] == 8
    assert counts["cube"] == 1 and counts["tables"] == 1
    assert counts["heatmaps"] == 2 and counts["figure"] == 3


def test_cube_holds_every_cell(micro_run):
    results, _, _ = micro_run
    cube = open_cube(results / "cube.nc")
    assert dict(cube.sizes) == {"model": 2, "step": 2, "layer": 3, "category": 3, "other_layer": 3}
    assert cube["model"].values.tolist() == ["tiny-a", "tiny-b"]
    assert cube["step"].values.tolist() == [0, 6]
    assert cube["category"].values.tolist() == ["animals", "colours", "numbers"]
    assert cube["n_layers"].values.tolist() == [2, 3]
    assert cube["d_model"].values.tolist() == [16, 24]
    assert (cube["n_params"].values > 0).all() and cube["n_params"].values[1] > cube["n_params"].values[0]
    # 8 sequences of 32 tokens per optimizer step in the micro toy training
    assert cube["tokens_seen"].values.tolist() == [[0, 6 * 8 * 32]] * 2
    assert cube["planted_frequency"].values.tolist() == [4, 2, 1]
    # tiny-a has no layer 2; tiny-b's layer 1 is not studied
    assert cube["score"].sel(model="tiny-a", layer=2).isnull().all()
    assert cube["score"].sel(model="tiny-b", layer=1).isnull().all()
    studied = cube["score"].sel(model="tiny-b", layer=[0, 2])
    assert studied.notnull().all() and ((studied >= 0) & (studied <= 1)).all()
    assert (cube["variance_explained"].sel(model="tiny-a", layer=[0, 1]) > 0.5).all()
    assert cube.attrs["n_cells"] == 8
    assert len(set(cube["fingerprint"].values.ravel())) == 4 and not cube["duplicate_checkpoint"].any()
    assert json.loads(cube.attrs["config"])["steps"] == [0, 6]


def test_tables_figures_and_report(micro_run):
    results, _, args = micro_run
    for name in ("emergence_steps", "emergence_layers", "scale_thresholds", "reactivation", "summary_table"):
        table = pd.read_csv(results / f"tables/{name}.tsv", sep="\t", comment="#")
        assert len(table.columns) >= 5, name
    steps = pd.read_csv(results / "tables/emergence_steps.tsv", sep="\t", comment="#")
    assert len(steps) == 4 * 3  # (tiny-a: 2 + tiny-b: 2 studied layers) x 3 categories
    summary = json.loads((results / "tables/summary.json").read_text())
    assert summary["represented_at_step0"] == 0
    for figure in ("heatmaps/tiny-a", "heatmaps/tiny-b", "emergence", "scale", "reactivation"):
        assert (results / f"figures/{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = results / "report.html"
    result = snakemake(*args, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert "emergence.png" in html and "reactivation.tsv" in html


def test_summary_command_prints_every_category(micro_run):
    results, _, _ = micro_run
    printed = subprocess.run([sys.executable, "-m", "featurebirth", "summary", str(results / "cube.nc")],
                             capture_output=True, text=True, env={**JOB_ENV, "COLUMNS": "160"}, timeout=120)
    assert printed.returncode == 0, printed.stderr
    for expected in ("tiny-a", "tiny-b", "animals", "colours", "numbers", "emerges at step"):
        assert expected in printed.stdout


def test_every_cell_output_exists(micro_run):
    results, _, _ = micro_run
    for model, layers in {"tiny-a": [0, 1], "tiny-b": [0, 2]}.items():
        for step in (0, 6):
            assert (results / f"models/{model}/step{step}/model.safetensors").exists()
            assert (results / f"models/{model}/step{step}/tokenizer.json").exists()
            with h5py.File(results / f"activations/{model}/step{step}/probes.h5") as handle:
                assert handle.attrs["step"] == step
            # the training cache is temp(): gone once its SAEs are trained
            assert not list((results / f"activations/{model}/step{step}").glob("train-*.h5"))
            for layer in layers:
                cell = results / f"sae/{model}/step{step}/layer{layer}"
                metrics = json.loads((cell / "metrics.json").read_text())
                assert metrics["fraction_variance_explained"] > 0.5, (cell, metrics)
                assert (cell / "ae.pt").stat().st_size > 0
    assert not list(results.rglob(".tmp-*"))


def test_rerun_has_nothing_to_do(micro_run):
    _, _, args = micro_run
    plan = snakemake("-n", *args)
    assert plan.returncode == 0
    assert "Nothing to be done" in plan.stdout + plan.stderr


def test_bad_config_stops_before_any_job(tmp_path):
    config = yaml.safe_load((TESTS / "micro.yaml").read_text())
    config["models"]["tiny-a"]["layers"] = [0, 7]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(bad), "--config", f"results={tmp_path / 'results'}")
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "config key 'models.tiny-a.layers'" in message and "outside the model's depth" in message
    assert not (tmp_path / "results").exists()


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for rule" not in result.stdout + result.stderr


def test_adding_a_step_and_a_layer_runs_only_the_new_cells(micro_run, tmp_path):
    """Runs last in this module: it extends the micro run in place with step 3 and tiny-b's layer 1."""
    results, _, _ = micro_run
    config = yaml.safe_load((TESTS / "micro.yaml").read_text())
    config["steps"] = [0, 3, 6]
    config["models"]["tiny-b"]["layers"] = [0, 1, 2]
    extended = tmp_path / "extended.yaml"
    extended.write_text(yaml.safe_dump(config))
    args = ["--configfile", str(extended), "--config", f"results={results}"]
    plan = snakemake("-n", *args)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = planned_jobs(plan.stdout)
    per_cell = [(job["rule"], job["wildcards"]) for job in jobs if "step" in job["wildcards"]]
    new_step = [wc for _, wc in per_cell if wc["step"] == "3"]
    new_layer = [(rule, wc) for rule, wc in per_cell if wc["step"] != "3"]
    # step 3: every cell; steps 0 and 6: only tiny-b's new layer 1, from a cache of that layer alone
    assert sorted((rule, wc["model"], wc["step"]) for rule, wc in new_layer) == sorted(
        [(rule, "tiny-b", step) for rule in ("sae", "score", "cache_training_activations") for step in ("0", "6")])
    assert all(wc.get("layer", "1") == "1" and wc.get("layers", "1") == "1" for _, wc in new_layer), new_layer
    assert new_step
    counts = {job["rule"]: sum(j["rule"] == job["rule"] for j in jobs) for job in jobs}
    assert counts["sae"] == 5 + 2 and counts["score"] == 5 + 2 and counts["toy_model"] == 2
    assert counts["cube"] == 1 and counts["tables"] == 1
    old_cells = [p for p in results.rglob("*") if p.is_file() and "step3" not in p.parts
                 and p.parts[len(results.parts)] in ("models", "activations", "sae", "scores")]
    before = {p: p.stat().st_mtime_ns for p in old_cells}
    run = snakemake("--cores", "2", *args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in old_cells} == before
    assert open_cube(results / "cube.nc")["step"].values.tolist() == [0, 3, 6]
    assert (results / "scores/tiny-b/step3/layer2.nc").exists()
    assert (results / "scores/tiny-b/step0/layer1.nc").exists()
