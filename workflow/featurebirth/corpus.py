"""Seeded corpus with planted categories, its word-level tokenizer, and the probe set.

Category words appear in category-typical contexts at a planted frequency per category:
frequent categories should be learned first, which is the ground truth the whole
pipeline is checked against. Same config and seed, same bytes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .config import SPLIT_SIZES
from .io import atomic_dir, atomic_path
from .layout import CONTROL, in_corpus

EOS = "<|endoftext|>"
UNK = "[UNK]"
SENTENCE_END = "."


@dataclass(frozen=True)
class ProbeItem:
    """One probe context; the target is the word at characters [target_start, target_end)."""

    item: int
    category: str
    word: str
    template: int
    text: str
    target_start: int
    target_end: int


def _category_sentence(rng: np.random.Generator, corpus: dict, category: str) -> list[str]:
    spec = corpus["categories"][category]
    if rng.random() < corpus["neutral_context_fraction"]:
        prefix = corpus["neutral_prefixes"][rng.integers(len(corpus["neutral_prefixes"]))]
    else:
        prefix = spec["before"][rng.integers(len(spec["before"]))]
    word = spec["words"][rng.integers(len(spec["words"]))]
    suffix = spec["after"][rng.integers(len(spec["after"]))]
    return [*prefix.split(), word, *suffix.split(), SENTENCE_END]


def _filler_sentence(rng: np.random.Generator, corpus: dict) -> list[str]:
    filler = corpus["filler_words"]
    length = int(rng.integers(3, 9))
    return [filler[i] for i in rng.integers(len(filler), size=length)] + [SENTENCE_END]


def planted_probabilities(corpus: dict) -> dict[str, float]:
    """Probability that a category sentence is of each category: the planted frequencies, normalised."""
    weights = {name: spec["planted_frequency"] for name, spec in corpus["categories"].items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def generate_sequences(corpus: dict, n_sequences: int, seed: int) -> list[list[str]]:
    """`n_sequences` word sequences of exactly `seq_len` tokens, sentences packed end to end."""
    rng = np.random.default_rng(seed)
    names = list(corpus["categories"])
    probabilities = np.array([planted_probabilities(corpus)[name] for name in names])
    sequences = []
    for _ in range(n_sequences):
        words: list[str] = []
        while len(words) < corpus["seq_len"]:
            if rng.random() < corpus["category_fraction"]:
                words += _category_sentence(rng, corpus, names[rng.choice(len(names), p=probabilities)])
            else:
                words += _filler_sentence(rng, corpus)
        sequences.append(words[: corpus["seq_len"]])
    return sequences


def vocabulary(corpus: dict, probes: dict) -> list[str]:
    """Every word the corpus or the probes can contain, sorted, after the special tokens."""
    words = set(corpus["filler_words"]) | {SENTENCE_END}
    for text in corpus["neutral_prefixes"]:
        words |= set(text.split())
    for spec in corpus["categories"].values():
        words |= set(spec["words"])
        for text in spec["before"] + spec["after"]:
            words |= set(text.split())
    for template in probes["templates"]:
        words |= set(template.replace("{word}", " ").split())
    return [EOS, UNK, *sorted(words)]


def build_tokenizer(vocab: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: every lexicon word is exactly one token."""
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(vocab)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def probe_items(corpus: dict, probes: dict) -> list[ProbeItem]:
    """Every category word in every held-out template, then seeded filler controls."""
    rng = np.random.default_rng(probes["seed"])
    pairs = [(category, word) for category, spec in corpus["categories"].items() for word in spec["words"]]
    items: list[ProbeItem] = []
    for template_id, template in enumerate(probes["templates"]):
        for category, word in pairs:
            items.append(_probe_item(len(items), category, word, template_id, template))
    fillers = corpus["filler_words"]
    for _ in range(probes["n_controls"]):
        template_id = int(rng.integers(len(probes["templates"])))
        word = fillers[rng.integers(len(fillers))]
        items.append(_probe_item(len(items), CONTROL, word, template_id, probes["templates"][template_id]))
    return items


