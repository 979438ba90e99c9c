"""Activations streamed into SAE training: the SAE split in chunks of rows, one forward pass per chunk, shuffled.

An SAE job holds one chunk at a time for every layer of its group: `activations.buffer_tokens` worth of rows in
stream mode, every distinct row of the budget in memory mode (small corpora passed over several times). Each
chunk's tokens are permuted by a generator seeded with (seed, chunk index), and chunks do not mix (SAELens refills
half of its buffer instead), so the batch served at any SAE update is a function of the update number alone: a
resumed job recomputes its current chunk and skips the batches it had done, instead of saving gigabytes of buffer
with its training state. Nothing the size of the training data touches disk. Pure arithmetic (no torch), so the
cost plan sizes jobs with the same functions; the chunk sources are in activations.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ChunkSizeError(ValueError):
    """The buffer cannot hold one SAE batch; the message names the settings."""


@dataclass(frozen=True)
class ChunkSchedule:
    """Which rows feed which SAE update: chunk c holds rows c*rows_per_chunk.. (mod n_rows), permuted per chunk.

    A chunk's last `tokens % batch_size` tokens (fewer than one batch) are not trained on.
    """

    n_rows: int
    rows_per_chunk: int
    tokens_per_row: int
    batch_size: int
    seed: int

    @property
    def batches_per_chunk(self) -> int:
        return self.rows_per_chunk * self.tokens_per_row // self.batch_size

    def rows(self, chunk: int) -> np.ndarray:
        """The row indices of `chunk`, wrapping around the distinct rows (a new pass over the text)."""
        return (chunk * self.rows_per_chunk + np.arange(self.rows_per_chunk)) % self.n_rows

    def order(self, chunk: int) -> np.ndarray:
        """The chunk's token order: a permutation seeded by (seed, chunk), cut to whole batches."""
        permutation = np.random.default_rng([self.seed, chunk]).permutation(self.rows_per_chunk * self.tokens_per_row)
        return permutation[: self.batches_per_chunk * self.batch_size]

    def position(self, update: int) -> tuple[int, int]:
        """(chunk, batch within the chunk) of an SAE update."""
        return divmod(update, self.batches_per_chunk)

    def rows_read(self, updates: int) -> int:
        """Rows the chunks serving `updates` SAE updates hold (repeats counted)."""
        return -(-updates // self.batches_per_chunk) * self.rows_per_chunk

    def rows_run(self, updates: int) -> int:
        """Rows the forward pass runs over for `updates` SAE updates: every row once when one chunk holds them all
        (the job reuses it for every pass), else the rows of every chunk served."""
        return self.n_rows if self.rows_per_chunk == self.n_rows else self.rows_read(updates)


def rows_per_chunk(mode: str, buffer_tokens: int, n_rows: int, tokens_per_row: int) -> int:
    """How many rows one chunk holds: all distinct rows in memory mode, the buffer's worth in stream mode."""
    if mode == "memory":
        return n_rows
    return min(n_rows, max(1, buffer_tokens // tokens_per_row))


def chunk_schedule(
    mode: str, buffer_tokens: int, n_rows: int, tokens_per_row: int, batch_size: int, seed: int
) -> ChunkSchedule:
    """The schedule of an SAE job, refused when one chunk cannot fill one SAE batch."""
    schedule = ChunkSchedule(
        n_rows, rows_per_chunk(mode, buffer_tokens, n_rows, tokens_per_row), tokens_per_row, batch_size, seed
    )
    if schedule.batches_per_chunk == 0:
        raise ChunkSizeError(
            f"a chunk of {schedule.rows_per_chunk} rows x {tokens_per_row} kept tokens is less than one SAE batch"
            f" (sae.batch_size = {batch_size}): raise activations.buffer_tokens (now {buffer_tokens}) in {mode} mode"
        )
    return schedule


def kept_positions(tokens: dict) -> int:
    """Positions of a context that SAEs train on and evaluations count: `seq_len` less the first `exclude_first`
    (config.token_settings)."""
    return tokens["seq_len"] - tokens["exclude_first"]


def rows_wanted(buffer: dict, settings: dict, kept: int) -> int:
    """How many rows of the SAE split a job reads: every distinct row of its budget in memory mode; in stream
    mode the rows its chunks run over, so a one-pass budget is met even though chunk remainders are skipped."""
    distinct = -(-settings["tokens"] // kept)
    if buffer["mode"] == "memory":
        return distinct
    schedule = chunk_schedule("stream", buffer["buffer_tokens"], distinct, kept, settings["batch_size"], 0)
    return schedule.rows_read(settings["updates"])
