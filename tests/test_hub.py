"""The hub code path, offline, against a Hugging Face cache this test fills itself from a toy checkpoint."""

import shutil

import h5py
import numpy as np
import pytest
import torch

from featurebirth.activations import cache_probe_activations, training_ids
from featurebirth.hub import MissingRevisionError, prefetch, read_pointer
from featurebirth.io import write_json
from featurebirth.models import checkpoint_metadata, load_model, load_tokenizer, weight_fingerprint

REPO_ID = "featurebirth-test/tiny-neox"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SPEC = {"source": "hub", "repo": REPO_ID, "tokens_per_step": 2_097_152}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def hub_cache(checkpoint, tmp_path_factory):
    """A hub cache laid out as huggingface_hub writes it, holding revision 'step6' of REPO_ID."""
    cache = tmp_path_factory.mktemp("hub-cache")
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(checkpoint, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "step6").write_text(COMMIT)
    return cache


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_prefetch_finds_the_revision_and_loads_like_the_folder(hub_cache, checkpoint, tmp_path):
    pointer_path = tmp_path / "step6.json"
    pointer = prefetch(SPEC, 6, hub_cache, pointer_path, offline=True)
    assert pointer["revision"] == "step6" and pointer["snapshot"].endswith(COMMIT)
    assert read_pointer(pointer_path) == pointer
    from_hub, from_folder = load_model(pointer_path, CPU), load_model(checkpoint, CPU)
    ids = torch.arange(1, 17).reshape(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(from_hub(ids).logits, from_folder(ids).logits, rtol=0, atol=0)
    metadata = checkpoint_metadata(from_hub, pointer_path)
    assert metadata["tokens_seen"] == 6 * 2_097_152
    assert metadata["fingerprint"] == weight_fingerprint(from_folder)
    assert load_tokenizer(pointer_path).eos_token == "<|endoftext|>"


def test_missing_revision_is_named(hub_cache, tmp_path):
    with pytest.raises(MissingRevisionError, match=r"revision 'step7' of 'featurebirth-test/tiny-neox'"):
        prefetch(SPEC, 7, hub_cache, tmp_path / "step7.json", offline=True)
    assert not (tmp_path / "step7.json").exists()
    # a pointer whose revision left the cache fails in the compute job with the same message
    stale = tmp_path / "stale.json"
    write_json({"repo": REPO_ID, "revision": "step7", "step": 7, "cache_dir": str(hub_cache), "snapshot": ""}, stale)
    with pytest.raises(MissingRevisionError, match=r"revision 'step7'.*not in the hub cache"):
        load_model(stale, CPU)


def test_activations_through_a_pointer_equal_the_folder(hub_cache, checkpoint, corpus_dir, tmp_path):
    pointer = tmp_path / "step6.json"
    prefetch(SPEC, 6, hub_cache, pointer, offline=True)
    common = {"model_name": "tiny-a", "step": 6, "batch_size": 8, "device": CPU}
    cache_probe_activations(pointer, corpus_dir / "probes.tsv", tmp_path / "hub.h5", **common)
    cache_probe_activations(checkpoint, corpus_dir / "probes.tsv", tmp_path / "folder.h5", **common)
    with h5py.File(tmp_path / "hub.h5") as hub, h5py.File(tmp_path / "folder.h5") as folder:
        np.testing.assert_array_equal(hub["activations"][:], folder["activations"][:])
        assert hub.attrs["tokens_seen"] == 6 * 2_097_152 and hub.attrs["fingerprint"] == folder.attrs["fingerprint"]


def test_hub_models_tokenise_the_corpus_text(hub_cache, corpus_dir, tmp_path):
    pointer = tmp_path / "step6.json"
    prefetch(SPEC, 6, hub_cache, pointer, offline=True)
    ids = training_ids(corpus_dir / "sae.txt", pointer, max_tokens=320, split="sae", seq_len=32)
    assert ids.shape == (10, 32)
    tokenizer = load_tokenizer(pointer)
    first_words = (corpus_dir / "sae.txt").read_text().split()[:5]
    assert tokenizer.convert_ids_to_tokens(ids[0, :5].tolist()) == first_words
