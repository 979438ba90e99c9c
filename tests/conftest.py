"""Shared fixtures: the micro config and a corpus plus one checkpoint built from it once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from featurebirth.config import model_spec, validate_config
from featurebirth.corpus import build_corpus
from featurebirth.toy_models import train_checkpoint

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="session")
def micro_raw() -> dict:
    return yaml.safe_load((TESTS / "micro.yaml").read_text())


@pytest.fixture(scope="session")
def micro(micro_raw) -> dict:
    return validate_config(micro_raw)


@pytest.fixture(scope="session")
def corpus_dir(micro, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(micro["corpus"], micro["probes"], out)
    return out


@pytest.fixture(scope="session")
def checkpoint(micro, corpus_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-a-step6"
    train_checkpoint(model_spec(micro, "tiny-a"), 6, corpus_dir / "tokens.h5", corpus_dir / "tokenizer", out)
    return out
