"""Downstream quality of a cell's SAE: next-token loss with the layer's residual stream spliced.

On held-out evaluation rows, block L's output (the residual stream after block L, as captured by
`activations.capture_blocks`) is replaced, by a forward hook on `gpt_neox.layers[L]`, with the
SAE's reconstruction (L_sae) or with zeros (L_zero); the untouched model gives L_clean. The first
`exclude_first` positions of every row pass through clean (the SAE was never trained on them).

Which predictions count: position t of a row predicts token t + 1; the predictions made at positions
t = exclude_first .. seq_len - 2 count, seq_len - 1 - exclude_first per row. Every loss is the mean
over all counted predictions of all rows (pooled, not per row). Predictions at earlier positions are
untouched by the splice anyway (causal attention) and are left out of every average.

From the three losses (nats per token):
- ce_loss_recovered = (L_zero - L_sae) / (L_zero - L_clean) (dictionary-learning's `frac_recovered`,
  SAELens/SAEBench's `ce_loss_score`), NaN where L_zero - L_clean < `floor`: when zero-ablating the
  layer costs (almost) nothing, as at step 0, the ratio divides by noise; read ce_loss_increase there.
- ce_loss_increase = L_sae - L_clean, the raw cost of the splice.
- kl_score = (KL_zero - KL_sae) / KL_zero (SAEBench), KL(p_clean || p_patched) averaged over the
  counted predictions; NaN where KL_zero < `floor` (same reason, same units).

The clean log-probabilities are computed once per (model, step) (`clean_reference`) and held in host
memory as float32, counted predictions x vocabulary (8,192 Pythia tokens: 8,192 x 50,304 x 4 B = 1.6 GB);
every layer's patched passes are scored against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import blocks

Reconstruction = Callable[[torch.Tensor], torch.Tensor]
LOGIT_TOKENS = 4096  # at most this many predictions' logits at once (Pythia: 4,096 x 50,304 x 4 B = 0.8 GB each)
VARIABLES = ("ce_loss_clean", "ce_loss_sae", "ce_loss_zero", "ce_loss_recovered", "ce_loss_increase", "kl_score")


@contextmanager
def spliced(model: torch.nn.Module, layer: int, reconstruct: Reconstruction, exclude_first: int) -> Iterator[None]:
    """Within the block, block `layer`'s output is `reconstruct(h)` at positions >= exclude_first (earlier ones
    pass through clean). `reconstruct` gets h[:, exclude_first:] ([rows, positions, d_model], the model's dtype)
    and its result is cast back to that dtype. A tuple output has its first element replaced."""

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        tail = reconstruct(hidden[:, exclude_first:]).to(hidden.dtype)
        if tail.shape != hidden[:, exclude_first:].shape:
            raise ValueError(f"a reconstruction of shape {tuple(tail.shape)} for block outputs {tuple(hidden.shape)}")
        patched = torch.cat([hidden[:, :exclude_first], tail], dim=1)
        return (patched, *output[1:]) if isinstance(output, tuple) else patched

    handle = blocks(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def zero_reconstruction(hidden: torch.Tensor) -> torch.Tensor:
    """Zero ablation: the residual stream replaced by zeros."""
    return torch.zeros_like(hidden)


def sae_reconstruction(ae: torch.nn.Module) -> Reconstruction:
    """`ae.decode(ae.encode(h))` in float32, on the SAE's own scale (the training norm is folded into its biases,
    so it takes activations as the model makes them); flattened to [tokens, d_model] and back."""

    def reconstruct(hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1]).float()
        return ae.decode(ae.encode(flat)).reshape(hidden.shape)

    return reconstruct


def counted(seq_len: int, exclude_first: int) -> slice:
    """The positions whose next-token predictions count: exclude_first .. seq_len - 2."""
    if seq_len - 1 - exclude_first < 1:
        raise ValueError(f"rows of {seq_len} tokens leave no prediction to count after the first {exclude_first}")
    return slice(exclude_first, seq_len - 1)


@dataclass
class Reference:
    """The clean pass of one (model, step): the evaluation rows in batches and, per batch, the clean
    log-probabilities of the counted predictions [rows, counted, vocab] (float32, host memory)."""

    batches: list[torch.Tensor]
    clean_log_probs: list[torch.Tensor]
    head: tuple[torch.Tensor, torch.Tensor | None]  # the unembedding in float32 (weight, bias), made once
    exclude_first: int
    ce_loss_clean: float
    n_predictions: int


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def float_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unembedding's weight and bias in float32 (the same tensors when the model already is): logits are
    computed in float32 whatever the model's dtype, since bfloat16 logits near 30 step by 0.125, as large as the
    effects measured. Made once per (model, step), not per batch."""
    head = model.get_output_embeddings()
    return head.weight.float(), None if head.bias is None else head.bias.float()


