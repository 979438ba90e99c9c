"""The micro study on real text, end to end through Snakemake, offline: a dataset and a model in the hub cache,
fetched, tokenized once, split by document, budgets checked, SAEs trained and scored."""

import copy
import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import snakemake

from featurebirth import layout
from featurebirth.config import text_fetch_settings, validate_config
from featurebirth.cube import open_cube
from featurebirth.layout import CONTROL
from featurebirth.mining import match_controls, read_mined
from featurebirth.models import load_tokenizer

pytestmark = pytest.mark.workflow
MINED_CONTEXT = 8
PROBE_DOCUMENTS = 12  # of the 60 documents fetched: 10 evaluate, 38 train the SAEs


NEVER_SEEN = "expected"  # in the toy vocabulary (a probe template's word), never in the generated text


@pytest.fixture(scope="module")
def text_run(text_world, tmp_path_factory):
    """The micro text run, its lexicon's numbers given a word the text never holds; mined contexts of 8 tokens."""
    results = tmp_path_factory.mktemp("text-run") / "results"
    folder = tmp_path_factory.mktemp("text-config")
    lexicon = yaml.safe_load(Path(text_world["raw"]["corpus"]["lexicon"]).read_text())
    lexicon["categories"]["numbers"]["words"].append(NEVER_SEEN)
    (folder / "lexicon.yaml").write_text(yaml.safe_dump(lexicon))
    raw = copy.deepcopy(text_world["raw"])
    raw["corpus"]["lexicon"] = str(folder / "lexicon.yaml")
    raw["probes"] = {**raw["probes"], "mined_context": MINED_CONTEXT}
    raw["corpus"]["text"] = {**raw["corpus"]["text"], "probe_documents": PROBE_DOCUMENTS}
    config = folder / "text.yaml"
    config.write_text(yaml.safe_dump({**raw, "results": str(results)}))
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
            "mine_probes",
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
        "mine_probes": 1,
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
        assert manifest["cells"][f"tiny-neox/step{step}/layer0"]["distinct_tokens"] == rows * 31


def test_the_cube_of_the_text_run(text_run):
    results, _, _ = text_run
    cube = open_cube(layout.cube_path(results))
    assert cube["model"].values.tolist() == ["tiny-neox"] and cube["step"].values.tolist() == [0, 6]
    assert cube["tokens_seen"].values.tolist() == [[0, 6 * 256]]
    assert cube["score"].sel(probe_set="template").notnull().all() and (cube["variance_explained"] > 0.5).all()
    assert cube["planted_frequency"].isnull().all()  # real text plants nothing
    checked = json.loads(Path(layout.text_check(results, "tiny-neox")).read_text())["text_frequency"]
    assert cube["text_frequency"].to_series().to_dict() == pytest.approx(checked)
    # the emergence order is checked against the measured frequencies
    summary = json.loads(Path(layout.summary_path(results)).read_text())
    assert set(summary["probe_sets"]) == {"template", "mined"}
    for found in summary["probe_sets"].values():
        assert found["spearman_frequency_vs_emergence_step"]["tiny-neox"]["n_categories"] == 3
    assert len(set(cube["fingerprint"].values.ravel())) == 2


def _lexicon(config: Path) -> dict:
    """The lexicon file the run's config names."""
    return yaml.safe_load(Path(yaml.safe_load(Path(config).read_text())["corpus"]["lexicon"]).read_text())


def _probe_part(results: Path) -> tuple[list[int], int]:
    """The probe-mining part's token ids as one stream, and the EOS id."""
    with h5py.File(layout.corpus_file(results, "text_probe")) as handle:
        return handle["probe"][:].ravel().tolist(), int(handle.attrs["eos"])


def _eligible_counts(flat: list[int], eos: int) -> dict[int, int]:
    """Occurrences of every token with MINED_CONTEXT - 1 tokens of its document before it, not the last position
    (a word-level tokenizer: no token continues another), counted by hand."""
    counts: dict[int, int] = {}
    for end in range(MINED_CONTEXT - 1, len(flat) - 1):
        if eos not in flat[end + 1 - MINED_CONTEXT : end + 1]:
            counts[flat[end]] = counts.get(flat[end], 0) + 1
    return counts


