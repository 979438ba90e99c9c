"""Dry-run plans through the SLURM profile: resources, GPU requests and job shapes, with neither SLURM nor network."""

import pytest
import yaml
from conftest import JOB_ENV, REPO, TESTS, planned_jobs, snakemake

from featurebirth import plan as cost_plan
from featurebirth.config import grid, layer_groups, load_config, model_layers, sae_settings

pytestmark = pytest.mark.workflow

GPU_RULES = ("train_saes", "score")


def test_slurm_plan_asks_for_gpus_on_the_compute_rules_only():
    plan = snakemake(
        "-n",
        "--profile",
        "profiles/slurm",
        "--configfile",
        str(TESTS / "micro.yaml"),
        "--config",
        "results=/nonexistent/plan-only",
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    gpu_by_rule = {}
    for job in planned_jobs(plan.stdout):
        gpu_by_rule.setdefault(job["rule"], set()).add("gpu=1" in job["resources"].split(", "))
    for name in GPU_RULES:
        assert gpu_by_rule[name] == {True}, name
    assert gpu_by_rule["toy_model"] == {False}


def test_pythia_plan_with_the_slurm_profile_needs_neither_slurm_nor_network(tmp_path):
    """config/pythia.yaml, cut to its smallest and largest model and two steps, plans offline."""
    config = yaml.safe_load((REPO / "config" / "pythia.yaml").read_text())
    config["models"] = {name: config["models"][name] for name in ("pythia-70m", "pythia-12b")}
    config["steps"] = [0, 143000]
    cut = tmp_path / "pythia-cut.yaml"
    cut.write_text(yaml.safe_dump(config))
    plan = snakemake(
        "-n",
        "--profile",
        "profiles/slurm",
        "--configfile",
        str(cut),
        "--config",
        f"results={tmp_path / 'results'}",
        env={**JOB_ENV, "HF_HUB_OFFLINE": "1"},
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = planned_jobs(plan.stdout)

    def of(rule: str, model: str) -> list[dict]:
        return [job for job in jobs if job["rule"] == rule and job["wildcards"].get("model") == model]

    prefetch = [job for job in jobs if job["rule"] == "prefetch"]
    # 2 models x 2 steps; a local rule (the real-SLURM test shows local rules are never submitted)
    assert len(prefetch) == 4 and not any("gpu=1" in job["resources"] for job in prefetch)
    # a download needs little memory, whatever the model's compute floor
    assert all("mem_mb=2000" in job["resources"].split(", ") for job in prefetch)
    # 12b: 36 layers in groups of 6, both seeds in each (config/pythia.yaml's memory arithmetic) -> 6 SAE jobs per step
    sae_12b = of("train_saes", "pythia-12b")
    assert sorted({job["wildcards"]["group"] for job in sae_12b}) == sorted(
        "-".join(map(str, range(start, start + 6))) + ".seeds-0-1" for start in range(0, 36, 6)
    )
    assert len(sae_12b) == 2 * 6
    assert all(all(f in job["resources"] for f in ("gpu=1", "mem_mb=64000", "runtime=180")) for job in sae_12b)
    assert [job["wildcards"]["group"] for job in of("train_saes", "pythia-70m")] == ["0-1-2-3-4-5.seeds-0-1"] * 2
    assert len(of("score", "pythia-12b")) == 2 and all("gpu=1" in job["resources"] for job in of("score", "pythia-70m"))


def test_pythia_config_has_the_real_suite():
    config = load_config(REPO / "config" / "pythia.yaml")
    depths = {name: spec["n_layers"] for name, spec in config["models"].items()}
    assert depths == {
        "pythia-70m": 6,
        "pythia-160m": 12,
        "pythia-410m": 24,
        "pythia-1b": 16,
        "pythia-1.4b": 24,
        "pythia-2.8b": 32,
        "pythia-6.9b": 32,
        "pythia-12b": 36,
    }
    assert len(config["steps"]) == 25 and config["steps"][0] == 0 and config["steps"][-1] == 143000
    assert not {50000, 58000} & set(config["steps"])
    assert all(spec["layers"] == "all" and spec["source"] == "hub" for spec in config["models"].values())
    assert len(grid(config)) == 25 * sum(depths.values())
    # real text, at least 20M tokens per SAE, one pass, streamed
    assert config["corpus"]["source"] == "text" and config["activations"]["mode"] == "stream"
    assert all(sae_settings(config, name)["tokens"] >= 20_000_000 for name in config["models"])
    assert all(sae_settings(config, name)["max_epochs"] == 1 for name in config["models"])
    # every SAE job fits an 80 GB GPU and its model's memory and runtime floors (the cost plan's arithmetic);
    # host memory of the largest group: one 262,144-token chunk x layers x d_model x 2 B, under 25 GB
    for name, spec in config["models"].items():
        assert cost_plan.warnings(config, cost_plan.model_plan(config, name)) == [], name
        largest = max(len(group) for group in layer_groups(config, name, model_layers(config, name)))
        assert 262_144 * largest * spec["d_model"] * 2 < 25e9, name


def test_the_pythia_plan_prepares_the_text_once_and_checks_it_per_model(tmp_path):
    """config/pythia.yaml plans offline: one fetch and one tokenization for every model, a check per model."""
    plan = snakemake(
        "-n",
        "--profile",
        "profiles/slurm",
        "--configfile",
        str(REPO / "config" / "pythia.yaml"),
        "--config",
        f"results={tmp_path / 'results'}",
        env={**JOB_ENV, "HF_HUB_OFFLINE": "1"},
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = planned_jobs(plan.stdout)
    counts = {rule: sum(job["rule"] == rule for job in jobs) for rule in {job["rule"] for job in jobs}}
    # 8 sizes x 25 revisions; SAE jobs per step from the layer groups (both seeds in each): 1 + 1 + 2 + 2 + 3 + 4 + 4
    # + 6 = 23
    assert {
        rule: counts.get(rule, 0)
        for rule in (
            "fetch_text",
            "tokenize_text",
            "check_text",
            "prefetch",
            "train_saes",
            "score",
            "corpus",
            "eval_split",
        )
    } == {
        "fetch_text": 1,
        "tokenize_text": 1,
        "check_text": 8,
        "prefetch": 200,
        "train_saes": 25 * 23,
        "score": 200,
        "corpus": 0,
        "eval_split": 0,
    }
    # text preparation needs no GPU; SAE and score jobs do
    text_jobs = [job for job in jobs if job["rule"] in ("fetch_text", "tokenize_text", "check_text")]
    assert not any("gpu=1" in job["resources"].split(", ") for job in text_jobs)
    assert all("gpu=1" in job["resources"].split(", ") for job in jobs if job["rule"] in GPU_RULES)
