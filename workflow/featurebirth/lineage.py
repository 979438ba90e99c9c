"""Feature lineage: is a category's best feature at one step the same feature as at the step before, or in another
SAE seed? Pure numpy kernels; the cube (cube.py) applies them to the best features its score files keep.

Two measures, because each misleads alone: the cosine of the two features' decoder directions (early in training
the residual basis itself drifts, so a feature that carries over can point elsewhere), and the Pearson correlation
of their codes over the same probe items (two features can fire alike from different directions). Two seeds' SAEs
at the same step give the reference: the similarity of two features that are "the same" up to SAE training noise.
Like that reference, the comparison across steps pairs different seeds: a seed's SAEs start from the same
initialisation at every step (same seed, same shape), which alone would make them look alike.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of the vectors along the last axis; NaN where either is missing (NaN) or zero."""
    dot = (a * b).sum(axis=-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, dot / norms, np.nan)


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis over the positions both have (NaN pads a shorter probe set); NaN where
    either is constant there (a feature that never fires on the probes)."""
    both = np.isfinite(a) & np.isfinite(b)
    count = both.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        centred = [np.where(both, x - np.where(both, x, 0).sum(axis=-1, keepdims=True) / count, 0) for x in (a, b)]
    return cosine(*centred)


def across_seeds(values: np.ndarray, kernel) -> np.ndarray:
    """The mean of `kernel` over every pair of seeds (axis 0 of `values`); NaN with fewer than two seeds."""
    pairs = [kernel(values[i], values[j]) for i, j in combinations(range(len(values)), 2)]
    return np.mean(pairs, axis=0) if pairs else np.full(values.shape[1:-1], np.nan)


def across_steps(now: np.ndarray, then: np.ndarray, kernel) -> np.ndarray:
    """Per seed (axis 0), `kernel` of its best feature now against every other seed's at the earlier step, averaged,
    so that it compares two initialisations as across_seeds does; with one seed, against its own (biased towards
    alike: nothing to calibrate it by either)."""
    if len(now) == 1:
        return kernel(now, then)
    others = [[kernel(now[a], then[b]) for b in range(len(then)) if b != a] for a in range(len(now))]
    return np.stack([np.mean(pairs, axis=0) for pairs in others])
