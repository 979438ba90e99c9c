"""Score one cell: how selectively do its SAE features fire on each category's probe targets?

Feature f *fires* on a probe token when its code is > 0. Positives for category c are the
target tokens of c; negatives are every other probe token (other categories and controls).
The category score is the best feature's F1; its null is the same score after permuting the
category labels among target *words* (all contexts of a word move together), so a feature
that fires on one word, or on an arbitrary set of words, scores alike under both and only a
feature that groups the words of one category beats the null.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
import xarray as xr
from scipy.stats import rankdata

from .io import atomic_path, read_json
from .layout import CONTROL, PROBE_DATASET
from .sae import load_sae


def one_hot(labels: np.ndarray, categories: list[str]) -> np.ndarray:
    """[items, categories] 0/1 matrix; control items (and unknown labels) are all-zero rows."""
    return (labels[:, None] == np.asarray(categories)[None, :]).astype(np.float64)


def f1_matrix(fires: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of every feature [items, F] against every category [items, C] -> [F, C]."""
    fires = fires.astype(np.float64)
    true_positives = fires.T @ positives
    fired = fires.sum(axis=0)[:, None]
    present = positives.sum(axis=0)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(fired > 0, true_positives / fired, 0.0)
        recall = np.where(present > 0, true_positives / present, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def auroc_matrix(codes: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """AUROC of each feature's code value [items, F] for each category [items, C] -> [F, C] (ties count half)."""
    ranks = rankdata(codes, axis=0)
    n_pos = positives.sum(axis=0)
    n_neg = len(codes) - n_pos
    rank_sums = ranks.T @ positives
    with np.errstate(divide="ignore", invalid="ignore"):
        return (rank_sums - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def category_scores(fires: np.ndarray, labels: np.ndarray, categories: list[str]) -> np.ndarray:
    """S(c): the best feature's F1 for each category."""
    return f1_matrix(fires, one_hot(labels, categories))[2].max(axis=0)


def permuted_labels(labels: np.ndarray, words: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Category labels shuffled among target words; every context of a word keeps one label; controls stay."""
    targets = labels != CONTROL
    unique_words = np.unique(words[targets])
    word_label = {w: labels[targets][words[targets] == w][0] for w in unique_words}
    shuffled = dict(zip(unique_words, rng.permutation([word_label[w] for w in unique_words])))
    out = labels.copy()
    out[targets] = [shuffled[w] for w in words[targets]]
    return out


def null_scores(
    fires: np.ndarray, labels: np.ndarray, words: np.ndarray, categories: list[str],
    n_permutations: int, quantile: float, seed: int,
) -> np.ndarray:
    """S0(c): the `quantile` of the category score over seeded word-level label permutations."""
    rng = np.random.default_rng(seed)
    samples = np.stack(
        [category_scores(fires, permuted_labels(labels, words, rng), categories) for _ in range(n_permutations)]
    )
    return np.quantile(samples, quantile, axis=0)


def score_codes(
    codes: np.ndarray, labels: np.ndarray, words: np.ndarray, categories: list[str], settings: dict
) -> xr.Dataset:
    """Every per-category score of one cell from its SAE codes [items, F] and the probe labels."""
    fires = codes > 0
    positives = one_hot(labels, categories)
    precision, recall, f1 = f1_matrix(fires, positives)
    auroc = auroc_matrix(codes, positives)
    best = f1.argmax(axis=0)
    columns = np.arange(len(categories))
    null = null_scores(
        fires, labels, words, categories, settings["n_permutations"], settings["null_quantile"], settings["seed"]
    )
    return xr.Dataset(
        {
            "score": ("category", f1[best, columns]),
            "null": ("category", null),
            "best_feature": ("category", best.astype(np.int32)),
            "auroc": ("category", auroc[best, columns]),
            "precision": ("category", precision[best, columns]),
            "recall": ("category", recall[best, columns]),
            "feature_f1": (("feature", "category"), f1.astype(np.float32)),
        },
        coords={"category": categories},
    )


def read_probe_cache(path: Path, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One layer's probe activations [items, d_model] (float32), labels, words and the file's metadata."""
    with h5py.File(path, "r") as handle:
        activations = handle[PROBE_DATASET][layer].astype(np.float32)
        labels = handle["category"][:].astype(str)
        words = handle["word"][:].astype(str)
        return activations, labels, words, dict(handle.attrs)


def encode(sae_dir: Path, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SAE codes [items, F] of the activations and the unit decoder directions [F, d_model]."""
    ae = load_sae(sae_dir)
    with torch.inference_mode():
        codes = ae.encode(torch.from_numpy(activations)).numpy()
        decoder = ae.decoder.weight.T.numpy()
    return codes, decoder / np.linalg.norm(decoder, axis=1, keepdims=True).clip(min=1e-12)


def score_cell(
    probes: Path, sae_dir: Path, out_path: Path, *, model: str, step: int, layer: int,
    categories: list[str], settings: dict,
) -> xr.Dataset:
    """Score one (model, step, layer) cell and write it as a small netCDF file; return it."""
    activations, labels, words, metadata = read_probe_cache(probes, layer)
    unknown = sorted(set(labels) - set(categories) - {CONTROL})
    if unknown:
        raise ValueError(f"probe file {probes} holds categories {unknown} that the config does not list")
    codes, directions = encode(sae_dir, activations)
    scores = score_codes(codes, labels, words, categories, settings)
    best = scores["best_feature"].values
    scores["best_direction"] = (("category", "hidden"), directions[best].astype(np.float32))
    quality = read_json(Path(sae_dir) / "metrics.json")
    for name, key in QUALITY_METRICS.items():
        scores[name] = quality[key]
    scores.attrs.update(
        {"model": model, "step": step, "layer": layer, **{k: metadata[k] for k in CHECKPOINT_ATTRS if k in metadata}}
    )
    with atomic_path(out_path) as tmp:
        scores.to_netcdf(tmp, engine="h5netcdf")
    return scores


CHECKPOINT_ATTRS = ("n_params", "tokens_seen", "d_model", "n_layers", "fingerprint")
QUALITY_METRICS = {"variance_explained": "fraction_variance_explained", "l0": "l0", "dead_fraction": "dead_fraction"}
