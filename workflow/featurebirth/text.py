"""Real text for real models: documents from local files or a Hugging Face dataset, fetched into the hub cache
by a local job, split by document, tokenized once, joined with EOS and packed into fixed contexts.

Every cell of a model family reads the same packed token ids: the SAE-training part in the same order,
the same evaluation part and the same probe-mining part; no document is in two parts.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from .io import atomic_path, read_json, write_json
from .stream import chunk_schedule

SUFFIXES = (".txt", ".jsonl", ".jsonl.zst", ".parquet")
TOKENIZE_BATCH = 256  # documents per tokenizer call


class TextSourceError(ValueError):
    """The configured text cannot be read: the message names the file, the pattern or the field."""


def _suffix(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise TextSourceError(f"{path}: unknown text format; expected one of {list(SUFFIXES)}")


def _json_lines(lines: Iterator[str], path: Path, field: str) -> Iterator[str]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if field not in record:
            raise TextSourceError(f"{path} line {number}: text field '{field}' absent (it has {sorted(record)})")
        yield record[field]


def documents(path: Path, field: str) -> Iterator[str]:
    """The documents of one file: blank-line-separated paragraphs of .txt, `field` of .jsonl(.zst) and .parquet."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".txt":
        yield from (part.strip() for part in path.read_text().split("\n\n") if part.strip())
    elif suffix == ".jsonl":
        with open(path) as handle:
            yield from _json_lines(handle, path, field)
    elif suffix == ".jsonl.zst":
        import zstandard

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            yield from _json_lines(io.TextIOWrapper(reader, encoding="utf-8"), path, field)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if field not in table.column_names:
            raise TextSourceError(f"{path}: text field '{field}' absent (columns {table.column_names})")
        yield from (str(value) for value in table.column(field).to_pylist())


def local_files(patterns: list[str]) -> list[Path]:
    """Every file the patterns name, in sorted order within a pattern; a pattern naming nothing is an error."""
    files = []
    for pattern in patterns:
        matched = (
            [Path(name) for name in sorted(glob.glob(pattern))] if any(c in pattern for c in "*?[") else [Path(pattern)]
        )
        matched = [path for path in matched if path.is_file()]
        if not matched:
            raise TextSourceError(f"corpus.text.files: '{pattern}' names no file")
        files += matched
    return list(dict.fromkeys(path.resolve() for path in files))  # a file named twice is read once


def dataset_shards(dataset: dict, cache_dir: str | Path, offline: bool) -> tuple[list[str], object]:
    """The dataset's shard names matching its `files` glob, sorted, and a function fetching one into the cache."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    repo, revision = dataset["repo"], dataset["revision"]
    common = {"repo_type": "dataset", "revision": revision, "cache_dir": str(cache_dir)}
    if offline:
        snapshot = Path(snapshot_download(repo, allow_patterns=[dataset["files"]], local_files_only=True, **common))
        names = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()]
    else:
        names = HfApi().list_repo_files(repo, repo_type="dataset", revision=revision)
    shards = sorted(name for name in names if fnmatch.fnmatch(name, dataset["files"]))
    if not shards:
        raise TextSourceError(f"corpus.text.dataset: no file of {repo}@{revision} matches '{dataset['files']}'")
    return shards, lambda name: hf_hub_download(repo, name, local_files_only=offline, **common)


def fetch_text(settings: dict, cache_dir: str | Path, offline: bool, pointer: Path) -> dict:
    """Find (local files) or fetch (dataset shards, in order, only as many as the budgets need) the text.

    Writes a pointer listing the files; the estimate is characters / corpus.text.chars_per_token.
    """
    text, needed = settings["text"], settings["needed_tokens"]
    if "files" in text:
        files, fetch = [str(path) for path in local_files(text["files"])], None
    else:
        files, fetch = dataset_shards(text["dataset"], cache_dir, offline)
    chosen, characters = [], 0
    for name in files:
        path = fetch(name) if fetch else name
        chosen.append(str(path))
        characters += sum(len(document) for document in documents(Path(path), text["field"]))
        if characters / text["chars_per_token"] >= needed:
            break
    estimated = int(characters / text["chars_per_token"])
    if characters == 0:
        raise TextSourceError(f"corpus.text: {files[:3]}... hold no text")
    if estimated < needed:
        raise TextSourceError(
            f"corpus.text: all {len(files)} file(s) hold about {estimated} tokens, fewer than the {needed} the budgets "
            "need (with offline_prefetch, only cached shards count): add text or lower sae.tokens"
        )
    data = {"files": chosen, "characters": characters, "estimated_tokens": estimated}
    write_json(data, pointer)
    return data


def split_documents(n_documents: int, eval_documents: int, probe_documents: int, seed: int) -> dict[str, np.ndarray]:
    """Document indices per part: a seeded choice of evaluation and probe-mining documents; the rest, in order,
    trains the SAEs. Disjoint by construction."""
    if eval_documents + probe_documents >= n_documents:
        raise TextSourceError(
            f"the text has {n_documents} documents: too few to hold out corpus.text.eval_documents = {eval_documents}"
            f" and corpus.text.probe_documents = {probe_documents} and still train on some"
        )
    order = np.random.default_rng(seed).permutation(n_documents)
    held_out = order[: eval_documents + probe_documents]
    train = np.setdiff1d(np.arange(n_documents), held_out)
    return {"sae": train, "eval": np.sort(held_out[:eval_documents]), "probe": np.sort(held_out[eval_documents:])}


def joined(token_lists: list[list[int]], eos: int) -> np.ndarray:
    """Documents' token ids, each followed by EOS, as one int32 array."""
    return np.fromiter((t for tokens in token_lists for t in (*tokens, eos)), dtype=np.int32)


