"""The cost plan: its arithmetic by hand on a small config, its constants against Pythia's published figures, its job
counts against Snakemake's own plan, its SAE sizes against a real run."""

import copy
import os
import re
import subprocess
import sys
import time

import pytest
import yaml
from conftest import JOB_ENV, REPO, TESTS, snakemake

from featurebirth import costs, layout, plan
from featurebirth.config import grid, load_config, model_layers, sae_job_groups, sae_training_settings, validate_config


def test_shapes_reproduce_every_published_pythia_count():
    for name, published in costs.PYTHIA.items():
        shape = costs.published_shape(name)
        assert shape.n_params == published.n_params, name
        assert shape.n_params - 2 * shape.embedding_params == published.non_embedding, name
        assert shape.n_layers * shape.block_params + 2 * shape.d_model == published.non_embedding, name
    # the tokenizer's embeddings padded to 50,304 rows, more for the two largest sizes
    assert {name: costs.PYTHIA[name].vocab for name in ("pythia-70m", "pythia-2.8b", "pythia-6.9b", "pythia-12b")} == {
        "pythia-70m": 50_304,
        "pythia-2.8b": 50_304,
        "pythia-6.9b": 50_432,
        "pythia-12b": 50_688,
    }
    assert costs.hub_vocab("EleutherAI/pythia-12b-deduped") == 50_688 and costs.hub_vocab("other/model") == 50_304


def test_pythia_suite_downloads_and_sae_weights_match_issue_14():
    """25 revisions of the 8 sizes: the hub cache issue 14 puts at ~1.2 TB; the SAE weights of config/pythia.yaml's
    grid in fp32, ~1.5 TB."""
    revisions = sum(costs.hub_revision_bytes(costs.published_shape(name)) for name in costs.PYTHIA)
    assert 25 * revisions == pytest.approx(1.25e12, rel=0.01)
    config = load_config(REPO / "config" / "pythia.yaml")
    weights = sum(plan.model_plan(config, model).sae_weight_bytes for model in config["models"])
    assert weights == pytest.approx(2 * 1.54e12, rel=0.01)  # issue 14: 1.54 TB for one SAE seed; the config has two


def test_activation_bytes_are_the_stored_dtype():
    from featurebirth.activations import STORAGE_DTYPE

    assert STORAGE_DTYPE.itemsize == costs.ACTIVATION_BYTES


@pytest.fixture
def small_raw(micro_raw) -> dict:
    """One hub model of 4 blocks of width 100 on the micro corpus, SAEs of 200 features, 3 layers per SAE job."""
    model = {"source": "hub", "repo": "example/neox", "n_layers": 4, "d_model": 100}
    model.update(sae={"expansion": 2, "layers_per_job": 3}, resources={"mem_mb": 3000, "runtime": 600})
    return {**copy.deepcopy(micro_raw), "models": {"m": model}}


@pytest.fixture
def small(small_raw) -> dict:
    return validate_config(small_raw)


