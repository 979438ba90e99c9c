"""Train the embedded GPT-NeoX family on the planted corpus and save Hugging Face checkpoints.

Each (model, step) checkpoint is trained from scratch to `step` with a fixed seed, batch
order and a warm-up-then-constant learning rate, so checkpoint s is the same whichever
other steps are configured: adding a step never changes an existing checkpoint.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerBase

from .corpus import TRAIN_SPLIT
from .io import atomic_dir, write_json
from .layout import CHECKPOINT_METADATA


def neox_config(spec: dict, vocab_size: int, seq_len: int, eos_id: int) -> GPTNeoXConfig:
    """A Pythia-style GPT-NeoX config (parallel residual, partial rotary) of the given size."""
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=spec["d_model"],
        num_hidden_layers=spec["n_layers"],
        num_attention_heads=spec["n_heads"],
        intermediate_size=spec.get("d_mlp", 4 * spec["d_model"]),
        max_position_embeddings=seq_len,
        rotary_pct=0.25,
        use_parallel_residual=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )


def batch_rows(step: int, batch_size: int, n_rows: int, seed: int) -> np.ndarray:
    """Row indices of the training batch at `step`: epoch-wise seeded permutations."""
    start = step * batch_size
    epoch, offset = divmod(start, n_rows)
    rows: list[int] = []
    while len(rows) < batch_size:
        order = np.random.default_rng([seed, epoch]).permutation(n_rows)
        rows.extend(order[offset : offset + batch_size - len(rows)].tolist())
        epoch, offset = epoch + 1, 0
    return np.array(rows)


def learning_rate(step: int, training: dict) -> float:
    """Linear warm-up to the configured rate, then constant (independent of the horizon)."""
    warmup = training["warmup_steps"]
    return training["lr"] * min(1.0, (step + 1) / warmup) if warmup else training["lr"]


def train_model(
    spec: dict, step: int, ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase
) -> tuple[GPTNeoXForCausalLM, dict]:
    """Train model `spec` for `step` optimizer steps on token rows `ids`; return it and its metadata."""
    training = spec["training"]
    torch.manual_seed(training["seed"])
    model = GPTNeoXForCausalLM(neox_config(spec, len(tokenizer), ids.shape[1], tokenizer.eos_token_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    losses = []
    started = time.perf_counter()
    model.train()
    for s in tqdm(range(step), desc=f"train {spec.get('name', 'model')} to step {step}", mininterval=2):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(s, training)
        batch = ids[batch_rows(s, training["batch_size"], len(ids), training["seed"])]
        loss = model(input_ids=batch, labels=batch).loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss of {spec.get('name', 'model')} is {loss.item()} at step {s}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    metadata = {
        "step": step,
        "tokens_seen": step * training["batch_size"] * ids.shape[1],
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_curve": losses[:: max(1, len(losses) // 50)],
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    return model.eval(), metadata


def train_checkpoint(spec: dict, step: int, tokens: Path, tokenizer_dir: Path, out_dir: Path) -> dict:
    """Train model `spec` to `step` and save it as a Hugging Face checkpoint (weights, config, tokenizer)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with h5py.File(tokens, "r") as handle:
        ids = torch.from_numpy(handle[TRAIN_SPLIT][:].astype(np.int64))
    model, metadata = train_model(spec, step, ids, tokenizer)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(metadata, tmp / CHECKPOINT_METADATA)
    return metadata
