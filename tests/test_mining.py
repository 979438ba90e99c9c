"""Mined probes on a hand-made probe-mining part: whole-word occurrences, windows inside their document ending at the
word, the per-word cap, frequency-matched controls, and the record of words found too rarely."""

import json

import h5py
import numpy as np
import pytest
import torch

from featurebirth.activations import capture_blocks, window_activations
from featurebirth.layout import CONTROL
from featurebirth.mining import match_controls, mine_probes, read_mined, spread
from featurebirth.models import load_model

VOCAB = [
    "<eos>",
    " dog",
    " cat",
    " cow",
    " red",
    " blue",
    "s",
    " the",
    " ran",
    " sat",
    " big",
    " old",
    " saw",
    ".",
    " Dog",
    " ",
]
EOS = 0
CATEGORIES = {"animals": ["dog", "cat", "cow"], "colours": ["red", "blue"]}


class PieceTokenizer:
    """A byte-level-BPE-like stand-in: greedy longest match over VOCAB; a piece without a space continues a word."""

    unk_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids, rest = [], text
        while rest:
            piece = max((p for p in VOCAB if rest.startswith(p)), key=len)
            ids.append(VOCAB.index(piece))
            rest = rest[len(piece) :]
        return {"input_ids": ids}

    def decode(self, ids: list[int], clean_up_tokenization_spaces: bool = False) -> str:
        return "".join(VOCAB[i] for i in ids)


def tokens(text: str) -> list[int]:
    return PieceTokenizer()(text)["input_ids"]


DOCUMENTS = [
    " the big dog ran. the old dog sat. the dogs ran.",  # " dogs" is " dog" + "s": not an occurrence of dog
    " dog ran. the cat saw the red cat. the old saw sat. the big saw ran.",  # the first dog: too little context
    " the big blue cat sat. the old red dog saw the big saw. the saw ran. the cat ran.",
]