def rows_of(flat: np.ndarray, seq_len: int) -> np.ndarray:
    """A flat array cut into rows of seq_len; the incomplete last row is dropped."""
    rows = len(flat) // seq_len
    return flat[: rows * seq_len].reshape(rows, seq_len)


def tokenized(docs: list[str], tokenizer, limit: int | None) -> tuple[np.ndarray, int]:
    """The documents tokenized and joined with EOS, in batches, stopping after the batch that reaches `limit`
    tokens (None: every document): (int32 ids, documents used). Held as arrays, never as Python lists of all ids."""
    pieces, total, used = [], 0, 0
    for start in range(0, len(docs), TOKENIZE_BATCH):
        batch = tokenizer(docs[start : start + TOKENIZE_BATCH], add_special_tokens=False)["input_ids"]
        pieces.append(joined(batch, tokenizer.eos_token_id))
        total, used = total + len(pieces[-1]), used + len(batch)
        if limit is not None and total >= limit:
            break
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)), used


def tokenize_text(pointer: Path, tokenizer, settings: dict, outputs: dict[str, Path]) -> dict[str, int]:
    """Split the pointer's documents, tokenize each part once with `tokenizer`, pack it; write one file per part.

    The SAE part stops after the documents that reach `sae_tokens` (what the largest budget can read): a large
    shard is not tokenized whole. Returns the packed tokens per part.
    """
    text = settings["text"]
    docs = [doc for path in read_json(pointer)["files"] for doc in documents(Path(path), text["field"])]
    parts = split_documents(len(docs), text["eval_documents"], text["probe_documents"], settings["seed"])
    sizes = {}
    for part, indices in parts.items():
        flat, used = tokenized([docs[i] for i in indices], tokenizer, settings["sae_tokens"] if part == "sae" else None)
        packed = rows_of(flat, settings["seq_len"])
        if not len(packed):
            raise TextSourceError(f"the {part} documents hold fewer tokens than one context of {settings['seq_len']}")
        with atomic_path(outputs[part]) as tmp, h5py.File(tmp, "w") as handle:
            handle.create_dataset(part, data=packed, track_times=False)
            handle.attrs.update(
                {
                    "documents": used,
                    "tokens": packed.size,
                    "eos": tokenizer.eos_token_id,
                    "tokenizer": tokenizer_fingerprint(tokenizer),
                }
            )
        sizes[part] = int(packed.size)
    return sizes


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 (16 hex digits) of a tokenizer's vocabulary and EOS: equal fingerprints, equal token ids."""
    vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(f"{vocabulary}|{tokenizer.eos_token_id}".encode()).hexdigest()[:16]