def test_the_arithmetic_by_hand(small, small_raw):
    # block: attention 4*100^2 + 4*100, MLP 2*100*400 + 400 + 100, LayerNorms 4*100 = 121,300 (= 12 d^2 + 13 d)
    shape = plan.model_shape(small, "m")
    assert shape.block_params == 121_300 and shape.embedding_params == 50_304 * 100
    # both embeddings 2 * 5,030,400 + 4 blocks * 121,300 + final LayerNorm 200
    assert shape.n_params == 10_546_200
    # a revision: 10,546,200 * 2 B + 4 masks of 2048^2 B + 2.2 MB of tokenizer and config
    assert costs.hub_revision_bytes(shape) == 21_092_400 + 16_777_216 + 2_200_000
    # groups of 3 layers: [0, 1, 2] and [3]; micro's 2 steps
    assert plan.rule_counts(small) == {
        "corpus": 1,
        "eval_split": 1,
        "probes": 1,
        "prefetch": 2,
        "train_saes": 4,
        "score": 2,
        "cube": 1,
        "tables": 1,
        "figure": 4,
        "heatmaps": 1,
        "quality_heatmaps": 1,
        "all": 1,
    }
    assert plan.slurm_jobs(plan.rule_counts(small)) == 6
    # an SAE: 2 * 100 * 200 + 200 + 100 = 40,300 parameters
    assert costs.sae_params(100, 200) == 40_300
    # distinct tokens: micro's 40 SAE sequences x (32 - 1) kept positions = 1,240 < the 7,680-token budget; the
    # default 262,144-token buffer holds them all: one copy, one forward pass over 40 rows of 32 positions
    assert plan.held_tokens(small, "m") == 1_240
    assert plan.forward_positions(small, "m") == 1_280
    job = plan.sae_job_cost(small, "m", ([0, 1, 2], [0]))
    memory = job.memory
    assert memory.model_weights == (5_030_400 + 3 * 121_300) * 2 == 10_788_600
    assert memory.sae_training == 3 * 40_300 * 16 == 1_934_400
    assert memory.training_state == 3 * 40_300 * 12 == 1_450_800
    assert memory.activation_buffer == 1_240 * 3 * 100 * 2 == 744_000
    assert memory.checkpoint_load == 10_546_200 * 2
    assert job.gpu_bytes == 10_788_600 + 1_934_400 and job.disk_bytes == 1_450_800
    assert job.host_bytes == 4e9 + 21_092_400 + 744_000
    # FLOPs: forward through block 2, 2 * 3 * 121,300 per position, over 1,280 positions; 3 SAEs at
    # 12 * 100 * 200 per token over 120 updates of 64 tokens
    flops = 2 * 3 * 121_300 * 1_280 + 3 * 12 * 100 * 200 * 7_680
    assert flops == 6_461_184_000
    read = (21_092_400 + 16_777_216 + 2_200_000) / 1e9
    assert job.seconds == pytest.approx(60 + read + flops / (989e12 * 0.2) + 120 * 3 * 1e-3)
    model = plan.model_plan(small, "m")
    assert model.cells == 8 and model.download_bytes == 2 * 40_069_616
    assert model.sae_weight_bytes == 8 * 40_300 * 4 == 1_289_600
    # score files: per cell 3 categories x (200 features + 100 dims + 34 probe items: 9 words x 2 templates + 16
    # controls) float32
    assert plan.probe_items(small) == 34
    assert model.score_bytes == 8 * 3 * 334 * 4
    # results: the SAE weights halve in bf16
    assert "SAE weights stored in bf16: 1.29 MB -> 645 kB" in plan.format_plan(small, "small")
    # two seeds in one job: twice the SAEs (memory, state, SAE FLOPs, update overhead), one forward pass and buffer
    two = plan.sae_job_cost(small, "m", ([0, 1, 2], [0, 1]))
    assert two.memory.sae_training == 6 * 40_300 * 16 and two.memory.training_state == 6 * 40_300 * 12
    assert two.memory.activation_buffer == memory.activation_buffer and two.memory.model_weights == memory.model_weights
    flops = 2 * 3 * 121_300 * 1_280 + 6 * 12 * 100 * 200 * 7_680
    assert two.seconds == pytest.approx(60 + read + flops / (989e12 * 0.2) + 120 * 6 * 1e-3)
    seeded = plan.model_plan(validate_config({**small_raw, "sae": {**small_raw["sae"], "seeds": [0, 1]}}), "m")
    assert seeded.sae_weight_bytes == 2 * model.sae_weight_bytes and seeded.score_bytes == 2 * model.score_bytes


