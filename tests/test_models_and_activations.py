"""Checkpoints round-trip through from_pretrained; hooked block outputs are the residual stream."""

import h5py
import numpy as np
import torch

from featurebirth.activations import cache_probe_activations, cache_training_activations, capture_blocks, layer_dataset
from featurebirth.config import model_spec
from featurebirth.corpus import read_probes
from featurebirth.io import read_json
from featurebirth.models import load_model, load_tokenizer, weight_fingerprint
from featurebirth.layout import CHECKPOINT_METADATA
from featurebirth.toy_models import train_model

CPU = torch.device("cpu")


def test_checkpoint_reloads_with_same_logits(micro, corpus_dir, checkpoint):
    with h5py.File(corpus_dir / "tokens.h5") as handle:
        train_ids = torch.from_numpy(handle["train"][:].astype(np.int64))
    in_memory, metadata = train_model(model_spec(micro, "tiny-a"), 6, train_ids, load_tokenizer(corpus_dir / "tokenizer"))
    reloaded = load_model(checkpoint, CPU)
    batch = train_ids[:4]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch).logits, in_memory(batch).logits, rtol=0, atol=1e-6)
    saved = read_json(checkpoint / CHECKPOINT_METADATA)
    assert saved["step"] == 6 and saved["tokens_seen"] == 6 * 8 * 32
    assert saved["train_loss_last"] == metadata["train_loss_last"]
    assert load_tokenizer(checkpoint).eos_token == "<|endoftext|>"


def test_training_moves_weights_and_step0_is_init(micro, corpus_dir, checkpoint):
    with h5py.File(corpus_dir / "tokens.h5") as handle:
        ids = torch.from_numpy(handle["train"][:].astype(np.int64))
    init, _ = train_model(model_spec(micro, "tiny-a"), 0, ids, load_tokenizer(corpus_dir / "tokenizer"))
    trained = load_model(checkpoint, CPU)
    name = "gpt_neox.embed_in.weight"
    assert not torch.equal(init.state_dict()[name], trained.state_dict()[name])
    # fingerprints: different weights differ; the same weights agree after a reload and in float16
    assert weight_fingerprint(init) != weight_fingerprint(trained)
    assert weight_fingerprint(load_model(checkpoint, CPU)) == weight_fingerprint(trained)
    half = load_model(checkpoint, CPU).half()
    exact_in_half = load_model(checkpoint, CPU)
    exact_in_half.load_state_dict({k: v.half().float() for k, v in exact_in_half.state_dict().items()})
    assert weight_fingerprint(half) == weight_fingerprint(exact_in_half)


def test_hooked_block_output_is_the_residual_stream(checkpoint, corpus_dir):
    model = load_model(checkpoint, CPU)
    with h5py.File(corpus_dir / "tokens.h5") as handle:
        ids = torch.from_numpy(handle["sae"][:3].astype(np.int64))
    with capture_blocks(model, [0, 1]) as captured, torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
        # hidden_states[i + 1] is block i's output, except the last entry (final LayerNorm applied)
        torch.testing.assert_close(captured[0], hidden[1])
        torch.testing.assert_close(model.gpt_neox.final_layer_norm(captured[1]), hidden[-1])
        manual = model.gpt_neox.layers[1](
            hidden[1], position_embeddings=model.gpt_neox.rotary_emb(hidden[1], torch.arange(ids.shape[1])[None])
        )
        manual = manual[0] if isinstance(manual, tuple) else manual
        torch.testing.assert_close(captured[1], manual, rtol=1e-4, atol=1e-4)


def test_training_cache_holds_each_layer(checkpoint, corpus_dir, tmp_path):
    out = tmp_path / "train.h5"
    n = cache_training_activations(
        checkpoint, corpus_dir / "tokens.h5", [0, 1], out, model_name="tiny-a", step=6,
        batch_size=16, max_tokens=1280, device=CPU,
    )
    assert n == 1280
    model = load_model(checkpoint, CPU)
    with h5py.File(corpus_dir / "tokens.h5") as handle:
        ids = torch.from_numpy(handle["sae"][:2].astype(np.int64))
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True).hidden_states[1].reshape(-1, 16)
    with h5py.File(out) as handle:
        assert handle.attrs["model"] == "tiny-a" and handle.attrs["step"] == 6
        dataset = handle[layer_dataset(0)]
        assert dataset.dtype == np.float16 and dataset.shape == (1280, 16) and dataset.chunks is not None
        assert dataset.attrs["layer"] == 0 and dataset.attrs["d_model"] == 16 and dataset.attrs["n_tokens"] == 1280
        np.testing.assert_allclose(dataset[:64].astype(np.float32), expected.numpy(), rtol=2e-3, atol=2e-3)
    assert not list(tmp_path.glob(".tmp-*"))


def test_probe_cache_takes_the_target_token(checkpoint, corpus_dir, tmp_path):
    out = tmp_path / "probes.h5"
    n = cache_probe_activations(checkpoint, corpus_dir / "probes.tsv", out, model_name="tiny-a", step=6, batch_size=7, device=CPU)
    items = read_probes(corpus_dir / "probes.tsv")
    assert n == len(items)
    model, tokenizer = load_model(checkpoint, CPU), load_tokenizer(checkpoint)
    item = items[5]
    ids = tokenizer(item.text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True).hidden_states[1][0, -1]
    with h5py.File(out) as handle:
        assert handle["activations"].shape == (2, n, 16)
        assert handle["category"][5].decode() == item.category
        np.testing.assert_allclose(handle["activations"][0, 5].astype(np.float32), expected.numpy(), rtol=2e-3, atol=2e-3)
