"""The lexicon against a real byte-level BPE tokenizer (trained here): single-token words give their ids, a split
word is refused with the model, word, category and pieces named; category frequencies per million tokens; mined
contexts are seeded, in bounds and end on the word; and the shipped real-text lexicon loads into a text config."""

import copy

import numpy as np
import pytest
import yaml
from conftest import REPO
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from featurebirth.config import validate_config
from featurebirth.lexicon import LexiconError, category_frequencies, check_lexicon, word_token_ids

REAL_LEXICON = REPO / "config" / "lexicon_real.yaml"
COMMON = ["the dog and the cat", "the red horse", "the green dog", "the cat and the red horse"]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-NeoX-like byte-level BPE: frequent words merge into one token (with their leading space); 'giraffe',
    seen once, stays in pieces (no pair seen once is merged)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(COMMON * 20 + ["a giraffe"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def test_single_token_words_pass_with_their_ids(tokenizer):
    categories = {"animals": {"words": ["dog", "cat", "horse"]}, "colours": {"words": ["red", "green"]}}
    found = check_lexicon(tokenizer, categories, model="tiny-bpe")
    assert list(found) == ["dog", "cat", "horse", "red", "green"]
    for word, token in found.items():
        assert word_token_ids(tokenizer, word) == [token]
        assert tokenizer.decode([token]) == " " + word  # the word as it stands in running text
    assert len(set(found.values())) == len(found)
    # plain lists work too (the filler words)
    assert check_lexicon(tokenizer, {"filler_words": ["the", "and"]}, model="tiny-bpe") == {
        "the": word_token_ids(tokenizer, "the")[0],
        "and": word_token_ids(tokenizer, "and")[0],
    }


def test_a_split_word_is_refused_with_model_word_category_and_pieces(tokenizer):
    pieces = [tokenizer.decode([i]) for i in word_token_ids(tokenizer, "giraffe")]
    assert len(pieces) > 1 and "".join(pieces) == " giraffe"
    categories = {"animals": {"words": ["dog", "giraffe"]}, "colours": {"words": ["red"]}}
    with pytest.raises(LexiconError) as refused:
        check_lexicon(tokenizer, categories, model="pythia-70m")
    message = str(refused.value)
    assert "pythia-70m" in message
    assert f"'giraffe' (animals): {len(pieces)} tokens {pieces}" in message
    assert "'dog'" not in message and "'red'" not in message
    assert "1 lexicon word(s)" in message


def test_every_split_word_is_listed_at_once(tokenizer):
    with pytest.raises(LexiconError, match=r"2 lexicon word\(s\).*'giraffe' \(animals\).*'zebu' \(cattle\)"):
        check_lexicon(tokenizer, {"animals": ["giraffe", "dog"], "cattle": ["zebu"]}, model="m")


def test_frequencies_per_million_by_hand():
    word_ids = {"dog": 5, "cat": 7, "red": 9}
    categories = {"animals": {"words": ["dog", "cat"]}, "colours": {"words": ["red"]}, "none": {"words": []}}
    ids = np.array([[5, 1, 7, 5], [2, 9, 3, 4], [0, 0, 0, 7], [1, 1, 1, 1], [6, 6, 6, 6]])  # 20 tokens
    frequencies = category_frequencies(ids, word_ids, categories)
    assert list(frequencies) == ["animals", "colours", "none"]
    assert frequencies == pytest.approx({"animals": 4 / 20 * 1e6, "colours": 1 / 20 * 1e6, "none": 0.0})
    assert category_frequencies(ids.ravel(), word_ids, categories) == frequencies  # any shape
    absent = category_frequencies(np.array([1, 2, 3]), {"zebra": 50_000}, {"animals": ["zebra"]})
    assert absent == {"animals": 0.0}  # a token id beyond the text's largest id counts zero
    with pytest.raises(LexiconError, match="'cow' \\(animals\\)"):
        category_frequencies(ids, word_ids, {"animals": ["dog", "cow"]})


@pytest.fixture
def text_raw(micro_raw, tmp_path) -> dict:
    """A minimal real-text config (as tests/conftest.py's text_world writes it) naming the real lexicon."""
    raw = copy.deepcopy(micro_raw)
    raw["corpus"] = {
        "source": "text",
        "seq_len": 32,
        "lexicon": str(REAL_LEXICON),
        "text": {"dataset": {"repo": "featurebirth-test/planted-text", "files": "data/*.jsonl.zst"}},
    }
    raw["models"] = {
        "tiny-neox": {
            "source": "hub",
            "repo": "featurebirth-test/tiny-neox",
            "d_model": 16,
            "n_layers": 2,
            "tokens_per_step": 256,
        }
    }
    raw["hub"] = {"cache_dir": str(tmp_path), "offline_prefetch": True}
    return raw


def test_the_real_lexicon_loads_into_a_text_config(text_raw):
    corpus = validate_config(text_raw)["corpus"]
    lexicon = yaml.safe_load(REAL_LEXICON.read_text())
    assert set(lexicon) == {"categories", "filler_words"}  # nothing is generated from it
    categories = corpus["categories"]
    assert categories == lexicon["categories"]
    assert len(categories) >= 10
    words = [word for spec in categories.values() for word in spec["words"]]
    for name, spec in categories.items():
        assert set(spec) == {"words"}, name
        assert len(spec["words"]) >= 20, name
        assert all(word.isascii() and word.isalpha() and word.islower() for word in spec["words"]), name
    assert len(words) == len(set(words))  # no word in two categories
    assert not set(corpus["filler_words"]) & set(words)
    left_out = {"bat", "orange", "china", "turkey", "jack", "seal", "bass"}  # several common senses
    assert not left_out & set(words)