def test_mined_contexts_are_windows_of_the_probe_part_ending_at_the_word(text_run):
    results, _, _ = text_run
    flat, eos = _probe_part(results)
    ids, labels, words = read_mined(Path(layout.corpus_file(results, "text_mined")))
    tokenizer = load_tokenizer(Path(layout.hub_pointer(results, "tiny-neox", 0)))
    windows = {tuple(flat[p : p + MINED_CONTEXT]) for p in range(len(flat) - MINED_CONTEXT + 1)}
    assert ids.shape == (len(labels), MINED_CONTEXT) and len(ids) > 0
    for window, word in zip(ids.tolist(), words):
        assert tokenizer.decode([window[-1]]) == word  # the word is the window's last token
        assert tuple(window) in windows and eos not in window  # a slice of the probe part, in one document
    record = json.loads(Path(layout.corpus_file(results, "text_mined_record")).read_text())
    counts = _eligible_counts(flat, eos)
    per_word = record["per_word"]
    for word, entry in record["words"].items():
        token = tokenizer.convert_tokens_to_ids(word)
        assert entry["occurrences"] == counts.get(token, 0), word
        assert entry["contexts"] == min(entry["occurrences"], per_word) == int((words == word).sum()), word
    assert record["words"][NEVER_SEEN] == {"category": "numbers", "occurrences": 0, "contexts": 0}
    # numbers are planted rarest: of the 12 probe documents' 384 tokens only "three" has contexts (2)
    assert record["words_with_contexts"] == {"animals": 3, "colours": 3, "numbers": 1}
    assert record["too_few_words"] == ["numbers"]


def test_mined_controls_are_frequency_matched_words_outside_the_lexicon(text_run):
    results, _, config = text_run
    flat, eos = _probe_part(results)
    record = json.loads(Path(layout.corpus_file(results, "text_mined_record")).read_text())
    tokenizer = load_tokenizer(Path(layout.hub_pointer(results, "tiny-neox", 0)))
    lexicon = set(record["words"])
    counts = _eligible_counts(flat, eos)
    # candidates: every word token of the part outside the lexicon, in token-id order, with its occurrences
    candidates = {tokenizer.decode([t]): n for t, n in sorted(counts.items()) if tokenizer.decode([t]).isalpha()}
    candidates = {w: n for w, n in candidates.items() if w not in lexicon}
    words = [w for spec in _lexicon(config)["categories"].values() for w in spec["words"]]  # lexicon order
    occurring = {w: record["words"][w]["occurrences"] for w in words if record["words"][w]["occurrences"]}
    matched = match_controls(occurring, candidates)
    assert {w: e["control"] for w, e in record["words"].items() if "control" in e} == matched
    assert len(matched) == len(occurring) and not set(matched.values()) & lexicon
    for word, control in matched.items():
        entry = record["controls"][control]
        assert (entry["matched_to"], entry["occurrences"]) == (word, candidates[control])
        others = [n for c, n in candidates.items() if c not in matched.values()]  # nothing unused was nearer
        gap = abs(math.log(entry["occurrences"] / occurring[word]))
        assert all(abs(math.log(n / occurring[word])) >= gap for n in others), word
    _, labels, words = read_mined(Path(layout.corpus_file(results, "text_mined")))
    assert set(words[labels == CONTROL]) == set(record["controls"])


def test_the_cube_scores_both_probe_sets(text_run):
    results, _, _ = text_run
    cube = open_cube(layout.cube_path(results))
    assert cube["probe_set"].values.tolist() == ["template", "mined"]
    assert cube["score"].dims[0] == "probe_set" and cube["heldout_score"].dims[0] == "probe_set"
    record = json.loads(Path(layout.corpus_file(results, "text_mined_record")).read_text())
    mined = cube.sel(probe_set="mined")
    assert mined["probe_words"].to_series().to_dict() == record["words_with_contexts"]
    assert mined["probe_items"].to_series().to_dict() == {
        c: sum(e["contexts"] for e in record["words"].values() if e["category"] == c)
        for c in record["words_with_contexts"]
    }
    assert cube["probe_words"].sel(probe_set="template").values.tolist() == [3, 3, 4]  # every word, in the templates
    # a category with fewer than two words with contexts is not scored (NaN), and said so; the others are
    for name in ("score", "null", "auroc", "probe_score", "probe_null", "heldout_score", "heldout_null"):
        assert cube[name].sel(probe_set="template").notnull().all(), name
        assert mined[name].sel(category=["animals", "colours"]).notnull().all(), name
        assert mined[name].sel(category="numbers").isnull().all(), name
    assert (mined["best_feature"].sel(category="numbers") == -1).all()
    template = cube["score"].sel(probe_set="template", category=["animals", "colours"]).values
    assert not np.array_equal(mined["score"].sel(category=["animals", "colours"]).values, template)
    summary = json.loads(Path(layout.summary_path(results)).read_text())
    assert {p: found["not_scored"] for p, found in summary["probe_sets"].items()} == {
        "template": {},
        "mined": {"numbers": 1},
    }
    log = Path(layout.log_for(results, layout.score_path(results, "tiny-neox", 6))).read_text()
    assert "probe set mined: category numbers has 1 word(s) with contexts, fewer than two: not scored" in log
    table = pd.read_csv(layout.table_path(results, "summary_table"), sep="\t", comment="#")
    assert table.groupby("probe_set", sort=False).size().to_dict() == {"template": 3, "mined": 3}
    baseline = pd.read_csv(layout.table_path(results, "probe_baseline"), sep="\t", comment="#")
    assert baseline["probe_set"].tolist() == ["template"] * 3 + ["mined"] * 3


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
