"""Per-cell scores on hand-made codes with known answers, and the permutation null."""

import numpy as np
import pytest

from featurebirth.layout import CONTROL
from featurebirth.score import auroc_matrix, f1_matrix, one_hot, permuted_labels, score_codes

CATEGORIES = ["animals", "colours", "numbers"]
WORDS = {"animals": ["dog", "cat", "cow", "fox"], "colours": ["red", "blue", "green", "pink"],
         "numbers": ["one", "two", "six", "ten"]}
SETTINGS = {"n_permutations": 50, "null_quantile": 0.95, "seed": 0}


def probe_labels(contexts: int = 4, controls: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Every word in `contexts` templates, then control items: (labels, words)."""
    labels, words = [], []
    for category, members in WORDS.items():
        for word in members:
            labels += [category] * contexts
            words += [word] * contexts
    labels += [CONTROL] * controls
    words += [f"filler{i % 4}" for i in range(controls)]
    return np.array(labels), np.array(words)


def test_f1_and_auroc_by_hand():
    fires = np.array([[1], [1], [0], [1], [0]], dtype=bool)
    positives = np.array([[1], [1], [1], [0], [0]], dtype=float)
    precision, recall, f1 = f1_matrix(fires, positives)
    assert precision[0, 0] == pytest.approx(2 / 3)
    assert recall[0, 0] == pytest.approx(2 / 3)
    assert f1[0, 0] == pytest.approx(2 / 3)
    codes = np.array([[0.9], [0.8], [0.1], [0.5], [0.0]])
    # positives 0.9, 0.8, 0.1 against negatives 0.5, 0.0: 5 of 6 pairs ordered correctly
    assert auroc_matrix(codes, positives)[0, 0] == pytest.approx(5 / 6)


def test_planted_category_feature_scores_one_and_beats_null():
    labels, words = probe_labels()
    codes = np.zeros((len(labels), 5))
    codes[labels == "colours", 2] = 1.0  # feature 2 fires on every colour target and nothing else
    scores = score_codes(codes, labels, words, CATEGORIES, SETTINGS)
    colours = scores.sel(category="colours")
    assert float(colours["score"]) == pytest.approx(1.0)
    assert int(colours["best_feature"]) == 2
    assert float(colours["auroc"]) == pytest.approx(1.0)
    # a permutation keeps k of the 4 colour words in 'colours' (F1 = k/4); P(k >= 3) = 33/495, so q95 <= 3/4
    assert float(colours["null"]) <= 0.75


def test_single_word_feature_is_not_selective_beyond_null():
    labels, words = probe_labels()
    codes = np.zeros((len(labels), 3))
    codes[words == "dog", 0] = 1.0  # fires on one animal word only: P = 1, R = 1/4
    scores = score_codes(codes, labels, words, CATEGORIES, SETTINGS).sel(category="animals")
    assert float(scores["score"]) == pytest.approx(0.4)
    assert float(scores["score"]) - float(scores["null"]) <= 0.0 + 1e-9


def test_null_keeps_a_random_sae_from_being_called_selective():
    rng = np.random.default_rng(1)
    labels, words = probe_labels()
    # a random SAE on random activations: each word has its own activation, ReLU of random projections
    embedding = {w: rng.normal(size=16) for w in np.unique(words)}
    activations = np.stack([embedding[w] + 0.1 * rng.normal(size=16) for w in words])
    codes = np.maximum(activations @ rng.normal(size=(16, 64)), 0)
    scores = score_codes(codes, labels, words, CATEGORIES, SETTINGS)
    margin = (scores["score"] - scores["null"]).values
    assert (margin < 0.2).all(), margin


def test_permutation_moves_whole_words_and_keeps_controls():
    labels, words = probe_labels()
    shuffled = permuted_labels(labels, words, np.random.default_rng(0))
    assert (shuffled[labels == CONTROL] == CONTROL).all()
    for word in np.unique(words[labels != CONTROL]):
        assert len(set(shuffled[words == word])) == 1
    assert sorted(shuffled) == sorted(labels)
    assert (shuffled != labels).any()


def test_one_hot_leaves_controls_empty():
    labels = np.array(["animals", CONTROL, "numbers"])
    assert one_hot(labels, CATEGORIES).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