def _probe_item(item: int, category: str, word: str, template_id: int, template: str) -> ProbeItem:
    start = template.index("{word}")
    text = template.replace("{word}", word, 1)
    return ProbeItem(item, category, word, template_id, text, start, start + len(word))


def write_probes(items: list[ProbeItem], path: Path) -> None:
    """The probe set as TSV, one context per row, targets marked by character offsets."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(items[0])), delimiter="\t")
        writer.writeheader()
        writer.writerows(asdict(item) for item in items)


def read_probes(path: Path) -> list[ProbeItem]:
    """Read the probe TSV written by write_probes."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    ints = ("item", "template", "target_start", "target_end")
    return [ProbeItem(**{k: int(v) if k in ints else v for k, v in row.items()}) for row in rows]


def write_tokens(splits: dict[str, np.ndarray], vocab_size: int, path: Path) -> None:
    """Token ids per split as chunked int32 HDF5 datasets (no timestamps: same seed, same bytes)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=True) as handle:
        handle.attrs["vocab_size"] = vocab_size
        for name, ids in splits.items():
            handle.create_dataset(name, data=ids, chunks=(min(256, len(ids)), ids.shape[1]), track_times=False)


TRAIN_SPLIT, SAE_SPLIT, EVAL_SPLIT = "train", "sae", "eval"
SPLITS = dict(zip((TRAIN_SPLIT, SAE_SPLIT, EVAL_SPLIT), SPLIT_SIZES))  # split -> its size key in the corpus section
SPLIT_FILES = {  # split -> its token-id file and its text file (layout.CORPUS_FILES names)
    TRAIN_SPLIT: ("tokens", "train_text"),
    SAE_SPLIT: ("tokens", "sae_text"),
    EVAL_SPLIT: ("eval_tokens", "eval_text"),
}


def _write_splits(corpus: dict, splits: list[str], tokenizer, folder: Path) -> None:
    """Generate each split from its own seed (train, sae, eval: seed + 0, 1, 2); write its text and token ids."""
    ids = {}
    for split in splits:
        sequences = generate_sequences(corpus, corpus[SPLITS[split]], corpus["seed"] + list(SPLITS).index(split))
        with atomic_path(in_corpus(folder, SPLIT_FILES[split][1])) as tmp:
            tmp.write_text("".join(" ".join(words) + "\n" for words in sequences))
        ids[split] = np.array([tokenizer.convert_tokens_to_ids(words) for words in sequences], dtype=np.int32)
    write_tokens(ids, len(tokenizer), Path(in_corpus(folder, SPLIT_FILES[splits[0]][0])))


def build_corpus(corpus: dict, probes: dict, folder: Path) -> None:
    """The tokenizer, the train and SAE splits (text and token ids) and the lexicon.

    The probe templates shape the word-level vocabulary, so they are read here; the evaluation
    split and the probe set have jobs of their own, so that changing them retrains nothing.
    """
    tokenizer = build_tokenizer(vocabulary(corpus, probes))
    _write_splits(corpus, [TRAIN_SPLIT, SAE_SPLIT], tokenizer, folder)
    with atomic_dir(in_corpus(folder, "tokenizer")) as tmp:
        tokenizer.save_pretrained(tmp)
    lexicon = {
        name: {"planted_frequency": spec["planted_frequency"], "words": spec["words"]}
        for name, spec in corpus["categories"].items()
    }
    with atomic_path(in_corpus(folder, "lexicon")) as tmp:
        tmp.write_text(json.dumps(lexicon, indent=2) + "\n")


def build_eval_split(corpus: dict, tokenizer_dir: Path, folder: Path) -> None:
    """The held-out evaluation split (text and token ids): neither the models nor the SAEs train on it."""
    _write_splits(corpus, [EVAL_SPLIT], PreTrainedTokenizerFast.from_pretrained(tokenizer_dir), folder)


def build_probes(corpus: dict, probes: dict, folder: Path) -> None:
    """The probe set: every category word in every held-out template, then filler controls."""
    write_probes(probe_items(corpus, probes), Path(in_corpus(folder, "probes")))
