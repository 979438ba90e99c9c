"""The planted corpus and probe set: deterministic, frequencies as planted, targets single tokens."""

from collections import Counter

import h5py

from featurebirth.layout import CONTROL
from featurebirth.corpus import build_corpus, generate_sequences, planted_probabilities, read_probes
from featurebirth.models import load_tokenizer
from featurebirth.activations import target_token_index


def test_same_seed_same_bytes(micro, corpus_dir, tmp_path):
    build_corpus(micro["corpus"], micro["probes"], tmp_path)
    for name in ["tokens.h5", "probes.tsv", "train.txt", "sae.txt", "lexicon.json", "tokenizer/tokenizer.json"]:
        assert (tmp_path / name).read_bytes() == (corpus_dir / name).read_bytes(), name


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
    total = sum(counts.values())
    for category, probability in planted.items():
        assert abs(counts[category] / total - probability) < 0.05, (category, counts)
    assert counts["animals"] > 3 * counts["numbers"]


def test_token_ids_match_text(corpus_dir):
    tokenizer = load_tokenizer(corpus_dir / "tokenizer")
    first_line = (corpus_dir / "sae.txt").read_text().splitlines()[0]
    with h5py.File(corpus_dir / "tokens.h5") as handle:
        assert handle["sae"].shape == (40, 32)
        assert tokenizer.convert_ids_to_tokens(handle["sae"][0].tolist()) == first_line.split()
        assert tokenizer.unk_token_id not in handle["train"][:]


def test_probe_targets_are_the_marked_words(micro, corpus_dir):
    items = read_probes(corpus_dir / "probes.tsv")
    tokenizer = load_tokenizer(corpus_dir / "tokenizer")
    n_words = sum(len(spec["words"]) for spec in micro["corpus"]["categories"].values())
    assert len(items) == n_words * len(micro["probes"]["templates"]) + micro["probes"]["n_controls"]
    assert sum(item.category == CONTROL for item in items) == micro["probes"]["n_controls"]
    for item in items:
        assert item.text[item.target_start : item.target_end] == item.word
        encoded = tokenizer(item.text, return_offsets_mapping=True)
        target = target_token_index(encoded["offset_mapping"], item.target_start, item.target_end)
        assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][target]) == item.word
