"""The real workflow, end to end on the micro config, through Snakemake."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import JOB_ENV, TESTS, planned_jobs, snakemake

from featurebirth import layout
from featurebirth.cube import open_cube, write_cube

pytestmark = pytest.mark.workflow

MICRO_LAYERS = {"tiny-a": [0, 1], "tiny-b": [0, 2]}


def _counts(plan_output: str) -> dict[str, int]:
    """The per-rule job counts of a dry run's 'Job stats' table."""
    lines = plan_output.split("Job stats:", 1)[1].splitlines()[3:]
    rows = [line.split() for line in lines[: next(i for i, line in enumerate(lines) if not line.strip())]]
    return {rule: int(count) for rule, count in rows}


def test_plan_has_one_sae_job_and_one_score_job_per_checkpoint(micro_run):
    _, plan, _ = micro_run
    assert plan.returncode == 0, plan.stderr
    counts = _counts(plan.stdout)
    # micro: 2 models x 2 steps; sae.layers_per_job "all": one SAE job per checkpoint
    assert {rule: counts[rule] for rule in ("toy_model", "train_saes", "score")} == {
        "toy_model": 4,
        "train_saes": 4,
        "score": 4,
    }
    assert counts["corpus"] == counts["cube"] == counts["tables"] == 1
    assert counts["heatmaps"] == counts["quality_heatmaps"] == 2 and counts["figure"] == 4
    groups = sorted(
        (job["wildcards"]["model"], job["wildcards"]["group"])
        for job in planned_jobs(plan.stdout)
        if job["rule"] == "train_saes"
    )
    assert groups == [("tiny-a", "0-1"), ("tiny-a", "0-1"), ("tiny-b", "0-2"), ("tiny-b", "0-2")]


def test_cube_holds_every_cell(micro_run):
    results, _, _ = micro_run
    cube = open_cube(layout.cube_path(results))
    sizes = {"probe_set": 1, "seed": 1, "model": 2, "step": 2, "layer": 3, "category": 3, "other_layer": 3}
    assert dict(cube.sizes) == sizes
    assert cube["model"].values.tolist() == ["tiny-a", "tiny-b"]
    assert cube["step"].values.tolist() == [0, 6]
    assert cube["category"].values.tolist() == ["animals", "colours", "numbers"]
    assert cube["n_layers"].values.tolist() == [2, 3]
    assert cube["d_model"].values.tolist() == [16, 24]
    assert (cube["n_params"].values > 0).all() and cube["n_params"].values[1] > cube["n_params"].values[0]
    # 8 sequences of 32 tokens per optimizer step in the micro toy training
    assert cube["tokens_seen"].values.tolist() == [[0, 6 * 8 * 32]] * 2
    assert cube["planted_frequency"].values.tolist() == [4, 2, 1]
    assert cube["probe_set"].values.tolist() == ["template"]  # the generated corpus: template probes only
    assert cube["probe_words"].values.tolist() == [[3, 3, 3]]
    # tiny-a has no layer 2; tiny-b's layer 1 is not studied
    assert cube["score"].sel(model="tiny-a", layer=2).isnull().all()
    assert cube["score"].sel(model="tiny-b", layer=1).isnull().all()
    studied = cube["score"].sel(model="tiny-b", layer=[0, 2])
    assert studied.notnull().all() and ((studied >= 0) & (studied <= 1)).all()
    # the held-out controls of every studied cell, none of the others'
    for name in ("probe_score", "probe_null", "probe_auroc", "heldout_score", "heldout_null"):
        values = cube[name].sel(model="tiny-b")
        assert values.sel(layer=[0, 2]).notnull().all() and values.sel(layer=1).isnull().all(), name
        assert ((values.sel(layer=[0, 2]) >= 0) & (values.sel(layer=[0, 2]) <= 1)).all(), name
    assert (cube["variance_explained"].sel(model="tiny-a", layer=[0, 1]) > 0.5).all()
    # downstream quality: one clean loss per (model, step), the same for every layer; finite increases
    clean = cube["ce_loss_clean"].sel(model="tiny-a", layer=[0, 1])
    assert (clean.sel(layer=0) == clean.sel(layer=1)).all() and (clean > 0).all()
    assert cube["ce_loss_increase"].sel(model="tiny-b", layer=[0, 2]).notnull().all()
    recovered = cube["ce_loss_recovered"].sel(model="tiny-a", layer=[0, 1])
    assert ((recovered <= 1.5) | recovered.isnull()).all()
    assert cube.attrs["n_cells"] == 8
    assert len(set(cube["fingerprint"].values.ravel())) == 4 and not cube["duplicate_checkpoint"].any()
    provenance = json.loads(cube.attrs["config"])
    assert provenance["steps"] == [0, 6] and not {"analysis", "figures", "results"} & set(provenance)