class BudgetError(ValueError):
    """An SAE budget asks for more passes over the training text than the config allows."""


def check_budget(budget: dict, distinct: int, source: str | Path, key: str = "sae") -> None:
    """Refuse a budget larger than max_epochs passes over `distinct` training tokens, with both figures."""
    if budget["tokens"] > distinct * budget["max_epochs"]:
        raise BudgetError(
            f"{key}.tokens = {budget['tokens']} is more than {key}.max_epochs = {budget['max_epochs']} pass(es) over "
            f"the {distinct} training tokens of {source}: lower the budget, add text, or allow more epochs"
        )


def check_stream_rows(recipe: dict, buffer: dict, n_rows: int, kept: int, source: str | Path) -> None:
    """Refuse a streamed schedule that would read more than max_epochs passes over the `n_rows` rows of text.

    A chunk's tokens short of one SAE batch are skipped, so a one-pass budget reads a little more text than
    sae.tokens; without this check the schedule would wrap around and repeat rows silently.
    """
    schedule = chunk_schedule(buffer["mode"], buffer["buffer_tokens"], n_rows, kept, recipe["batch_size"], 0)
    read = schedule.rows_run(recipe["updates"])  # one chunk of every row is read once: check_budget judges that
    if read > n_rows * recipe["max_epochs"]:
        skipped = schedule.rows_per_chunk * kept - schedule.batches_per_chunk * recipe["batch_size"]
        raise BudgetError(
            f"sae.tokens = {recipe['tokens']} streamed in chunks of {schedule.rows_per_chunk} rows (activations."
            f"buffer_tokens = {buffer['buffer_tokens']}; {skipped} tokens of each chunk short of one SAE batch of "
            f"{recipe['batch_size']} are skipped) reads {read} rows of {kept} kept tokens: more than sae.max_epochs = "
            f"{recipe['max_epochs']} pass(es) over the {n_rows} rows of {source}: add text, lower the budget or "
            "choose a buffer that holds whole batches"
        )


def check_text(split: Path, evaluation: Path, tokenizer, settings: dict, model: str, record: Path) -> dict:
    """One model against the text, before any SAE job of it: every lexicon word (and control word) one token of
    the model's tokenizer, the SAE budget within max_epochs passes over the SAE part, the evaluation tokens within the
    evaluation part. The record marks it passed
    and gives each category's measured frequency in the SAE part (per million tokens)."""
    from .lexicon import category_frequencies, check_lexicon

    with h5py.File(split, "r") as handle:
        ids, text_tokenizer = next(iter(handle.values()))[:], handle.attrs["tokenizer"]
    if tokenizer_fingerprint(tokenizer) != text_tokenizer:
        raise TextSourceError(
            f"model '{model}': its tokenizer differs from the one that tokenized the text (corpus.text.tokenizer): "
            "the text is tokenized once, for models that share one tokenizer"
        )
    word_ids = check_lexicon(tokenizer, {**settings["categories"], "filler_words": settings["filler_words"]}, model)
    word_ids = {word: word_ids[word] for words in settings["categories"].values() for word in words}
    distinct = ids.shape[0] * (ids.shape[1] - settings["exclude_first"])
    check_budget(settings["budget"], distinct, split, key=f"models.{model}.sae")
    check_stream_rows(
        settings["budget"], settings["buffer"], ids.shape[0], ids.shape[1] - settings["exclude_first"], split
    )
    with h5py.File(evaluation, "r") as handle:
        held_out = next(iter(handle.values())).size
    if settings["evaluation_tokens"] > held_out:
        raise TextSourceError(
            f"evaluation.tokens = {settings['evaluation_tokens']} is more than the {held_out} tokens of the evaluation "
            "documents (corpus.text.eval_documents)"
        )
    frequencies = category_frequencies(ids[:, settings["exclude_first"] :], word_ids, settings["categories"])
    checked = {"model": model, **settings["budget"], "distinct_tokens": distinct, "text_frequency": frequencies}
    write_json(checked, record)
    return checked
