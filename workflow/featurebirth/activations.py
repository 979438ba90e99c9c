"""Residual-stream activations: one forward pass per batch captures every requested layer.

"Residual stream after block L" is the output of block L, taken with a forward hook on
the block (not `hidden_states`, whose last entry has the final LayerNorm applied).
Activations stay in memory: SAE jobs train from them and score jobs evaluate on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import torch

from .corpus import ProbeItem
from .models import blocks, load_tokenizer

STORAGE_DTYPE = torch.float16
ChunkSource = Callable[[np.ndarray], dict[int, torch.Tensor]]  # row indices -> each layer's activations (stream.py)


@contextmanager
def capture_blocks(model: torch.nn.Module, layers: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, `captured[L]` holds block L's output after each forward pass."""
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(module, args, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [blocks(model)[layer].register_forward_hook(hook_for(layer)) for layer in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def token_rows(
    source: Path, checkpoint: Path, split: str, max_tokens: int, seq_len: int, spread: bool = False
) -> torch.Tensor:
    """[rows, seq_len] token ids, at most `max_tokens`: a split of a token file, or text tokenised here.

    Token files (the toy corpus's, or real text packed once) are read directly: their first rows, or with `spread`
    rows evenly spaced over the split (an evaluation then samples every part of the text, not its first
    documents). Hub models on the generated corpus tokenise the split's text themselves, in rows of `seq_len`.
    """
    if Path(source).suffix == ".h5":
        with h5py.File(source, "r") as handle:
            available = handle[split].shape[0]
            rows = min(_whole_rows(max_tokens, handle[split].shape[1], source), available)
            index = np.unique(np.linspace(0, available - 1, rows).round().astype(int)) if spread else slice(0, rows)
            return torch.from_numpy(handle[split][index].astype(np.int64))
    rows = _whole_rows(max_tokens, seq_len, source)
    flat = load_tokenizer(checkpoint)(Path(source).read_text())["input_ids"]
    if len(flat) < seq_len:
        raise ValueError(f"{source} has {len(flat)} tokens, fewer than one row of {seq_len}")
    rows = min(rows, len(flat) // seq_len)
    return torch.tensor(flat[: rows * seq_len], dtype=torch.int64).reshape(rows, seq_len)


def _whole_rows(max_tokens: int, width: int, source: Path) -> int:
    """How many rows of `width` tokens fit in `max_tokens`; at least one, or a named error."""
    if max_tokens < width:
        raise ValueError(f"a budget of {max_tokens} tokens is less than one row of {width} tokens of {source}")
    return max_tokens // width


@torch.inference_mode()
def layer_activations(
    model: torch.nn.Module, ids: torch.Tensor, layers: list[int], batch_size: int, exclude_first: int
) -> dict[int, torch.Tensor]:
    """Every requested block's output at every position of `ids` from `exclude_first` on, one forward pass per batch.

    Held in host memory as float16 [rows x (seq_len - exclude_first), d_model] per layer, converted while copied
    into place. The first positions of each context are run but not kept (attention sinks).
    """
    device = next(model.parameters()).device
    d_model = model.config.hidden_size
    kept = ids.shape[1] - exclude_first
    out = {layer: torch.empty((len(ids) * kept, d_model), dtype=STORAGE_DTYPE) for layer in layers}
    with capture_blocks(model, layers) as captured:
        for start in range(0, len(ids), batch_size):
            model.gpt_neox(input_ids=ids[start : start + batch_size].to(device), use_cache=False)
            for layer in layers:
                values = captured[layer][:, exclude_first:].reshape(-1, d_model)
                out[layer][start * kept : start * kept + len(values)].copy_(values)
    return out


def target_token_index(offsets: list[tuple[int, int]], start: int, end: int) -> int:
    """Index of the last token overlapping characters [start, end): the target word's last token."""
    overlapping = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    if not overlapping:
        raise ValueError(f"no token covers characters {start}..{end}")
    return overlapping[-1]


@torch.inference_mode()
def probe_activations(model: torch.nn.Module, tokenizer, items: list[ProbeItem], batch_size: int) -> np.ndarray:
    """Every block's output at each probe item's target token: [n_layers, n_items, d_model] float32."""
    device = next(model.parameters()).device
    encoded = [tokenizer(item.text, return_offsets_mapping=True) for item in items]
    targets = [target_token_index(e["offset_mapping"], i.target_start, i.target_end) for e, i in zip(encoded, items)]
    n_layers, d_model = model.config.num_hidden_layers, model.config.hidden_size
    layers = list(range(n_layers))
    out = np.zeros((n_layers, len(items), d_model), dtype=np.float32)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with capture_blocks(model, layers) as captured:
        for start in range(0, len(items), batch_size):
            chunk = [e["input_ids"] for e in encoded[start : start + batch_size]]
            width = max(len(ids) for ids in chunk)
            ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in chunk], device=device)
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in chunk], device=device)
            model.gpt_neox(input_ids=ids, attention_mask=mask)
            rows = torch.arange(len(chunk), device=device)
            index = torch.tensor(targets[start : start + batch_size], device=device)
            for layer in layers:
                out[layer, start : start + len(chunk)] = captured[layer][rows, index].float().cpu().numpy()
    return out


@torch.inference_mode()
def window_activations(model: torch.nn.Module, ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Every block's output at the last position of each token-id window [items, width]: [n_layers, items, d_model]
    float32 (the probe path for mined contexts, which are token ids already: nothing is decoded or re-encoded)."""
    device = next(model.parameters()).device
    n_layers, d_model = model.config.num_hidden_layers, model.config.hidden_size
    layers = list(range(n_layers))
    out = np.zeros((n_layers, len(ids), d_model), dtype=np.float32)
    with capture_blocks(model, layers) as captured:
        for start in range(0, len(ids), batch_size):
            chunk = torch.from_numpy(np.asarray(ids[start : start + batch_size], dtype=np.int64)).to(device)
            model.gpt_neox(input_ids=chunk, use_cache=False)
            for layer in layers:
                out[layer, start : start + len(chunk)] = captured[layer][:, -1].float().cpu().numpy()
    return out


def held_chunks(activations: dict[int, torch.Tensor]) -> tuple[ChunkSource, int]:
    """Activations already in memory as a chunk source whose rows are single tokens: (source, n_rows)."""

    def source(rows: np.ndarray) -> dict[int, torch.Tensor]:
        index = torch.from_numpy(rows)
        return {layer: values[index] for layer, values in activations.items()}

    return source, len(next(iter(activations.values())))


def forward_chunks(
    model: torch.nn.Module, ids: torch.Tensor, layers: list[int], batch_size: int, exclude_first: int
) -> ChunkSource:
    """A chunk source that runs the model over a chunk's rows of `ids` and keeps every layer's kept positions."""

    def source(rows: np.ndarray) -> dict[int, torch.Tensor]:
        return layer_activations(model, ids[torch.from_numpy(rows)], layers, batch_size, exclude_first)

    return source
