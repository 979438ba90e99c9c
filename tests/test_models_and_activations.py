"""Checkpoints round-trip through from_pretrained; hooked block outputs are the residual stream."""

import h5py
import numpy as np
import pytest
import torch

from featurebirth.activations import (
    STORAGE_DTYPE,
    capture_blocks,
    layer_activations,
    probe_activations,
    target_token_index,
    token_rows,
)
from featurebirth.config import model_spec
from featurebirth.corpus import ProbeItem, read_probes
from featurebirth.io import read_json
from featurebirth.layout import CHECKPOINT_METADATA
from featurebirth.models import load_model, load_tokenizer, weight_fingerprint
from featurebirth.toy_models import train_model

CPU = torch.device("cpu")


def _train_ids(corpus) -> torch.Tensor:
    with h5py.File(corpus("tokens")) as handle:
        return torch.from_numpy(handle["train"][:].astype(np.int64))


def test_checkpoint_reloads_with_same_logits(micro, corpus, checkpoint):
    train_ids = _train_ids(corpus)
    in_memory, metadata = train_model(model_spec(micro, "tiny-a"), 6, train_ids, load_tokenizer(corpus("tokenizer")))
    reloaded = load_model(checkpoint, CPU)
    batch = train_ids[:4]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch).logits, in_memory(batch).logits, rtol=0, atol=1e-6)
    saved = read_json(checkpoint / CHECKPOINT_METADATA)
    assert saved["step"] == 6 and saved["tokens_seen"] == 6 * 8 * 32
    assert saved["train_loss_last"] == metadata["train_loss_last"]
    assert load_tokenizer(checkpoint).eos_token == "<|endoftext|>"


def test_training_moves_weights_and_step0_is_init(micro, corpus, checkpoint):
    init, _ = train_model(model_spec(micro, "tiny-a"), 0, _train_ids(corpus), load_tokenizer(corpus("tokenizer")))
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


def _sae_rows(corpus, n: int) -> torch.Tensor:
    with h5py.File(corpus("tokens")) as handle:
        return torch.from_numpy(handle["sae"][:n].astype(np.int64))


def test_hooked_block_output_is_the_residual_stream(checkpoint, corpus):
    model = load_model(checkpoint, CPU)
    ids = _sae_rows(corpus, 3)
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
        hooks_inside = [len(block._forward_hooks) for block in model.gpt_neox.layers]
    # ours are removed on exit (transformers keeps hooks of its own for output_hidden_states)
    assert [len(block._forward_hooks) for block in model.gpt_neox.layers] == [n - 1 for n in hooks_inside]


