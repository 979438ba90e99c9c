"""The micro study on real text, end to end through Snakemake, offline: a dataset and a model in the hub cache,
fetched, tokenized once, split by document, budgets checked, SAEs trained and scored."""

import json
import re
from pathlib import Path

import h5py
import pytest
import yaml
from conftest import snakemake

from featurebirth import layout
from featurebirth.config import text_fetch_settings, validate_config
from featurebirth.cube import open_cube

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def text_run(text_world, tmp_path_factory):
    results = tmp_path_factory.mktemp("text-run") / "results"
    config = tmp_path_factory.mktemp("text-config") / "text.yaml"
    config.write_text(yaml.safe_dump({**text_world["raw"], "results": str(results)}))
    plan = snakemake("-n", "--configfile", str(config))
    run = snakemake("--cores", "2", "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-4000:]
    return results, plan.stdout, config


def test_text_is_fetched_once_and_tokenized_once(text_run):
    results, plan, _ = text_run
    counts = {
        rule: plan.count(f"rule {rule}:") + plan.count(f"localrule {rule}:")
        for rule in (
            "fetch_text",
            "tokenize_text",
            "check_text",
            "corpus",
            "eval_split",
            "prefetch",
            "train_saes",
            "score",
        )
    }
    # one model, two revisions; the generated corpus is not built
    assert counts == {
        "fetch_text": 1,
        "tokenize_text": 1,
        "check_text": 1,
        "corpus": 0,
        "eval_split": 0,
        "prefetch": 2,
        "train_saes": 2,
        "score": 2,
    }
    source = json.loads(Path(layout.corpus_file(results, "text_source")).read_text())
    assert [Path(f).name for f in source["files"]] == ["part-0000.jsonl.zst", "part-0001.jsonl.zst"]


def test_sae_jobs_train_on_the_text_sae_part(text_run):
    results, _, _ = text_run
    with h5py.File(layout.corpus_file(results, "text_sae")) as handle:
        rows = handle["sae"].shape[0]
    checked = json.loads(Path(layout.text_check(results, "tiny-neox")).read_text())
    assert checked["distinct_tokens"] == rows * 31 and checked["tokens"] == 7680
    # the generated text plants animals 4 : colours 2 : numbers 1, and the measured frequencies follow
    frequency = checked["text_frequency"]
    assert frequency["animals"] > frequency["colours"] > frequency["numbers"] > 0
    for step in (0, 6):
        manifest = json.loads(Path(layout.sae_group(results, "tiny-neox", step, "0-1")).read_text())
        assert manifest["tokens"] == rows * 32  # every packed row of the SAE part: the budget needs them all
        assert manifest["cells"]["0"]["distinct_tokens"] == rows * 31


def test_the_cube_of_the_text_run(text_run):
    results, _, _ = text_run
    cube = open_cube(layout.cube_path(results))
    assert cube["model"].values.tolist() == ["tiny-neox"] and cube["step"].values.tolist() == [0, 6]
    assert cube["tokens_seen"].values.tolist() == [[0, 6 * 256]]
    assert cube["score"].notnull().all() and (cube["variance_explained"] > 0.5).all()
    assert cube["planted_frequency"].isnull().all()  # real text plants nothing
    checked = json.loads(Path(layout.text_check(results, "tiny-neox")).read_text())["text_frequency"]
    assert cube["text_frequency"].to_series().to_dict() == pytest.approx(checked)
    # the emergence order is checked against the measured frequencies
    summary = json.loads(Path(layout.summary_path(results)).read_text())
    assert summary["spearman_frequency_vs_emergence_step"]["tiny-neox"]["n_categories"] == 3
    assert len(set(cube["fingerprint"].values.ravel())) == 2


def test_a_word_outside_the_vocabulary_stops_before_any_sae_job(text_run, tmp_path):
    results, _, config = text_run
    raw = yaml.safe_load(Path(config).read_text())
    lexicon = yaml.safe_load(Path(raw["corpus"]["lexicon"]).read_text())
    lexicon["categories"]["animals"]["words"].append("zebra")
    raw["corpus"]["lexicon"] = str(tmp_path / "lexicon.yaml")
    (tmp_path / "lexicon.yaml").write_text(yaml.safe_dump(lexicon))
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    manifests = sorted(Path(layout.sae_step_dir(results, "tiny-neox", 0)).glob("group-*.json"))
    run = snakemake("--cores", "1", "--configfile", str(changed))
    assert run.returncode != 0
    log = Path(layout.log_for(results, layout.text_check(results, "tiny-neox"))).read_text()
    assert "model 'tiny-neox'" in log and "'zebra' (animals): not in the vocabulary" in log
    assert sorted(Path(layout.sae_step_dir(results, "tiny-neox", 0)).glob("group-*.json")) == manifests


def test_a_budget_larger_than_the_text_stops_before_any_sae_job(text_run, tmp_path):
    """The fetch, first, finds every shard short of what the budget needs and says by how much."""
    results, _, config = text_run
    raw = yaml.safe_load(Path(config).read_text())
    raw["sae"]["tokens"] = 100_000
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(raw))
    needed = text_fetch_settings(validate_config(raw))["needed_tokens"]
    manifests = sorted(Path(layout.sae_step_dir(results, "tiny-neox", 0)).glob("group-*.json"))
    run = snakemake("--cores", "1", "--configfile", str(bigger))
    assert run.returncode != 0
    log = Path(layout.log_for(results, layout.corpus_file(results, "text_source"))).read_text()
    assert re.search(rf"all 3 file\(s\) hold about \d+ tokens, fewer than the {needed} the budgets need", log), log[
        -2000:
    ]
    assert sorted(Path(layout.sae_step_dir(results, "tiny-neox", 0)).glob("group-*.json")) == manifests
