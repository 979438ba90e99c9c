"""Cache residual-stream activations: one forward pass per batch writes every requested layer.

"Residual stream after block L" is the output of block L, taken with a forward hook on
the block (not `hidden_states`, whose last entry has the final LayerNorm applied).
Caches are float16 HDF5, chunked by token, with the metadata needed to read them back.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch
from tqdm import tqdm

from .corpus import read_probes
from .io import atomic_path
from .layout import PROBE_DATASET, layer_dataset
from .models import blocks, checkpoint_metadata, forward_dtype, load_model, load_tokenizer

STORAGE_DTYPE = np.float16


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


def _metadata(model: str, step: int, d_model: int, n_tokens: int) -> dict:
    return {"model": model, "step": step, "d_model": d_model, "n_tokens": n_tokens, "dtype": "float16"}


def cache_training_activations(
    model_dir: Path,
    tokens: Path,
    layers: list[int],
    out_path: Path,
    *,
    model_name: str,
    step: int,
    batch_size: int,
    max_tokens: int,
    device: torch.device,
    gpu_dtype: str = "float16",
    split: str = "sae",
    seq_len: int = 64,
) -> int:
    """Write block outputs for up to `max_tokens` tokens, one dataset per layer; return the token count.

    `tokens` is the corpus's token file (toy models: the `split` rows) or its text (hub models: tokenised
    here with the checkpoint's own tokenizer and cut into rows of `seq_len`).
    """
    model = load_model(model_dir, device, forward_dtype(device, gpu_dtype))
    ids = training_ids(tokens, model_dir, max_tokens, split, seq_len)
    seq_len = ids.shape[1]
    d_model, n_tokens = model.config.hidden_size, ids.numel()
    chunk_rows = min(n_tokens, max(1, 2**20 // (2 * d_model)))
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs.update({**_metadata(model_name, step, d_model, n_tokens), "layers": layers, "seq_len": seq_len})
        datasets = {}
        for layer in layers:
            datasets[layer] = handle.create_dataset(
                layer_dataset(layer), (n_tokens, d_model), STORAGE_DTYPE, chunks=(chunk_rows, d_model)
            )
            datasets[layer].attrs.update({**_metadata(model_name, step, d_model, n_tokens), "layer": layer})
        # one writer thread converts and writes batch i while the model runs batch i + 1
        with capture_blocks(model, layers) as captured, torch.inference_mode(), ThreadPoolExecutor(1) as writer:
            pending = None
            for start in tqdm(range(0, len(ids), batch_size), desc=f"cache {model_name} step {step}", mininterval=2):
                batch = ids[start : start + batch_size].to(device)
                model.gpt_neox(input_ids=batch)
                outputs = {layer: captured[layer].reshape(-1, d_model) for layer in layers}
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_rows, datasets, outputs, start * seq_len)
            if pending is not None:
                pending.result()
    return n_tokens


def training_ids(tokens: Path, model_dir: Path, max_tokens: int, split: str, seq_len: int) -> torch.Tensor:
    """[rows, seq_len] token ids: from the HDF5 token file, or the text tokenised by the checkpoint's tokenizer."""
    if Path(tokens).suffix == ".h5":
        with h5py.File(tokens, "r") as handle:
            width = handle[split].shape[1]
            return torch.from_numpy(handle[split][: max(1, max_tokens // width)].astype(np.int64))
    flat = load_tokenizer(model_dir)(Path(tokens).read_text())["input_ids"][:max_tokens]
    rows = len(flat) // seq_len
    if rows == 0:
        raise ValueError(f"{tokens} has {len(flat)} tokens, fewer than one row of {seq_len}")
    return torch.tensor(flat[: rows * seq_len], dtype=torch.int64).reshape(rows, seq_len)


def _write_rows(datasets: dict[int, h5py.Dataset], outputs: dict[int, torch.Tensor], first_row: int) -> None:
    for layer, values in outputs.items():
        datasets[layer][first_row : first_row + len(values)] = values.to(torch.float16).cpu().numpy()


def target_token_index(offsets: list[tuple[int, int]], start: int, end: int) -> int:
    """Index of the last token overlapping characters [start, end): the target word's last token."""
    overlapping = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    if not overlapping:
        raise ValueError(f"no token covers characters {start}..{end}")
    return overlapping[-1]


def cache_probe_activations(
    model_dir: Path,
    probes: Path,
    out_path: Path,
    *,
    model_name: str,
    step: int,
    batch_size: int,
    device: torch.device,
    gpu_dtype: str = "float16",
) -> int:
    """Block outputs of every layer at each probe item's target token, in one file; return the item count."""
    model = load_model(model_dir, device, forward_dtype(device, gpu_dtype))
    tokenizer = load_tokenizer(model_dir)
    items = read_probes(probes)
    encoded = [tokenizer(item.text, return_offsets_mapping=True) for item in items]
    targets = [target_token_index(e["offset_mapping"], i.target_start, i.target_end) for e, i in zip(encoded, items)]
    n_layers, d_model = model.config.num_hidden_layers, model.config.hidden_size
    layers = list(range(n_layers))
    out = np.zeros((n_layers, len(items), d_model), dtype=STORAGE_DTYPE)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with capture_blocks(model, layers) as captured, torch.inference_mode():
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
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs.update(
            {**_metadata(model_name, step, d_model, len(items)), **checkpoint_metadata(model, model_dir)}
        )
        handle.create_dataset(PROBE_DATASET, data=out, chunks=(1, len(items), d_model))
        handle.create_dataset("category", data=np.array([i.category for i in items], dtype="S"))
        handle.create_dataset("word", data=np.array([i.word for i in items], dtype="S"))
        handle.create_dataset("token_id", data=np.array([e["input_ids"][t] for e, t in zip(encoded, targets)]))
    return len(items)


def read_layer_cache(path: Path, layer: int) -> tuple[np.ndarray, dict]:
    """One layer of a training cache as (float16 array [tokens, d_model], metadata)."""
    with h5py.File(path, "r") as handle:
        dataset = handle[layer_dataset(layer)]
        return dataset[:], dict(dataset.attrs)
