"""Resumable SAE jobs: the complete training state of a layer group, saved atomically beside the group's outputs.

Saved every `sae.save_every_minutes` and when SIGTERM arrives (SLURM sends it before the time limit or on
preemption), under a name Snakemake does not know as an output, so a failed job leaves it for the retry. It holds,
per SAE of the group (a layer and seed), the SAE's weights (BatchTopK's threshold is one of its buffers), the optimizer and learning-rate
schedule, every tensor the trainer keeps (dead-latent counters), the normalisation factor and the divergence-check
tokens; and the number of SAE updates done, which fixes the data position (stream.ChunkSchedule), and the torch
random state. dictionary-learning 0.1.0's trainers have no state_dict of their own (collected here attribute by
attribute) and re-initialise the decoder bias at update 0: a job resumes only from a state saved after an update,
so update 0 never runs twice. A state saved under other settings, tokens or weights is discarded with a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .io import atomic_path, temporary_siblings

log = logging.getLogger(__name__)


class TrainingInterrupted(SystemExit):
    """SIGTERM arrived: the training state was saved and the process exits with 128 + SIGTERM (its retry resumes)."""

    def __init__(self, update: int) -> None:
        super().__init__(128 + signal.SIGTERM)
        self.update = update


def state_key(settings: dict, units: list[tuple[int, int]], weights: str, ids: torch.Tensor) -> str:
    """What a saved state must match to be resumed: the job's settings, its (layer, seed) SAEs, checkpoint weights
    and tokens."""
    digest = hashlib.sha256(json.dumps({"settings": settings, "layers": units, "weights": weights}).encode())
    digest.update(ids.numpy().tobytes())
    return digest.hexdigest()[:16]


def trainer_state(trainer) -> dict:
    """Everything a dictionary-learning trainer changes while it trains."""
    return {
        "ae": trainer.ae.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "tensors": {name: value for name, value in vars(trainer).items() if isinstance(value, torch.Tensor)},
    }


def restore_trainer(trainer, state: dict) -> None:
    """Put a freshly built trainer back in the state `trainer_state` recorded."""
    trainer.ae.load_state_dict(state["ae"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    device = next(trainer.ae.parameters()).device
    for name, value in state["tensors"].items():
        setattr(trainer, name, value.to(device))


class TrainingState:
    """The saved state file of one layer group: loaded if it matches `key`, saved when due, removed at the end."""

    def __init__(self, path: Path, key: str, save_every_minutes: float) -> None:
        self.path, self.key = Path(path), key
        self.every = save_every_minutes * 60
        self.saved_at = time.monotonic()
        for leftover in temporary_siblings(self.path):  # a save killed half-way
            leftover.unlink(missing_ok=True)

    def load(self) -> dict | None:
        """The saved state if there is one for these settings; a stale or unreadable one is deleted with a log line."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as error:  # a file cut short by a node crash: start over rather than fail every retry
            log.warning("discarding the training state %s: unreadable (%s)", self.path, error)
            self.path.unlink()
            return None
        if state.get("key") != self.key:
            log.warning("discarding the training state %s: saved under other settings, tokens or weights", self.path)
            self.path.unlink()
            return None
        return state

    def due(self) -> bool:
        return time.monotonic() - self.saved_at >= self.every

    def save(self, state: dict) -> None:
        """Write the state atomically (a kill mid-save leaves the previous state intact)."""
        with atomic_path(self.path) as tmp:
            torch.save({**state, "key": self.key}, tmp)
        self.saved_at = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@contextmanager
def sigterm_requested() -> Iterator[list[bool]]:
    """Within the block, SIGTERM sets `flag[0]` instead of killing the process, so training can save and stop."""
    flag = [False]

    def handler(signum, frame):
        flag[0] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