def _documented_columns(path: Path) -> list[str]:
    """The column names a table's '# name: meaning' header lines document, in order."""
    lines = [line[2:] for line in path.read_text().splitlines() if line.startswith("# ")]
    return [line.split(":", 1)[0] for line in lines[1:]]


def test_tables_figures_and_report(micro_run):
    results, _, args = micro_run
    for name in layout.TABLES:
        path = Path(layout.table_path(results, name))
        table = pd.read_csv(path, sep="\t", comment="#")
        assert list(table.columns) == _documented_columns(path), name
    steps = pd.read_csv(layout.table_path(results, "emergence_steps"), sep="\t", comment="#")
    assert len(steps) == 4 * 3  # (tiny-a: 2 + tiny-b: 2 studied layers) x 3 categories
    summary = json.loads(Path(layout.summary_path(results)).read_text())
    assert list(summary["probe_sets"]) == ["template"]
    assert summary["probe_sets"]["template"]["represented_at_step0"] == 0
    figures = [
        path(results, model) for model in MICRO_LAYERS for path in (layout.heatmap_path, layout.quality_heatmap_path)
    ]
    for path in figures + [layout.figure_path(results, figure) for figure in layout.FIGURES]:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    report = Path(layout.report_path(results))
    result = snakemake(*args, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert "emergence.png" in html and "reactivation.tsv" in html and "probe_baseline.tsv" in html


def test_summary_command_prints_every_category(micro_run):
    results, _, _ = micro_run
    printed = subprocess.run(
        [sys.executable, "-m", "featurebirth", "summary", layout.cube_path(results)],
        capture_output=True,
        text=True,
        env={**JOB_ENV, "COLUMNS": "160"},
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    for expected in ("tiny-a", "tiny-b", "animals", "colours", "numbers", "emerges at step"):
        assert expected in printed.stdout


def test_every_cell_output_exists(micro_run):
    results, _, _ = micro_run
    for model, layers in MICRO_LAYERS.items():
        for step in (0, 6):
            checkpoint = Path(layout.toy_checkpoint(results, model, step))
            assert (checkpoint / "model.safetensors").exists() and (checkpoint / "tokenizer.json").exists()
            manifest = json.loads(Path(layout.sae_group(results, model, step, layout.layer_group(layers))).read_text())
            assert manifest["layers"] == layers and manifest["tokens"] == 1280
            assert layout.trained_groups(results, model, step) == [(layers, [0])]
            for layer in layers:
                cell = Path(layout.sae_dir(results, model, step, layer))
                assert (cell / layout.SAE_WEIGHTS).stat().st_size > 0
                assert json.loads((cell / layout.SAE_CONFIG).read_text())["cell"] == f"{model}/step{step}/layer{layer}"
                assert manifest["cells"][f"{model}/step{step}/layer{layer}"]["tokens_trained"] == 120 * 64
    assert not list(Path(results).rglob(".tmp-*"))


def test_rerun_has_nothing_to_do(micro_run):
    _, _, args = micro_run
    plan = snakemake("-n", *args)
    assert plan.returncode == 0
    assert "Nothing to be done" in plan.stdout + plan.stderr


def test_changing_evaluation_scoring_or_figures_retrains_nothing(micro_run, tmp_path):
    """Settings reach only the jobs that read them: scoring, the evaluation split and the probes rerun score jobs
    (and their own), a figure setting only figures; no checkpoint and no SAE is retrained."""
    results, _, _ = micro_run
    config = yaml.safe_load((TESTS / "micro.yaml").read_text())
    config["scoring"] = {"n_permutations": 20}
    config["figures"] = {"dpi": 80}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    plan = snakemake("-n", "--configfile", str(changed), "--config", f"results={results}")
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = _counts(plan.stdout)
    assert counts.get("score") == 4 and "train_saes" not in counts and "toy_model" not in counts
    config.pop("scoring")
    config["corpus"]["n_eval_sequences"] = 9
    config["probes"]["n_controls"] = 12
    changed.write_text(yaml.safe_dump(config))
    plan = snakemake("-n", "--configfile", str(changed), "--config", f"results={results}")
    counts = _counts(plan.stdout)
    assert counts.get("eval_split") == counts.get("probes") == 1 and counts.get("score") == 4, counts
    assert not {"corpus", "toy_model", "train_saes"} & set(counts), counts
    config["corpus"]["n_eval_sequences"] = 8
    config["probes"]["n_controls"] = 16
    changed.write_text(yaml.safe_dump(config))
    plan = snakemake("-n", "--configfile", str(changed), "--config", f"results={results}")
    counts = _counts(plan.stdout)
    assert set(counts) == {"heatmaps", "quality_heatmaps", "figure", "all", "total"}, counts


def test_a_deleted_sae_stops_the_plan_until_its_manifest_goes(micro_run, tmp_path):
    """Deleting one cell's weights stops the plan with the fix: delete the group's manifest, --forcerun it."""
    results, _, args = micro_run
    weights = Path(layout.sae_files(results, "tiny-a", 0, 1)[0])
    manifest = Path(layout.sae_group(results, "tiny-a", 0, "0-1"))
    weights.replace(tmp_path / "weights")
    try:
        refused = snakemake("-n", *args)
        manifest.replace(tmp_path / "manifest")
        replanned = snakemake("-n", *args, "--forcerun", str(manifest))
    finally:
        (tmp_path / "weights").replace(weights)
        if (tmp_path / "manifest").exists():
            (tmp_path / "manifest").replace(manifest)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert f"the manifest of their layer group, {manifest}, says the group is trained" in message
    assert str(weights) in message and f"--forcerun {manifest}" in message
    assert replanned.returncode == 0, replanned.stderr[-3000:]
    jobs = [(job["rule"], job["wildcards"]) for job in planned_jobs(replanned.stdout) if "step" in job["wildcards"]]
    assert sorted((rule, wc["model"], wc["step"], wc.get("group")) for rule, wc in jobs) == [
        ("score", "tiny-a", "0", None),
        ("train_saes", "tiny-a", "0", "0-1"),
    ]


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


def _cell_files(results: Path) -> list[Path]:
    """Every checkpoint and SAE file of the run (what must never be redone)."""
    trees = [Path(layout.toy_checkpoint(results, m, 0)).parent for m in MICRO_LAYERS]
    trees += [Path(layout.sae_step_dir(results, m, 0)).parent for m in MICRO_LAYERS]
    return [path for tree in trees for path in tree.rglob("*") if path.is_file()]


def test_adding_a_step_a_layer_and_a_seed_trains_only_the_new_saes(micro_run, tmp_path):
    """Runs late in this module: it extends the micro run in place with step 3, tiny-b's layer 1 and SAE seed 1."""
    results, _, _ = micro_run
    config = yaml.safe_load((TESTS / "micro.yaml").read_text())
    config["steps"] = [0, 3, 6]
    config["models"]["tiny-b"]["layers"] = [0, 1, 2]
    config["sae"]["seeds"] = [0, 1]
    extended = tmp_path / "extended.yaml"
    extended.write_text(yaml.safe_dump(config))
    args = ["--configfile", str(extended), "--config", f"results={results}"]
    plan = snakemake("-n", *args)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = [(job["rule"], job["wildcards"]) for job in planned_jobs(plan.stdout) if "step" in job["wildcards"]]
    trained = sorted((wc["model"], wc["step"], wc["group"]) for rule, wc in jobs if rule == "train_saes")
    # step 3: every layer of both models, both seeds in one job; steps 0 and 6: seed 1 of every layer, and tiny-b's
    # new layer 1 for seed 0 (the first seed's job keeps its name without seeds)
    assert trained == [
        ("tiny-a", "0", "0-1.seeds-1"),
        ("tiny-a", "3", "0-1.seeds-0-1"),
        ("tiny-a", "6", "0-1.seeds-1"),
        ("tiny-b", "0", "0-1-2.seeds-1"),
        ("tiny-b", "0", "1"),
        ("tiny-b", "3", "0-1-2.seeds-0-1"),
        ("tiny-b", "6", "0-1-2.seeds-1"),
        ("tiny-b", "6", "1"),
    ]
    assert sorted((wc["model"], wc["step"]) for rule, wc in jobs if rule == "toy_model") == [
        ("tiny-a", "3"),
        ("tiny-b", "3"),
    ]
    # every score file is rewritten: each checkpoint gained a seed (scoring is per checkpoint)
    assert len([wc for rule, wc in jobs if rule == "score"]) == 6
    old = _cell_files(results)
    before = {path: path.stat().st_mtime_ns for path in old}
    run = snakemake("--cores", "2", *args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in old} == before  # no SAE of seed 0 retrained
    cube = open_cube(layout.cube_path(results))
    assert cube["step"].values.tolist() == [0, 3, 6] and cube.attrs["n_cells"] == 2 * 3 + 3 * 3
    assert cube["seed"].values.tolist() == [0, 1]
    assert layout.trained_groups(results, "tiny-b", 0) == [([0, 1, 2], [1]), ([0, 2], [0]), ([1], [0])]
    assert Path(layout.sae_dir(results, "tiny-b", 0, 1, seed=1), layout.SAE_WEIGHTS).is_file()
    assert cube["score"].sel(model="tiny-b", layer=1).notnull().all()
    # the two seeds' SAEs differ, and so does what they score; the probe, which reads no SAE, has no seed
    assert not cube["variance_explained"].sel(seed=0).equals(cube["variance_explained"].sel(seed=1))
    assert "seed" not in cube["probe_score"].dims
    # lineage against the previous step from step 3 on, the seeds' calibration at every step
    studied = cube["score"].notnull()
    assert cube["lineage_correlation"].sel(step=0).isnull().all()
    assert cube["lineage_cosine"].sel(step=[3, 6]).notnull().sum() == studied.sel(step=[3, 6]).sum()
    assert cube["seed_cosine"].notnull().sum() == studied.sel(seed=0).sum()


def test_reactivation_table_end_to_end(micro_run, micro, tmp_path):
    """A dip planted in the cube (tiny-b has three studied layers after the extension) is found by the tables job."""
    results, _, _ = micro_run
    cube = open_cube(layout.cube_path(results))
    assert cube["score"].sel(model="tiny-b", layer=1).notnull().all(), "runs after the extension test"
    cell = {"probe_set": "template", "model": "tiny-b", "step": 6, "category": "animals"}
    cube["score"].loc[cell] = [0.95, 0.2, 0.9]  # in both seeds
    cube["null"].loc[cell] = [0.1, 0.1, 0.1]
    cube["variance_explained"].loc[{"model": "tiny-b", "step": 6}] = 0.9
    planted = Path(layout.cube_path(tmp_path))
    write_cube(cube, planted)
    settings = micro["analysis"]  # the validated defaults
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "featurebirth",
            "tables",
            "--cube",
            str(planted),
            "--settings",
            json.dumps(settings),
            "--out-dir",
            layout.tables_dir(tmp_path),
            "--analysis",
            layout.analysis_path(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=JOB_ENV,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    events = pd.read_csv(layout.table_path(tmp_path, "reactivation"), sep="\t", comment="#")
    mine = events[(events["model"] == "tiny-b") & (events["step"] == 6) & (events["category"] == "animals")]
    assert mine[["seed", "l1", "l2", "l3", "seeds_with_event", "n_seeds"]].values.tolist() == [
        [0, 0, 1, 2, 2, 2],
        [1, 0, 1, 2, 2, 2],
    ]
    for row in mine.itertuples():
        assert (row.score_l1, row.score_l2, row.score_l3) == pytest.approx((0.95, 0.2, 0.9))
        cosine = float(cube["direction_cosine"].sel({**cell, "seed": row.seed}).sel(layer=2, other_layer=0))
        assert row.cosine_l3_l1 == pytest.approx(cosine, abs=1e-4)
        assert row.feature_verdict == ("returns" if cosine >= settings["return_cosine"] else "new")
    assert np.isfinite(events[["score_l1", "score_l2", "score_l3"]].values).all()
