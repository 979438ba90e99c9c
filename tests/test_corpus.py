"""The planted corpus and probe set: deterministic, three disjoint splits, frequencies as planted, targets single tokens."""

from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurebirth import layout
from featurebirth.activations import target_token_index
from featurebirth.corpus import (
    SPLIT_FILES,
    SPLITS,
    build_corpus,
    build_eval_split,
    build_probes,
    generate_sequences,
    planted_probabilities,
    read_probes,
)
from featurebirth.io import read_json
from featurebirth.layout import CONTROL
from featurebirth.models import load_tokenizer

GENERATED = [name for name in layout.CORPUS_FILES if not name.startswith("text_")]  # real text has its own tests


def _files(path: Path) -> dict[str, bytes]:
    """A corpus file's bytes, or every file of a corpus folder (the tokenizer) by its relative name."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(micro, corpus, tmp_path):
    folder = layout.corpus_dir(tmp_path)
    build_corpus(micro["corpus"], micro["probes"], folder)
    build_eval_split(micro["corpus"], layout.in_corpus(folder, "tokenizer"), folder)
    build_probes(micro["corpus"], micro["probes"], folder)
    for name in GENERATED:
        again, first = _files(Path(layout.corpus_file(tmp_path, name))), _files(corpus(name))
        assert again and again == first, name
    # nothing else, and no temporary leftovers
    written = {p.name for p in Path(layout.corpus_dir(tmp_path)).iterdir()}
    assert written == {Path(layout.corpus_file(tmp_path, name)).name for name in GENERATED}


def test_other_seed_other_corpus(micro):
    corpus = dict(micro["corpus"])
    assert generate_sequences(corpus, 20, seed=1) != generate_sequences(corpus, 20, seed=2)


def test_planted_frequencies_are_realised(micro):
    corpus = {**micro["corpus"], "seq_len": 64}
    counts = Counter()
    owner = {w: c for c, spec in corpus["categories"].items() for w in spec["words"]}
    for words in generate_sequences(corpus, 400, seed=3):
        counts.update(owner[w] for w in words if w in owner)
    planted = planted_probabilities(corpus)
    assert planted == pytest.approx({"animals": 4 / 7, "colours": 2 / 7, "numbers": 1 / 7})
    total = sum(counts.values())
    for category, probability in planted.items():
        assert abs(counts[category] / total - probability) < 0.05, (category, counts)
    assert counts["animals"] > 3 * counts["numbers"]


def test_lexicon_records_the_planted_frequencies(micro, corpus):
    assert read_json(corpus("lexicon")) == {
        "animals": {"planted_frequency": 4, "words": ["dog", "cat", "cow"]},
        "colours": {"planted_frequency": 2, "words": ["red", "blue", "green"]},
        "numbers": {"planted_frequency": 1, "words": ["one", "two", "three"]},
    }
    assert read_json(corpus("lexicon")) == {
        name: {"planted_frequency": spec["planted_frequency"], "words": spec["words"]}
        for name, spec in micro["corpus"]["categories"].items()
    }


def test_token_ids_match_text(micro, corpus):
    tokenizer = load_tokenizer(corpus("tokenizer"))
    for split, size_key in SPLITS.items():
        token_file, text_file = SPLIT_FILES[split]
        with h5py.File(corpus(token_file)) as handle:
            assert handle.attrs["vocab_size"] == len(tokenizer)
            ids = handle[split][:]
            lines = corpus(text_file).read_text().splitlines()
            assert ids.shape == (micro["corpus"][size_key], micro["corpus"]["seq_len"]) == (len(lines), 32), split
            assert ids.dtype == np.int32
            for row, line in zip(ids, lines):
                assert tokenizer.convert_ids_to_tokens(row.tolist()) == line.split(), split
            assert tokenizer.unk_token_id not in ids
    assert [micro["corpus"][key] for key in SPLITS.values()] == [64, 40, 8]


def test_splits_share_no_rows(corpus):
    """SAE quality is measured on the eval split: it must differ from what the SAEs and the models train on."""
    rows = {}
    for split in SPLITS:
        with h5py.File(corpus(SPLIT_FILES[split][0])) as handle:
            rows[split] = {tuple(row) for row in handle[split][:]}
    assert len(rows["eval"]) == 8 and len(rows["sae"]) == 40
    assert not rows["eval"] & rows["sae"]
    assert not rows["eval"] & rows["train"]
    assert not rows["sae"] & rows["train"]
    texts = {split: set(corpus(SPLIT_FILES[split][1]).read_text().splitlines()) for split in SPLITS}
    assert not texts["eval"] & texts["sae"]


def test_probe_targets_are_the_marked_words(micro, corpus):
    items = read_probes(corpus("probes"))
    tokenizer = load_tokenizer(corpus("tokenizer"))
    n_words = sum(len(spec["words"]) for spec in micro["corpus"]["categories"].values())
    assert n_words == 9
    assert len(items) == n_words * len(micro["probes"]["templates"]) + micro["probes"]["n_controls"] == 9 * 2 + 16
    assert sum(item.category == CONTROL for item in items) == micro["probes"]["n_controls"]
    assert [item.item for item in items] == list(range(len(items)))
    for item in items:
        assert item.text[item.target_start : item.target_end] == item.word
        encoded = tokenizer(item.text, return_offsets_mapping=True)
        target = target_token_index(encoded["offset_mapping"], item.target_start, item.target_end)
        assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][target]) == item.word
