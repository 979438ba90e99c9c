"""Load a checkpoint (toy or hub revision) the one way every downstream stage does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPTNeoXForCausalLM, PreTrainedTokenizerBase

from .hub import is_pointer, load_pretrained
from .layout import CHECKPOINT_METADATA

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """`auto` means CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is visible")
    return torch.device(name)


def forward_dtype(device: torch.device, storage: str) -> torch.dtype:
    """Half precision on GPU (the storage dtype); float32 on CPU, where half is slow."""
    return DTYPES[storage] if device.type == "cuda" else torch.float32


def load_model(path: str | Path, device: torch.device, dtype: torch.dtype = torch.float32) -> GPTNeoXForCausalLM:
    """`from_pretrained` on a checkpoint folder or a hub pointer (cache only), in eval mode on `device`."""
    model = load_pretrained(GPTNeoXForCausalLM, path, dtype=dtype)
    return model.to(device).eval()


def load_truncated(
    path: str | Path, device: torch.device, dtype: torch.dtype, deepest: int
) -> tuple[GPTNeoXForCausalLM, dict]:
    """The checkpoint's blocks up to `deepest` only (later blocks and the LM head dropped before it moves to
    `device`), with the whole checkpoint's metadata (parameter count, fingerprint) taken before truncating."""
    model = load_pretrained(GPTNeoXForCausalLM, path, dtype=dtype)
    metadata = checkpoint_metadata(model, path)
    model.gpt_neox.layers = model.gpt_neox.layers[: deepest + 1]
    model.embed_out = None
    return model.to(device).eval(), metadata


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a checkpoint, or the hub revision's."""
    return load_pretrained(AutoTokenizer, path)


def blocks(model: GPTNeoXForCausalLM) -> torch.nn.ModuleList:
    """The transformer blocks whose outputs are the residual stream after each layer."""
    return model.gpt_neox.layers


def checkpoint_metadata(model: GPTNeoXForCausalLM, path: str | Path) -> dict:
    """Size, training progress and weight fingerprint of a loaded checkpoint.

    tokens_seen comes from the toy suite's metadata file or the hub pointer; -1 where neither records it.
    """
    recorded = Path(path) if is_pointer(path) else Path(path) / CHECKPOINT_METADATA
    tokens_seen = json.loads(recorded.read_text()).get("tokens_seen", -1) if recorded.exists() else -1
    return {
        "n_params": sum(p.numel() for p in model.parameters()),
        "d_model": model.config.hidden_size,
        "n_layers": model.config.num_hidden_layers,
        "tokens_seen": tokens_seen,
        "fingerprint": weight_fingerprint(model),
    }


def weight_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of every tensor of the state dict as float32, in name order.

    Identical weights give identical fingerprints on any device; so do checkpoints stored in a precision
    the forward dtype holds exactly (Pythia's float16 loaded as float16 or float32).
    """
    digest = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(parameter.detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