def _log_probs(
    model: torch.nn.Module, head: tuple[torch.Tensor, torch.Tensor | None], ids: torch.Tensor, positions: slice
) -> torch.Tensor:
    """log-softmax of the float32 logits of the counted predictions of `ids` [rows, counted, vocab]."""
    final = model.gpt_neox(input_ids=ids, use_cache=False).last_hidden_state[:, positions]
    return F.log_softmax(F.linear(final.float(), *head), dim=-1)


def _nll(log_probs: torch.Tensor, ids: torch.Tensor, positions: slice) -> float:
    """Summed next-token loss of the counted predictions."""
    return -log_probs.gather(-1, _targets(ids, positions)[..., None]).sum().item()


def _targets(ids: torch.Tensor, positions: slice) -> torch.Tensor:
    return ids[:, positions.start + 1 : positions.stop + 1]


@torch.inference_mode()
def clean_reference(model: torch.nn.Module, ids: torch.Tensor, exclude_first: int, batch_size: int) -> Reference:
    """One clean pass over the evaluation rows `ids` [rows, seq_len]: the clean loss and the log-probabilities
    every layer's patched passes are compared with. Batches hold at most `batch_size` rows and LOGIT_TOKENS
    predictions."""
    positions = counted(ids.shape[1], exclude_first)
    per_row = positions.stop - positions.start
    rows = max(1, min(batch_size, LOGIT_TOKENS // per_row))
    device = _device(model)
    batches = [ids[start : start + rows] for start in range(0, len(ids), rows)]
    head = float_head(model)
    clean, nll = [], 0.0
    for batch in batches:
        batch = batch.to(device)
        log_probs = _log_probs(model, head, batch, positions)
        nll += _nll(log_probs, batch, positions)
        clean.append(log_probs.cpu())
    n_predictions = len(ids) * per_row
    return Reference(batches, clean, head, exclude_first, nll / n_predictions, n_predictions)


@torch.inference_mode()
def patched_losses(
    model: torch.nn.Module, reference: Reference, layer: int, reconstruct: Reconstruction
) -> tuple[float, float]:
    """Mean next-token loss and mean KL(p_clean || p_patched) over the counted predictions, with block `layer`'s
    output replaced by `reconstruct(h)` (positions >= exclude_first)."""
    device = _device(model)
    positions = counted(reference.batches[0].shape[1], reference.exclude_first)
    nll, kl = 0.0, 0.0
    with spliced(model, layer, reconstruct, reference.exclude_first):
        for batch, clean in zip(reference.batches, reference.clean_log_probs):
            batch = batch.to(device)
            log_probs = _log_probs(model, reference.head, batch, positions)
            nll += _nll(log_probs, batch, positions)
            kl += F.kl_div(log_probs, clean.to(device), reduction="sum", log_target=True).item()
    return nll / reference.n_predictions, kl / reference.n_predictions


def recovered(zero: float, patched: float, clean: float, floor: float) -> float:
    """(zero - patched) / (zero - clean); NaN where zero - clean is below `floor` (or not positive)."""
    span = zero - clean
    return (zero - patched) / span if span >= floor and span > 0 else math.nan


def zero_ablated(model: torch.nn.Module, reference: Reference, layer: int) -> tuple[float, float]:
    """The loss and the KL with block `layer`'s output zeroed: one per layer, whatever SAE is scored there."""
    return patched_losses(model, reference, layer, zero_reconstruction)


def downstream_quality(
    model: torch.nn.Module,
    reference: Reference,
    layer: int,
    reconstruct: Reconstruction,
    floor: float,
    zeroed: tuple[float, float] | None = None,
) -> dict[str, float]:
    """The cell's downstream quality (VARIABLES) with block `layer`'s output replaced by `reconstruct(h)`;
    `floor` (nats) is evaluation.ce_floor: below it, ce_loss_recovered and kl_score are NaN. `zeroed`: the layer's
    zero_ablated, when already measured (for another SAE seed)."""
    sae, kl_sae = patched_losses(model, reference, layer, reconstruct)
    zero, kl_zero = zeroed or zero_ablated(model, reference, layer)
    clean = reference.ce_loss_clean
    return {
        "ce_loss_clean": clean,
        "ce_loss_sae": sae,
        "ce_loss_zero": zero,
        "ce_loss_recovered": recovered(zero, sae, clean, floor),
        "ce_loss_increase": sae - clean,
        "kl_score": recovered(kl_zero, kl_sae, 0.0, floor),
    }