def test_a_small_stream_buffer_holds_one_chunk_and_forwards_the_budget(small_raw):
    config = validate_config({**small_raw, "activations": {**small_raw["activations"], "buffer_tokens": 400}})
    # 400 // 31 = 12 rows of 31 kept tokens = 372 per chunk (the old chunk is released before the next); every chunk
    # served is a forward pass: 372 // 64 = 5 batches a chunk, 120 updates = 24 chunks of 12 rows of 32 positions
    assert plan.held_tokens(config, "m") == 372
    assert plan.forward_positions(config, "m") == 24 * 12 * 32
    assert plan.sae_job_cost(config, "m", ([3], [0])).memory.activation_buffer == 372 * 1 * 100 * 2


def test_warnings_name_resources_below_the_estimate(small, small_raw):
    # host memory of the score job: 4 GB baseline + a 40 MB revision + clean log-probabilities 256 x 50,304 x 4 B ...
    # is above the configured 3,000 MiB; the 600-minute runtime is ample
    found = plan.warnings(small, plan.model_plan(small, "m"))
    assert len(found) == 1 and found[0].startswith("m: resources.mem_mb 3,000 is below the estimated")
    small_raw["models"]["m"]["resources"] = {"mem_mb": 10**6}
    roomy = validate_config(small_raw)
    assert plan.warnings(roomy, plan.model_plan(roomy, "m")) == []


def test_plan_command_reads_the_pythia_config_in_seconds():
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "featurebirth", "plan", "--configfile", "config/pythia.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**JOB_ENV, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert time.perf_counter() - started < 20
    config = load_config(REPO / "config" / "pythia.yaml")
    total = next(line for line in run.stdout.splitlines() if line.startswith("total"))
    assert total.split()[1] == f"{len(grid(config)):,}"
    assert f"All jobs: {sum(plan.rule_counts(config).values()):,}" in run.stdout