def test_layer_activations_are_the_block_outputs(checkpoint, corpus):
    model = load_model(checkpoint, CPU)
    ids = _sae_rows(corpus, 5)
    # batch 2 over 5 rows: the last batch is short; every position kept
    activations = layer_activations(model, ids, [0, 1], batch_size=2, exclude_first=0)
    assert sorted(activations) == [0, 1]
    for layer in (0, 1):
        assert activations[layer].shape == (5 * 32, 16)
        assert activations[layer].dtype == STORAGE_DTYPE == torch.float16
        assert activations[layer].device == CPU
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
        expected_0 = hidden[1].reshape(-1, 16)
        # the last block's hidden_states entry has the final LayerNorm applied: apply it to ours too
        final_1 = model.gpt_neox.final_layer_norm(activations[1].float().reshape(5, 32, 16))
    torch.testing.assert_close(activations[0].float(), expected_0, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(final_1, hidden[2], rtol=1e-2, atol=1e-2)
    # row-major: token t of row r is row r * seq_len + t
    torch.testing.assert_close(activations[0][3 * 32 + 7].float(), hidden[1][3, 7], rtol=2e-3, atol=2e-3)
    # a layer alone, in other batches, holds the same values
    alone = layer_activations(model, ids, [1], batch_size=5, exclude_first=0)
    assert sorted(alone) == [1]
    torch.testing.assert_close(alone[1], activations[1], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("exclude_first", [1, 3])
def test_layer_activations_leave_out_the_first_positions(checkpoint, corpus, exclude_first):
    """exclude_first drops the first positions of every row, and nothing else: the same forward passes' values."""
    model = load_model(checkpoint, CPU)
    ids = _sae_rows(corpus, 5)
    every = layer_activations(model, ids, [0, 1], batch_size=2, exclude_first=0)
    kept = layer_activations(model, ids, [0, 1], batch_size=2, exclude_first=exclude_first)
    for layer in (0, 1):
        assert kept[layer].shape == (5 * (32 - exclude_first), 16) and kept[layer].dtype == STORAGE_DTYPE
        # row-major: row r's positions exclude_first..31 are rows r * (32 - exclude_first) + t - exclude_first
        expected = every[layer].reshape(5, 32, 16)[:, exclude_first:].reshape(-1, 16)
        assert torch.equal(kept[layer], expected), layer
    # the left-out positions are run, only not kept: they stay in every context (cutting them off the input
    # instead would change what the later positions see)
    truncated = layer_activations(model, ids[:, exclude_first:], [1], batch_size=2, exclude_first=0)
    assert truncated[1].shape == kept[1].shape and not torch.allclose(truncated[1].float(), kept[1].float(), atol=1e-2)


def test_probe_activations_take_the_target_token(checkpoint, corpus):
    model, tokenizer = load_model(checkpoint, CPU), load_tokenizer(checkpoint)
    items = read_probes(corpus("probes"))[:5]
    # targets inside the text, in contexts of different lengths (batches are padded)
    items += [
        ProbeItem(5, "animals", "dog", 0, "the dog ate the hay", 4, 7),
        ProbeItem(6, "colours", "red", 0, "red", 0, 3),
        ProbeItem(7, "numbers", "two", 1, "then came the two and so it was very two", 14, 17),
    ]
    out = probe_activations(model, tokenizer, items, batch_size=3)
    assert out.shape == (2, len(items), 16) and out.dtype == np.float32
    for i, item in enumerate(items):
        ids = tokenizer(item.text, return_tensors="pt")["input_ids"]
        target = item.text[: item.target_start].count(" ")  # word-level tokenizer: one token per word
        assert tokenizer.convert_ids_to_tokens(ids[0, target].item()) == item.word
        with capture_blocks(model, [0, 1]) as captured, torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states
        np.testing.assert_allclose(out[0, i], hidden[1][0, target].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out[1, i], captured[1][0, target].numpy(), rtol=1e-5, atol=1e-5)
    # the last "two" of item 7 is not its target: the activation differs
    assert not np.allclose(out[1, 7], captured[1][0, -1].numpy(), atol=1e-3)


def test_target_token_index():
    offsets = [(0, 3), (4, 7), (8, 11), (12, 13)]
    assert target_token_index(offsets, 4, 7) == 1
    assert target_token_index(offsets, 8, 11) == 2
    # a word split into several tokens: its last token
    assert target_token_index([(0, 2), (2, 5), (6, 8)], 0, 5) == 1
    with pytest.raises(ValueError, match="no token covers characters 14..20"):
        target_token_index(offsets, 14, 20)


@pytest.mark.parametrize(("max_tokens", "rows"), [(32, 1), (100, 3), (320, 10), (1280, 40), (10_000, 40)])
def test_token_rows_respect_max_tokens(checkpoint, corpus, max_tokens, rows):
    ids = token_rows(corpus("tokens"), checkpoint, "sae", max_tokens, 32)
    assert ids.shape == (rows, 32) and ids.dtype == torch.int64
    assert ids.numel() <= max_tokens  # and every row the split holds (40) when it holds fewer
    torch.testing.assert_close(ids, _sae_rows(corpus, rows), rtol=0, atol=0)
    with h5py.File(corpus("eval_tokens")) as handle:
        evaluation = token_rows(corpus("eval_tokens"), checkpoint, "eval", max_tokens, 32)
        assert evaluation.tolist() == handle["eval"][: min(rows, 8)].tolist()


@pytest.mark.parametrize(("max_tokens", "rows"), [(100, 3), (320, 10), (10_000, 40)])
def test_token_rows_from_text_equal_the_token_file(checkpoint, corpus, max_tokens, rows):
    """Text tokenised by the checkpoint's own tokenizer (the hub path) gives the toy token file's rows."""
    from_text = token_rows(corpus("sae_text"), checkpoint, "sae", max_tokens, 32)
    assert from_text.shape == (rows, 32)
    assert from_text.numel() <= max_tokens
    torch.testing.assert_close(from_text, _sae_rows(corpus, rows), rtol=0, atol=0)


def test_token_rows_below_one_row_fail_alike(checkpoint, corpus):
    with pytest.raises(ValueError, match="10 tokens is less than one row of 32"):
        token_rows(corpus("sae_text"), checkpoint, "sae", 10, 32)
    with pytest.raises(ValueError, match="10 tokens is less than one row of 32"):
        token_rows(corpus("tokens"), checkpoint, "sae", 10, 32)


def test_spread_rows_sample_the_whole_split(checkpoint, corpus):
    spread = token_rows(corpus("tokens"), checkpoint, "sae", 10 * 32, 32, spread=True)
    with h5py.File(corpus("tokens")) as handle:
        every = handle["sae"][:]
    # ten rows evenly spaced over the 40 of the split: 0, 4, 9, 13, 17, 22, 26, 30, 35, 39
    assert spread.tolist() == every[[0, 4, 9, 13, 17, 22, 26, 30, 35, 39]].tolist()
