"""The lineage kernels: cosine and correlation of best features, across seeds and across steps."""

import numpy as np
import pytest

from featurebirth.lineage import across_seeds, across_steps, correlation, cosine


def test_cosine_of_vectors_and_nan_where_missing_or_zero():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [np.nan, 1.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [1.0, 1.0]])
    got = cosine(a, b)
    assert got[:2].tolist() == [0.0, pytest.approx(1.0)] and np.isnan(got[2:]).all()


def test_correlation_leaves_out_the_padding_and_is_nan_for_a_silent_feature():
    # [1, 2, 3] against [2, 4, 7] (r = 0.9934...), then a shorter probe set padded with NaN
    a = np.array([[1.0, 2.0, 3.0, np.nan], [0.0, 0.0, 0.0, 0.0]])
    b = np.array([[2.0, 4.0, 7.0, np.nan], [1.0, 2.0, 3.0, 4.0]])
    expected = np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1]
    got = correlation(a, b)
    assert got[0] == pytest.approx(expected) and np.isnan(got[1])


def test_across_seeds_averages_every_pair_and_is_nan_with_one_seed():
    seeds = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])  # three seeds, one entry each
    pairs = [0.0, 2**-0.5, 2**-0.5]  # (0, 1), (0, 2), (1, 2)
    assert across_seeds(seeds, cosine).tolist() == [pytest.approx(np.mean(pairs))]
    assert np.isnan(across_seeds(seeds[:1], cosine)).all()


def test_across_steps_pairs_each_seed_with_the_other_seeds_at_the_earlier_step():
    # seed 0 keeps its own direction from one step to the next, seed 1 too, but the two seeds' directions are
    # orthogonal: against itself each would look carried over (1), against the other seed it is not (0)
    then = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    now = then.copy()
    assert across_steps(now, then, cosine).tolist() == [[0.0], [0.0]]
    assert across_steps(now[:1], then[:1], cosine).tolist() == [[1.0]]  # one seed: against its own
    # three seeds: seed 0 against seeds 1 and 2 at the earlier step, averaged
    then = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])
    got = across_steps(then, then, cosine)
    assert got[:, 0].tolist() == [pytest.approx(0.5), pytest.approx(0.0), pytest.approx(0.5)]
