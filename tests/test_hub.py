"""The hub code path, offline, against a Hugging Face cache this test fills itself from a toy checkpoint."""

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from featurebirth import layout
from featurebirth.activations import layer_activations, probe_activations, token_rows
from featurebirth.config import model_spec, validate_config
from featurebirth.corpus import read_probes
from featurebirth.hub import MissingRevisionError, is_pointer, prefetch, read_pointer
from featurebirth.io import write_json
from featurebirth.models import checkpoint_metadata, load_model, load_tokenizer, weight_fingerprint

REPO_ID = "featurebirth-test/tiny-neox"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HUB_MODEL = {"source": "hub", "repo": REPO_ID, "tokens_per_step": 2_097_152, "d_model": 16, "n_layers": 2}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def hub_cache(checkpoint, tmp_path_factory):
    """A hub cache laid out as huggingface_hub writes it, holding revision 'step6' of REPO_ID."""
    cache = tmp_path_factory.mktemp("hub-cache")
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(checkpoint, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "step6").write_text(COMMIT)
    (repo / "refs" / "ckpt-6").write_text(COMMIT)
    return cache


def hub_spec(micro_raw, **model) -> dict:
    """The model spec the prefetch job gets for a hub model added to the micro config (schema defaults filled)."""
    raw = copy.deepcopy(micro_raw)
    raw["models"]["tiny-neox"] = {**HUB_MODEL, **model}
    return model_spec(validate_config(raw), "tiny-neox")


@pytest.fixture(scope="module")
def spec(micro_raw) -> dict:
    return hub_spec(micro_raw)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _pointer(results: Path, step: int = 6) -> Path:
    return Path(layout.hub_pointer(results, "tiny-neox", step))


@pytest.fixture
def pointer(spec, hub_cache, tmp_path) -> Path:
    """The prefetch pointer of revision step6 in a fresh results folder."""
    path = _pointer(tmp_path)
    prefetch(spec, 6, hub_cache, path, offline=True)
    return path


def test_prefetch_finds_the_revision_and_loads_like_the_folder(spec, hub_cache, checkpoint, tmp_path):
    assert spec["revision"] == "step{step}"  # the schema's default, Pythia's naming
    pointer_path = _pointer(tmp_path)
    pointer = prefetch(spec, 6, hub_cache, pointer_path, offline=True)
    assert pointer["revision"] == "step6" and pointer["snapshot"].endswith(COMMIT)
    assert pointer["repo"] == REPO_ID and pointer["step"] == 6 and pointer["tokens_seen"] == 6 * 2_097_152
    assert read_pointer(pointer_path) == pointer
    assert is_pointer(pointer_path) and not is_pointer(checkpoint)
    assert not list(tmp_path.rglob(".tmp-*"))
    from_hub, from_folder = load_model(pointer_path, CPU), load_model(checkpoint, CPU)
    ids = torch.arange(1, 17).reshape(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(from_hub(ids).logits, from_folder(ids).logits, rtol=0, atol=0)
    metadata = checkpoint_metadata(from_hub, pointer_path)
    assert metadata["tokens_seen"] == 6 * 2_097_152
    assert metadata["fingerprint"] == weight_fingerprint(from_folder)
    assert load_tokenizer(pointer_path).eos_token == "<|endoftext|>"


def test_revision_pattern_names_the_revision(micro_raw, hub_cache, tmp_path):
    pointer = prefetch(hub_spec(micro_raw, revision="ckpt-{step}"), 6, hub_cache, _pointer(tmp_path), offline=True)
    assert pointer["revision"] == "ckpt-6" and pointer["snapshot"].endswith(COMMIT)


def test_missing_revision_is_named(spec, hub_cache, tmp_path):
    with pytest.raises(MissingRevisionError, match=r"revision 'step7' of 'featurebirth-test/tiny-neox'"):
        prefetch(spec, 7, hub_cache, _pointer(tmp_path, 7), offline=True)
    assert not _pointer(tmp_path, 7).exists()
    # a pointer whose revision left the cache fails in the compute job with the same message
    stale = _pointer(tmp_path / "stale", 7)
    stale.parent.mkdir(parents=True)
    write_json({"repo": REPO_ID, "revision": "step7", "step": 7, "cache_dir": str(hub_cache), "snapshot": ""}, stale)
    with pytest.raises(MissingRevisionError, match=r"revision 'step7'.*not in the hub cache"):
        load_model(stale, CPU)


def test_activations_through_a_pointer_equal_the_folder(pointer, checkpoint, corpus):
    items = read_probes(corpus("probes"))
    through_pointer = probe_activations(load_model(pointer, CPU), load_tokenizer(pointer), items, batch_size=8)
    from_folder = probe_activations(load_model(checkpoint, CPU), load_tokenizer(checkpoint), items, batch_size=8)
    assert through_pointer.shape == (2, len(items), 16)
    np.testing.assert_array_equal(through_pointer, from_folder)
    ids = token_rows(corpus("sae_text"), pointer, "sae", 320, 32)
    hub_layers = layer_activations(load_model(pointer, CPU), ids, [0, 1], batch_size=4, exclude_first=1)
    folder_layers = layer_activations(load_model(checkpoint, CPU), ids, [0, 1], batch_size=4, exclude_first=1)
    for layer in (0, 1):
        assert hub_layers[layer].shape == (10 * 31, 16)  # 320 tokens = 10 rows of 32, the first position left out
        assert torch.equal(hub_layers[layer], folder_layers[layer])
    hub_metadata = checkpoint_metadata(load_model(pointer, CPU), pointer)
    folder_metadata = checkpoint_metadata(load_model(checkpoint, CPU), checkpoint)
    assert hub_metadata["tokens_seen"] == 6 * 2_097_152 and folder_metadata["tokens_seen"] == 6 * 8 * 32
    assert hub_metadata["fingerprint"] == folder_metadata["fingerprint"]
    assert hub_metadata["n_params"] == folder_metadata["n_params"]


@pytest.mark.parametrize(("max_tokens", "rows"), [(320, 10), (330, 10), (100, 3), (10_000, 40)])
def test_hub_models_tokenise_the_sae_text(pointer, checkpoint, corpus, max_tokens, rows):
    ids = token_rows(corpus("sae_text"), pointer, "sae", max_tokens, 32)
    assert ids.shape == (rows, 32) and ids.dtype == torch.int64
    assert ids.numel() <= max_tokens
    tokenizer = load_tokenizer(pointer)
    first_words = corpus("sae_text").read_text().split()[:5]
    assert tokenizer.convert_ids_to_tokens(ids[0, :5].tolist()) == first_words
    # the toy tokenizer reads the text as the corpus's token file holds it
    torch.testing.assert_close(ids, token_rows(corpus("tokens"), checkpoint, "sae", max_tokens, 32), rtol=0, atol=0)


def test_hub_models_tokenise_the_eval_text_in_rows_of_seq_len(pointer, corpus):
    ids = token_rows(corpus("eval_text"), pointer, "eval", 256, 16)
    assert ids.shape == (16, 16)
    assert ids.flatten().tolist() == load_tokenizer(pointer)(corpus("eval_text").read_text())["input_ids"][:256]
