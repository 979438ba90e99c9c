"""Hub checkpoints (Pythia revisions): fetched once on a node with internet, read offline everywhere else.

The prefetch writes a small JSON *pointer* per (model, step) naming the repo, revision and cache;
downstream stages load through the pointer with `from_pretrained(..., local_files_only=True)`,
so a compute node never reaches the network and a missing revision fails with its name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from .io import write_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

POINTER_SUFFIX = ".json"
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


class MissingRevisionError(RuntimeError):
    """A revision the workflow needs is not in the local hub cache."""


def revision_name(spec: dict, step: int) -> str:
    """The hub revision of a step, e.g. 'step3000' (the model's `revision` pattern; its default is the schema's)."""
    return spec["revision"].format(step=step)


def _missing(repo: str, revision: str, cache_dir: str | Path) -> MissingRevisionError:
    return MissingRevisionError(
        f"revision '{revision}' of '{repo}' is not in the hub cache {cache_dir}: fetch it before running compute "
        "jobs by running the workflow on a node with internet, or only its prefetch jobs there "
        "(snakemake --until prefetch, with the same --configfile)"
    )


def prefetch(spec: dict, step: int, cache_dir: str | Path, pointer: Path, offline: bool) -> dict:
    """Download (or, offline, find) one revision into `cache_dir` and write its pointer; return the pointer."""
    repo, revision = spec["repo"], revision_name(spec, step)
    try:
        snapshot = snapshot_download(
            repo, revision=revision, cache_dir=str(cache_dir), allow_patterns=WEIGHT_PATTERNS, local_files_only=offline
        )
    except LocalEntryNotFoundError as error:
        raise _missing(repo, revision, cache_dir) from error
    data = {
        "repo": repo,
        "revision": revision,
        "step": step,
        "cache_dir": str(Path(cache_dir).resolve()),
        "snapshot": snapshot,
        "tokens_seen": step * spec["tokens_per_step"] if "tokens_per_step" in spec else -1,
    }
    write_json(data, pointer)
    return data


def is_pointer(path: str | Path) -> bool:
    """True for a prefetch pointer (a JSON file), False for a checkpoint folder."""
    return Path(path).suffix == POINTER_SUFFIX and Path(path).is_file()


def read_pointer(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def pretrained_arguments(path: str | Path) -> tuple[str, dict]:
    """What `from_pretrained` needs for a checkpoint folder or a hub pointer (offline, cache only)."""
    if not is_pointer(path):
        return str(path), {}
    pointer = read_pointer(path)
    return pointer["repo"], {
        "revision": pointer["revision"],
        "cache_dir": pointer["cache_dir"],
        "local_files_only": True,
    }


def load_pretrained(loader: type, path: str | Path, **kwargs) -> PreTrainedModel | PreTrainedTokenizerBase:
    """`loader.from_pretrained` on a folder or a pointer; a revision missing from the cache names itself."""
    source, extra = pretrained_arguments(path)
    try:
        return loader.from_pretrained(source, **extra, **kwargs)
    except OSError as error:
        if not extra:
            raise
        raise _missing(source, extra["revision"], extra["cache_dir"]) from error
