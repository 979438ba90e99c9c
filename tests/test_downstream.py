"""The splice of featurebirth.downstream, on the micro checkpoint: its ends (identity, zeros) and its middle
(blocks L+1.. run by hand from a scaled residual stream), the excluded positions, batching and the floor."""

import math

import pytest
import torch
import torch.nn.functional as F

from featurebirth import downstream as ds
from featurebirth.activations import capture_blocks, token_rows
from featurebirth.models import load_model
from featurebirth.sae import dictionary_classes

CPU = torch.device("cpu")
SEQ_LEN = 32


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint, CPU)


@pytest.fixture(scope="module")
def ids(checkpoint, corpus) -> torch.Tensor:
    """The micro evaluation split: 8 rows of 32 tokens."""
    rows = token_rows(corpus("eval_tokens"), checkpoint, "eval", 256, SEQ_LEN)
    assert rows.shape == (8, SEQ_LEN)
    return rows


def identity(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


def halved(hidden: torch.Tensor) -> torch.Tensor:
    return 0.5 * hidden


def negated(hidden: torch.Tensor) -> torch.Tensor:
    return -hidden


def loss_by_hand(model, ids: torch.Tensor, layer: int, exclude_first: int, scale: float) -> float:
    """Block `layer`'s output scaled by `scale` from position exclude_first on, then blocks layer+1.., the final
    LayerNorm and the head run by hand; mean next-token loss of the predictions at exclude_first .. seq_len - 2."""
    with torch.no_grad(), capture_blocks(model, [layer]) as captured:
        model.gpt_neox(input_ids=ids)
        hidden = captured[layer].clone()
        hidden[:, exclude_first:] *= scale
        positions = torch.arange(ids.shape[1])[None]
        for block in model.gpt_neox.layers[layer + 1 :]:
            out = block(hidden, position_embeddings=model.gpt_neox.rotary_emb(hidden, positions))
            hidden = out[0] if isinstance(out, tuple) else out
        logits = model.get_output_embeddings()(model.gpt_neox.final_layer_norm(hidden))
    predictions = logits[:, exclude_first:-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(predictions, ids[:, exclude_first + 1 :].reshape(-1)).item()


@pytest.mark.parametrize("exclude_first", [0, 1, 3])
def test_clean_loss_is_the_mean_over_the_counted_predictions(model, ids, exclude_first):
    reference = ds.clean_reference(model, ids, exclude_first, batch_size=3)
    with torch.no_grad():
        logits = model(ids).logits
    expected = F.cross_entropy(
        logits[:, exclude_first:-1].reshape(-1, logits.shape[-1]), ids[:, exclude_first + 1 :].reshape(-1)
    )
    assert reference.n_predictions == 8 * (SEQ_LEN - 1 - exclude_first)
    assert reference.ce_loss_clean == pytest.approx(expected.item(), rel=1e-6)
    assert [len(batch) for batch in reference.batches] == [3, 3, 2]
    assert reference.clean_log_probs[0].shape == (3, SEQ_LEN - 1 - exclude_first, model.config.vocab_size)


@pytest.mark.parametrize("layer", [0, 1])
def test_identity_reconstruction_recovers_everything(model, ids, layer):
    reference = ds.clean_reference(model, ids, 1, batch_size=4)
    quality = ds.downstream_quality(model, reference, layer, identity, floor=1e-3)
    assert quality["ce_loss_sae"] == quality["ce_loss_clean"] == reference.ce_loss_clean
    assert quality["ce_loss_increase"] == 0.0
    assert quality["ce_loss_recovered"] == 1.0
    assert quality["kl_score"] == 1.0
    assert quality["ce_loss_zero"] - quality["ce_loss_clean"] > 0.05  # the ratio is defined


@pytest.mark.parametrize("layer", [0, 1])
def test_zero_reconstruction_recovers_nothing(model, ids, layer):
    reference = ds.clean_reference(model, ids, 1, batch_size=4)
    quality = ds.downstream_quality(model, reference, layer, ds.zero_reconstruction, floor=1e-3)
    assert quality["ce_loss_sae"] == quality["ce_loss_zero"]
    assert quality["ce_loss_recovered"] == 0.0
    assert quality["kl_score"] == 0.0
    assert quality["ce_loss_increase"] == pytest.approx(quality["ce_loss_zero"] - quality["ce_loss_clean"])


@pytest.mark.parametrize("exclude_first", [0, 1, 3])
@pytest.mark.parametrize("layer", [0, 1])
def test_half_reconstruction_is_the_loss_of_the_later_blocks_run_by_hand(model, ids, layer, exclude_first):
    reference = ds.clean_reference(model, ids, exclude_first, batch_size=5)
    sae, _ = ds.patched_losses(model, reference, layer, halved)
    zero, _ = ds.patched_losses(model, reference, layer, ds.zero_reconstruction)
    assert sae == pytest.approx(loss_by_hand(model, ids, layer, exclude_first, 0.5), rel=1e-5)
    assert zero == pytest.approx(loss_by_hand(model, ids, layer, exclude_first, 0.0), rel=1e-5)
    # halving the residual stream is neither free nor as bad as removing it
    assert reference.ce_loss_clean < sae < zero


def test_kl_is_the_mean_kl_of_clean_to_patched_per_prediction(model, ids):
    reference = ds.clean_reference(model, ids, 1, batch_size=8)
    _, kl = ds.patched_losses(model, reference, 0, negated)
    with torch.no_grad():
        clean = F.log_softmax(model(ids).logits[:, 1:-1], dim=-1)
        with ds.spliced(model, 0, negated, 1):
            patched = F.log_softmax(model(ids).logits[:, 1:-1], dim=-1)
    expected = (clean.exp() * (clean - patched)).sum(-1).mean().item()
    assert expected > 1e-3
    assert kl == pytest.approx(expected, rel=1e-5)


def test_excluded_positions_pass_through_clean(model, ids):
    received = []

    def garbage(hidden: torch.Tensor) -> torch.Tensor:
        received.append(hidden.shape)
        return torch.full_like(hidden, 1e4)

    with torch.no_grad():
        with capture_blocks(model, [0]) as captured:
            clean_logits = model(ids).logits
            clean_block = captured[0].clone()
        with ds.spliced(model, 0, garbage, 1), capture_blocks(model, [0]) as captured:
            logits = model(ids).logits
            block = captured[0]
    assert received == [(8, SEQ_LEN - 1, 16)]  # the reconstruction sees positions 1.. only
    torch.testing.assert_close(block[:, :1], clean_block[:, :1], rtol=0, atol=0)
    assert (block[:, 1:] == 1e4).all()
    # position 0's prediction is untouched (causal), every later one is not
    torch.testing.assert_close(logits[:, 0], clean_logits[:, 0], rtol=0, atol=0)
    assert ((logits[:, 1:] - clean_logits[:, 1:]).abs().amax(-1) > 1e-2).all()
    assert [len(block._forward_hooks) for block in model.gpt_neox.layers] == [0, 0]


def test_a_tuple_block_output_has_its_first_element_replaced():
    class Block(torch.nn.Module):
        def forward(self, x):
            return x + 1, "kept"

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt_neox = torch.nn.Module()
            self.gpt_neox.layers = torch.nn.ModuleList([Block()])

    model, x = Model(), torch.zeros(2, 4, 3)
    with ds.spliced(model, 0, halved, 1):
        hidden, extra = model.gpt_neox.layers[0](x)
    assert extra == "kept"
    assert hidden[:, 0].tolist() == [[1.0] * 3] * 2 and (hidden[:, 1:] == 0.5).all()


def test_batching_does_not_change_the_losses(model, ids, monkeypatch):
    whole = ds.clean_reference(model, ids, 1, batch_size=8)
    monkeypatch.setattr(ds, "LOGIT_TOKENS", 2 * (SEQ_LEN - 2))  # two rows' predictions at a time
    split = ds.clean_reference(model, ids, 1, batch_size=8)
    assert [len(batch) for batch in split.batches] == [2, 2, 2, 2]
    assert split.ce_loss_clean == pytest.approx(whole.ce_loss_clean, rel=1e-6)
    for a, b in zip(ds.patched_losses(model, split, 0, negated), ds.patched_losses(model, whole, 0, negated)):
        assert a > 1e-3 and a == pytest.approx(b, rel=1e-5)


def test_the_ratio_is_nan_below_the_floor(model, ids):
    reference = ds.clean_reference(model, ids, 1, batch_size=8)
    quality = ds.downstream_quality(model, reference, 0, halved, floor=0.05)
    span = quality["ce_loss_zero"] - quality["ce_loss_clean"]
    assert quality["ce_loss_recovered"] == pytest.approx((quality["ce_loss_zero"] - quality["ce_loss_sae"]) / span)
    # the KL score has its own denominator, KL_zero, under the same floor
    _, kl_sae = ds.patched_losses(model, reference, 0, halved)
    _, kl_zero = ds.patched_losses(model, reference, 0, ds.zero_reconstruction)
    low = ds.downstream_quality(model, reference, 0, halved, floor=kl_zero / 2)
    assert low["kl_score"] == pytest.approx((kl_zero - kl_sae) / kl_zero)
    assert math.isnan(ds.downstream_quality(model, reference, 0, halved, floor=kl_zero * 2)["kl_score"])
    above = ds.downstream_quality(model, reference, 0, halved, floor=span + 1e-3)
    assert math.isnan(above["ce_loss_recovered"])
    for name in ("ce_loss_clean", "ce_loss_sae", "ce_loss_zero", "ce_loss_increase"):
        assert above[name] == quality[name], name
    huge = ds.downstream_quality(model, reference, 0, halved, floor=1e6)
    assert math.isnan(huge["ce_loss_recovered"]) and math.isnan(huge["kl_score"])


@pytest.mark.parametrize(
    ("zero", "patched", "clean", "floor", "expected"),
    [
        (5.0, 4.0, 3.0, 0.05, 0.5),
        (5.0, 6.0, 3.0, 0.05, -0.5),  # worse than zero ablation
        (3.04, 3.0, 3.0, 0.05, math.nan),  # zero ablation costs 0.04 nats: below the floor
        (2.9, 3.1, 3.0, 0.0, math.nan),  # zero ablation helps: no ratio
        (3.0, 3.0, 3.0, 0.0, math.nan),
    ],
)
def test_recovered(zero, patched, clean, floor, expected):
    got = ds.recovered(zero, patched, clean, floor)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_sae_reconstruction_is_decode_of_encode_in_float32_cast_back():
    torch.manual_seed(0)
    ae = dictionary_classes()["AutoEncoderTopK"](16, 64, 4)
    hidden = torch.randn(3, 5, 16, dtype=torch.bfloat16)
    with torch.no_grad():
        got = ds.sae_reconstruction(ae)(hidden)
        expected = ae.decode(ae.encode(hidden.reshape(-1, 16).float())).reshape(3, 5, 16)
    assert got.dtype == torch.float32 and got.shape == (3, 5, 16)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # the hook casts it back to the model's dtype
    block = torch.nn.Identity()
    holder = torch.nn.Module()
    holder.gpt_neox = torch.nn.Module()
    holder.gpt_neox.layers = torch.nn.ModuleList([block])
    with torch.no_grad(), ds.spliced(holder, 0, ds.sae_reconstruction(ae), 0):
        spliced = block(hidden)
    assert spliced.dtype == torch.bfloat16
    torch.testing.assert_close(spliced, expected.to(torch.bfloat16), rtol=0, atol=0)


def test_rows_too_short_to_count_anything_are_refused(model):
    with pytest.raises(ValueError, match="rows of 2 tokens leave no prediction to count after the first 1"):
        ds.clean_reference(model, torch.zeros(1, 2, dtype=torch.int64), 1, 4)