@pytest.fixture
def mined(tmp_path):
    """The documents joined with EOS as a packed probe part (rows of 8), mined with windows of 3, at most 2 per word."""
    flat = np.array([t for doc in DOCUMENTS for t in (*tokens(doc), EOS)], dtype=np.int32)
    part = tmp_path / "probe.h5"
    with h5py.File(part, "w") as handle:
        handle.create_dataset("probe", data=flat[: len(flat) // 8 * 8].reshape(-1, 8))
        handle.attrs.update({"eos": EOS, "tokenizer": "piece"})
    settings = {"categories": CATEGORIES, "per_word": 2, "context": 3}
    record = mine_probes(part, PieceTokenizer(), settings, tmp_path / "mined.h5", tmp_path / "mined.json")
    return flat[: len(flat) // 8 * 8], record, read_mined(tmp_path / "mined.h5"), tmp_path


def whole_word_ends(flat: np.ndarray, token: int, context: int) -> list[int]:
    """Positions of `token` not followed by "s", with `context` - 1 tokens before it in its document: by hand."""
    return [
        p
        for p in range(context - 1, len(flat) - 1)
        if flat[p] == token and VOCAB[flat[p + 1]] != "s" and EOS not in flat[p - context + 1 : p + 1]
    ]


def test_windows_end_at_the_word_inside_its_document(mined):
    flat, record, (ids, labels, words), _ = mined
    assert ids.shape[1] == 3 and len(ids) == len(labels) == len(words)
    starts = {tuple(flat[p : p + 3]): p for p in range(len(flat) - 2)}
    for window, word in zip(ids, words):
        assert VOCAB[window[-1]] == f" {word}"  # the target is the window's last position
        assert EOS not in window and tuple(window) in starts  # a slice of the part, inside one document
        assert VOCAB[flat[starts[tuple(window)] + 3]] != "s"  # a whole word
    # dog: " the big dog", " the old dog" in document 0 (not " dogs", nor the first dog of document 1, whose
    # window would reach into document 0), " old red dog" in document 2: 3 occurrences, 2 kept, spread (first, last)
    dog = whole_word_ends(flat, VOCAB.index(" dog"), 3)
    assert len(dog) == record["words"]["dog"]["occurrences"] == 3
    kept = ids[words == "dog"]
    assert [tuple(w) for w in kept] == [tuple(flat[p - 2 : p + 1]) for p in (dog[0], dog[2])]


def test_the_record_counts_every_word_and_reports_the_missing_and_thin(mined):
    flat, record, (ids, labels, words), tmp_path = mined
    assert json.loads((tmp_path / "mined.json").read_text())["words"] == record["words"]
    for category, members in CATEGORIES.items():
        for word in members:
            found = len(whole_word_ends(flat, VOCAB.index(f" {word}"), 3))
            entry = record["words"][word]
            assert (entry["category"], entry["occurrences"], entry["contexts"]) == (category, found, min(found, 2))
            assert (words == word).sum() == entry["contexts"] and set(labels[words == word]) <= {category}
    assert record["words"]["cow"] == {"category": "animals", "occurrences": 0, "contexts": 0}  # never occurs
    assert record["words"]["blue"]["occurrences"] == 1
    assert record["words_with_contexts"] == {"animals": 2, "colours": 2}
    assert record["too_few_words"] == []


def test_controls_are_frequency_matched_words_outside_the_lexicon(mined):
    flat, record, (ids, labels, words), _ = mined
    lexicon = {w for members in CATEGORIES.values() for w in members}
    controls = record["controls"]
    assert set(labels[np.isin(words, list(controls))]) == {CONTROL}
    assert not set(controls) & lexicon and set(words[labels == CONTROL]) == set(controls)
    # candidates: the lowercase words that are one token after a space (not " Dog", nor "s": " s" is two pieces)
    counts = {
        w: len(whole_word_ends(flat, VOCAB.index(f" {w}"), 3)) for w in ("the", "ran", "sat", "big", "old", "saw")
    }
    occurring = {w: e["occurrences"] for w, e in record["words"].items() if e["occurrences"]}
    assert {w: e["control"] for w, e in record["words"].items() if "control" in e} == match_controls(occurring, counts)
    for control, entry in controls.items():
        assert entry["occurrences"] == counts[control]
        assert record["words"][entry["matched_to"]]["control"] == control
        assert entry["contexts"] == min(counts[control], 2) == (words == control).sum()


def test_matching_takes_the_nearest_frequency_on_a_log_scale_most_frequent_first():
    counts = {"dog": 100, "cat": 10, "cow": 0, "red": 12}
    candidates = {"the": 1000, "ran": 90, "sat": 11, "old": 30, "saw": 2}
    # dog 100 -> ran 90; red 12 -> sat 11 (nearer than old 30); cat 10 -> old (log 3 away) before saw (log 5 away)
    assert match_controls(counts, candidates) == {"dog": "ran", "red": "sat", "cat": "old"}
    assert match_controls(counts, {"the": 5}) == {"dog": "the"}  # candidates run out: the rarer words go without


def test_spread_keeps_the_ends_and_spaces_the_rest():
    assert spread(np.arange(10), 3).tolist() == [0, 4, 9]
    assert spread(np.arange(2), 5).tolist() == [0, 1]


def test_window_activations_take_the_last_position(checkpoint):
    model = load_model(checkpoint, torch.device("cpu"))
    ids = np.random.default_rng(0).integers(2, model.config.vocab_size, size=(5, 6))
    out = window_activations(model, ids, batch_size=2)
    assert out.shape == (model.config.num_hidden_layers, 5, model.config.hidden_size)
    with torch.no_grad(), capture_blocks(model, [0, 1]) as captured:
        model.gpt_neox(input_ids=torch.from_numpy(ids))
        for layer in (0, 1):
            np.testing.assert_allclose(out[layer], captured[layer][:, -1].numpy(), rtol=1e-5, atol=1e-6)
