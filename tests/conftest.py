"""Shared fixtures: the micro config and a corpus plus one checkpoint built from it once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from featurebirth import layout
from featurebirth.config import model_spec, validate_config
from featurebirth.corpus import build_corpus, build_eval_split, build_probes, generate_sequences
from featurebirth.toy_models import train_checkpoint

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)]
# Jobs call `python -m featurebirth`: the test's own environment must be the one they find.
JOB_ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the repository's workflow with the test's Python; capture its output."""
    return subprocess.run([*SNAKEMAKE, *args], capture_output=True, text=True, timeout=900, env=env or JOB_ENV)


def planned_jobs(plan_output: str) -> list[dict]:
    """Every job of a dry-run plan: rule, whether it is local, its wildcards and its resources line."""
    jobs = []
    for line in plan_output.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            jobs.append(
                {
                    "rule": line.split()[1].rstrip(":"),
                    "local": line.startswith("localrule"),
                    "wildcards": {},
                    "resources": "",
                }
            )
        elif line.startswith("wildcards:") and jobs:
            pairs = line[len("wildcards:") :].strip().split(", ")
            jobs[-1]["wildcards"] = dict(pair.split("=", 1) for pair in pairs)
        elif line.startswith("resources:") and jobs:
            jobs[-1]["resources"] = line
    return jobs


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """The micro config run locally once per session: (results folder, dry-run plan, arguments)."""
    results = tmp_path_factory.mktemp("run") / "results"
    args = ["--configfile", str(TESTS / "micro.yaml"), "--config", f"results={results}"]
    plan = snakemake("-n", *args)
    run = snakemake("--cores", "2", *args)
    assert run.returncode == 0, run.stderr[-4000:]
    return results, plan, args


@pytest.fixture(scope="session")
def micro_raw() -> dict:
    """The micro config as written, its lexicon path made absolute (tests run from any folder)."""
    raw = yaml.safe_load((TESTS / "micro.yaml").read_text())
    raw["corpus"]["lexicon"] = str(REPO / raw["corpus"]["lexicon"])
    return raw


@pytest.fixture(scope="session")
def micro(micro_raw) -> dict:
    return validate_config(micro_raw)


@pytest.fixture(scope="session")
def corpus_results(micro, tmp_path_factory) -> Path:
    """A results folder holding the micro corpus (in its corpus/ folder)."""
    results = tmp_path_factory.mktemp("results")
    folder = layout.corpus_dir(results)
    build_corpus(micro["corpus"], micro["probes"], folder)
    build_eval_split(micro["corpus"], layout.in_corpus(folder, "tokenizer"), folder)
    build_probes(micro["corpus"], micro["probes"], folder)
    return results


@pytest.fixture(scope="session")
def corpus(corpus_results):
    """The micro corpus's files by name (layout.CORPUS_FILES)."""
    return lambda name: Path(layout.corpus_file(corpus_results, name))


@pytest.fixture(scope="session")
def checkpoint(micro, corpus, tmp_path_factory) -> Path:
    out = Path(layout.toy_checkpoint(tmp_path_factory.mktemp("models"), "tiny-a", 6))
    train_checkpoint(model_spec(micro, "tiny-a"), 6, corpus("tokens"), corpus("tokenizer"), out)
    return out


TEXT_MODEL_REPO = "featurebirth-test/tiny-neox"
TEXT_DATASET_REPO = "featurebirth-test/planted-text"
TEXT_SHARDS = 3  # shards of the test dataset, 30 documents each
TEXT_MODEL_COMMITS = {0: "00000000000000000000000000000000000000a0", 6: "00000000000000000000000000000000000000a6"}
TEXT_DATASET_COMMIT = "00000000000000000000000000000000000000d0"


def write_jsonl_zst(path: Path, records: list[dict]) -> None:
    """A .jsonl.zst shard, as the Pile's are."""
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(record) + "\n" for record in records).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(lines))


@pytest.fixture(scope="session")
def text_world(micro, corpus, tmp_path_factory) -> dict:
    """A hub cache, laid out as huggingface_hub leaves it, with revisions step0 and step6 of a tiny GPT-NeoX and a
    dataset of .jsonl.zst shards of generated text (in the model's word-level vocabulary); and a config using them."""
    cache = tmp_path_factory.mktemp("hub-cache")
    models = cache / f"models--{TEXT_MODEL_REPO.replace('/', '--')}"
    for step, commit in TEXT_MODEL_COMMITS.items():
        train_checkpoint(
            model_spec(micro, "tiny-a"), step, corpus("tokens"), corpus("tokenizer"), models / "snapshots" / commit
        )
        (models / "refs").mkdir(exist_ok=True)
        (models / "refs" / f"step{step}").write_text(commit)
    dataset = cache / f"datasets--{TEXT_DATASET_REPO.replace('/', '--')}"
    sequences = generate_sequences(micro["corpus"], 30 * TEXT_SHARDS, seed=11)
    for shard in range(TEXT_SHARDS):
        records = [{"text": " ".join(words), "meta": shard} for words in sequences[30 * shard : 30 * (shard + 1)]]
        write_jsonl_zst(dataset / "snapshots" / TEXT_DATASET_COMMIT / "data" / f"part-{shard:04d}.jsonl.zst", records)
    (dataset / "refs").mkdir()
    (dataset / "refs" / "main").write_text(TEXT_DATASET_COMMIT)
    raw = yaml.safe_load((TESTS / "micro.yaml").read_text())
    raw["corpus"] = {
        "source": "text",
        "seq_len": 32,
        "lexicon": str(REPO / raw["corpus"]["lexicon"]),
        "text": {
            "dataset": {"repo": TEXT_DATASET_REPO, "files": "data/*.jsonl.zst"},
            "eval_documents": 10,
            "probe_documents": 5,
        },
    }
    raw["models"] = {
        "tiny-neox": {"source": "hub", "repo": TEXT_MODEL_REPO, "d_model": 16, "n_layers": 2, "tokens_per_step": 256}
    }
    raw["steps"] = sorted(TEXT_MODEL_COMMITS)
    raw["hub"] = {"cache_dir": str(cache), "offline_prefetch": True}
    return {
        "cache": cache,
        "raw": raw,
        "shards": sorted((dataset / "snapshots" / TEXT_DATASET_COMMIT / "data").iterdir()),
    }