def test_local_rules_are_the_workflows():
    """The plan's local rules are the rules' `localrules:` declarations and the target rule (a dry run prints every
    job as `rule`, so the declarations are read here)."""
    declared = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.findall(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", path.read_text(), flags=re.MULTILINE):
            declared |= {name.strip(" \t,") for name in block.splitlines()}
    assert plan.LOCAL_RULES == declared | {"all"}


def _rule_counts(plan_output: str) -> dict[str, int]:
    """The per-rule counts of `snakemake -n --quiet rules` (its first 'Job stats' table)."""
    lines = plan_output.split("Job stats:", 1)[1].splitlines()[3:]
    rows = [line.split() for line in lines[: next(i for i, line in enumerate(lines) if line.startswith("total"))]]
    return {rule: int(count) for rule, count in rows}


def _cut_pythia(tmp_path) -> str:
    """config/pythia.yaml cut to 70m and 1b (10 of its layers, groups of 4: 4 + 4 + 2) at two steps."""
    raw = yaml.safe_load((REPO / "config" / "pythia.yaml").read_text())
    raw["models"] = {name: raw["models"][name] for name in ("pythia-70m", "pythia-1b")}
    raw["models"]["pythia-1b"]["layers"] = list(range(10))
    raw["models"]["pythia-1b"]["sae"]["layers_per_job"] = 4
    raw["steps"] = [0, 1000]
    path = tmp_path / "pythia-cut.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.workflow
@pytest.mark.parametrize("which", ["micro", "pythia-cut", "pythia"])
def test_plan_counts_are_snakemakes(which, tmp_path, micro):
    """The plan's jobs per rule are what `snakemake -n --quiet rules` counts, for the micro config, a cut-down Pythia
    config and the whole Pythia config (real text)."""
    path = {
        "micro": str(TESTS / "micro.yaml"),
        "pythia-cut": _cut_pythia(tmp_path),
        "pythia": str(REPO / "config" / "pythia.yaml"),
    }[which]
    args = ["--configfile", path, "--config", f"results={tmp_path / 'results'}"]
    env = {**JOB_ENV, "HF_HUB_OFFLINE": "1"}
    counted = snakemake("-n", "--quiet", "rules", *args, env=env)
    assert counted.returncode == 0, counted.stderr[-3000:]
    config = micro if which == "micro" else load_config(path)
    assert _rule_counts(counted.stdout) == plan.rule_counts(config)
    if which == "pythia-cut":
        assert plan.rule_counts(config)["train_saes"] == 2 * (1 + 3)


@pytest.mark.workflow
def test_sae_weight_estimate_matches_the_saved_files(micro_run, micro):
    """Each cell's ae.pt holds the plan's fp32 parameter bytes plus torch.save's few kB of framing."""
    results, _, _ = micro_run
    for model in micro["models"]:
        estimate = plan.model_plan(micro, model).sae_weight_bytes / plan.model_plan(micro, model).cells
        for step in micro["steps"]:
            for layer in model_layers(micro, model):
                size = os.path.getsize(layout.sae_files(results, model, step, layer)[0])
                assert estimate <= size <= estimate + 8_000, (model, step, layer, size, estimate)


def test_sae_job_groups_keep_trained_groups_and_cut_the_rest(small, small_raw):
    """The one planning function of SAE jobs (the Snakefile's and the plan's): trained groups by their manifests'
    names, the studied (layer, seed)s they leave out cut into groups of sae.layers_per_job (3 here), seeds missing the
    same layers in one job; a name without seeds is seed 0's."""
    assert sae_job_groups(small, "m", []) == [([0, 1, 2], [0]), ([3], [0])]
    assert sae_job_groups(small, "m", [([1], [0])]) == [([1], [0]), ([0, 2, 3], [0])]
    assert sae_job_groups(small, "m", [([0, 1, 2, 3], [0])]) == [([0, 1, 2, 3], [0])]
    assert [layout.group_name(*group) for group in sae_job_groups(small, "m", [])] == ["0-1-2", "3"]
    # a seed added: only it is trained, seed 0's jobs keep their names and their settings
    small_raw["sae"]["seeds"] = [0, 7, 8]
    seeded = validate_config(small_raw)
    trained = [([0, 1, 2], [0]), ([3], [0])]
    assert sae_job_groups(seeded, "m", trained) == [([0, 1, 2], [0]), ([3], [0]), ([0, 1, 2], [7, 8]), ([3], [7, 8])]
    assert layout.group_name([0, 1, 2], [7, 8]) == "0-1-2.seeds-7-8"
    assert sae_training_settings(seeded, "m", [0]) == sae_training_settings(small, "m", [0])
    # reordered or dropped, the seeds keep their trained jobs, names and settings: nothing is retrained
    small_raw["sae"]["seeds"] = [8, 0, 7]
    reordered = validate_config(small_raw)
    done = sae_job_groups(seeded, "m", trained)
    assert sae_job_groups(reordered, "m", done) == done
    assert sae_training_settings(reordered, "m", [7, 8]) == sae_training_settings(seeded, "m", [7, 8])
    small_raw["sae"]["seeds"] = [7]
    assert sae_job_groups(validate_config(small_raw), "m", done) == [([0, 1, 2], [7, 8]), ([3], [7, 8])]
    small_raw["sae"]["seeds"] = [0, 7, 8]
    # seeds missing different layers train apart: seed 7 has layer 3 already
    assert sae_job_groups(seeded, "m", [([0, 1, 2, 3], [0]), ([3], [7])]) == [
        ([0, 1, 2, 3], [0]),
        ([3], [7]),
        ([0, 1, 2], [7]),
        ([0, 1, 2], [8]),
        ([3], [8]),
    ]
    # a trained group of layers no longer studied plans nothing, nor one of seeds no longer configured
    small_raw["models"]["m"]["layers"] = [3]
    studied = validate_config(small_raw)
    assert sae_job_groups(studied, "m", [([0, 1], [0])]) == [([3], [0, 7, 8])]
    assert sae_job_groups(studied, "m", [([3], [9])]) == [([3], [0, 7, 8])]
