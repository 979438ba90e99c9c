"""Score the cells of one checkpoint: how selectively do SAE features fire on each category's probe targets?

Feature f *fires* on a probe token when its code is > 0. Positives for category c are the
target tokens of c; negatives are every other probe token (other categories and controls).
The category score is the best feature's F1; its null is the same score after permuting the
category labels among target *words* (all contexts of a word move together), so a feature
that fires on one word, or on an arbitrary set of words, scores alike under both and only a
feature that groups the words of one category beats the null.

Two controls judge a cell on words it never scored on: the probe items are split into folds by word
(probe_baseline.word_folds); each fold's held-out words are predicted by a linear probe on the raw activations
(probe_baseline) and by the SAE feature with the best F1 on the other folds' items (c where it fires). Every item is
predicted once, by its own fold; the score is the F1 of those predictions, its null the `null_quantile` of the
same cross-validated score under `heldout_permutations` word-level label permutations, the folds kept.

Every score is kept per probe set (`probe_set`): the template contexts, and with real text the contexts mined from its
probe-mining part (mining.py), each scored on its own by the same functions; a category with fewer than two words in
a set (a mined category too rare in the text) is NaN there.

Beside the scores, each cell's SAE quality on the held-out evaluation split: variance explained, L0, dead
features and reconstruction error of its activations (sae.quality), and its downstream quality, the
next-token loss with the SAE spliced into the residual stream (featurebirth.downstream).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr
from scipy.stats import rankdata

from .activations import layer_activations, probe_activations, token_rows, window_activations
from .corpus import EVAL_SPLIT, read_probes
from .downstream import clean_reference, downstream_quality, sae_reconstruction, zero_ablated
from .io import atomic_path, read_json
from .layout import CONTROL, PROBE_SETS, SAE_CONFIG, group_sae_dirs
from .mining import read_mined
from .models import checkpoint_metadata, forward_dtype, load_model, load_tokenizer, resolve_device
from .probe_baseline import out_of_fold, probe_logits, training_masks, word_folds
from .sae import load_sae, quality


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
    fires: np.ndarray,
    labels: np.ndarray,
    words: np.ndarray,
    categories: list[str],
    n_permutations: int,
    quantile: float,
    seed: int,
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


def check_heldout_words(labels: np.ndarray, words: np.ndarray, categories: list[str]) -> None:
    """Refuse a category with fewer than two probe words: held-out scoring has no unseen word of it to try."""
    counts = {c: len(np.unique(words[labels == c])) for c in categories}
    few = {c: n for c, n in counts.items() if n < 2}
    if few:
        raise ValueError(f"held-out scoring needs at least two probe words per category; these have fewer: {few}")


def label_sets(
    labels: np.ndarray, words: np.ndarray, categories: list[str], n_permutations: int, seed: int
) -> np.ndarray:
    """[1 + permutations, items, categories] 0/1: the true labels, then seeded word-level permutations of them."""
    rng = np.random.default_rng(seed)
    sets = [labels] + [permuted_labels(labels, words, rng) for _ in range(n_permutations)]
    return np.stack([one_hot(s, categories) for s in sets])


def paired_f1(predicted: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """F1 of each category's predictions against its own labels, [..., items, C] -> [..., C] (0 where undefined)."""
    hits = (predicted * positives).sum(-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * hits / (predicted.sum(-2) + positives.sum(-2))
    return np.nan_to_num(f1)


def heldout_sae_predictions(fires: np.ndarray, targets: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """[B, items, C]: on each fold's items, whether the feature with the best F1 on the other folds' items fires."""
    n_sets, n_items, n_categories = targets.shape
    flat = targets.transpose(1, 0, 2).reshape(n_items, n_sets * n_categories)
    predicted = np.zeros((n_items, n_sets * n_categories), dtype=bool)
    for fold in np.unique(folds):
        test = folds == fold
        best = f1_matrix(fires[~test], flat[~test])[2].argmax(axis=0)
        predicted[test] = fires[test][:, best]
    return predicted.reshape(n_items, n_sets, n_categories).transpose(1, 0, 2)


HeldOut = tuple[np.ndarray, np.ndarray]  # word folds [items], label sets [1 + permutations, items, categories]


def heldout_targets(labels: np.ndarray, words: np.ndarray, categories: list[str], settings: dict) -> HeldOut:
    """The word-grouped folds and the label sets (true, then permuted) both held-out controls are scored on: one
    probe set's, the same for every layer and seed."""
    folds = word_folds(labels, words, settings["folds"], settings["seed"])
    return folds, label_sets(labels, words, categories, settings["heldout_permutations"], settings["seed"])


def probe_scores(
    activations: np.ndarray, heldout: HeldOut, categories: list[str], settings: dict, device: torch.device
) -> xr.Dataset:
    """probe_score, probe_null and probe_auroc of one layer (no SAE: the same for every SAE seed), over the
    word-grouped folds of `heldout` (heldout_targets)."""
    folds, targets = heldout
    train = training_masks(folds, settings["folds"])
    logits = out_of_fold(probe_logits(activations, targets, train, settings["probe_l2"], device), folds)
    probe = paired_f1(logits > 0, targets)
    columns = np.arange(len(categories))
    return xr.Dataset(
        {
            "probe_score": ("category", probe[0]),
            "probe_null": ("category", np.quantile(probe[1:], settings["null_quantile"], axis=0)),
            "probe_auroc": ("category", auroc_matrix(logits[0], targets[0])[columns, columns]),
        },
        coords={"category": categories},
    )


def heldout_sae_scores(codes: np.ndarray, heldout: HeldOut, categories: list[str], settings: dict) -> xr.Dataset:
    """heldout_score and heldout_null of one SAE, over the same word-grouped folds as the probe's (heldout_targets)."""
    folds, targets = heldout
    sae = paired_f1(heldout_sae_predictions(codes > 0, targets, folds), targets)
    return xr.Dataset(
        {
            "heldout_score": ("category", sae[0]),
            "heldout_null": ("category", np.quantile(sae[1:], settings["null_quantile"], axis=0)),
        },
        coords={"category": categories},
    )


def encode(ae: torch.nn.Module, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SAE codes [items, F] of the activations and the unit decoder directions [F, d_model]."""
    device = ae.decoder.weight.device
    with torch.inference_mode():
        codes = ae.encode(torch.from_numpy(activations).to(device)).cpu().numpy()
        decoder = ae.decoder.weight.T.cpu().numpy()
    return codes, decoder / np.linalg.norm(decoder, axis=1, keepdims=True).clip(min=1e-12)


ProbeSet = tuple[np.ndarray, np.ndarray, np.ndarray]  # activations [n_layers, items, d_model], labels, words


def thin_categories(labels: np.ndarray, words: np.ndarray, categories: list[str]) -> list[str]:
    """The categories with fewer than two probe words: held-out scoring has no unseen word of them to try."""
    return [c for c in categories if len(np.unique(words[labels == c])) < 2]


def _without_thin(scores: xr.Dataset, labels: np.ndarray, words: np.ndarray, categories: list[str]) -> xr.Dataset:
    """NaN for the categories with fewer than two words (a mined set's rare category): scored with the rest, their
    items stay negatives of the others."""
    thin = thin_categories(labels, words, categories)
    return scores.where(~scores["category"].isin(thin)) if thin else scores


def probe_set_scores(
    ae: torch.nn.Module, probes: np.ndarray, labels: np.ndarray, words: np.ndarray, heldout: HeldOut, settings: dict
) -> xr.Dataset:
    """One SAE on one probe set: its category scores, its held-out score (the feature chosen on other words), and
    per category the best feature's decoder direction and its code on every probe item (for the cube's lineage)."""
    categories = settings["categories"]
    codes, directions = encode(ae, probes)
    scores = score_codes(codes, labels, words, categories, settings["scoring"])
    scores.update(heldout_sae_scores(codes, heldout, categories, settings["scoring"]))
    best = scores["best_feature"].values
    scores["best_direction"] = (("category", "hidden"), directions[best].astype(np.float32))
    scores["best_codes"] = (("category", "item"), codes[:, best].T.astype(np.float32))
    scores.coords["item"] = np.arange(len(codes))  # probe sets differ in length: concatenated, the shorter is padded
    return _without_thin(scores, labels, words, categories)


def score_layer(
    saes: dict[int, torch.nn.Module],
    probe_sets: dict[str, ProbeSet],
    heldout: dict[str, HeldOut],
    layer: int,
    held_out: torch.Tensor,
    settings: dict,
) -> xr.Dataset:
    """One cell: per SAE seed (along seed) its scores on every probe set (along probe_set) and its quality on held-out
    activations; the linear probe on every probe set, once (it reads no SAE). `heldout`: each probe set's
    heldout_targets."""
    per_seed = []
    for ae in saes.values():
        sets = [
            probe_set_scores(ae, acts[layer], labels, words, heldout[name], settings)
            for name, (acts, labels, words) in probe_sets.items()
        ]
        cell = xr.concat(sets, "probe_set", join="outer").assign_coords(probe_set=list(probe_sets))
        device = ae.decoder.weight.device
        for name, value in quality(ae, held_out.to(device).float()).items():
            cell[name] = value
        per_seed.append(cell)
    scores = xr.concat(per_seed, "seed").assign_coords(seed=list(saes))
    device = resolve_device(settings["device"])
    probes = [
        _without_thin(
            probe_scores(acts[layer], heldout[name], settings["categories"], settings["scoring"], device),
            labels,
            words,
            settings["categories"],
        )
        for name, (acts, labels, words) in probe_sets.items()
    ]
    return scores.merge(xr.concat(probes, "probe_set").assign_coords(probe_set=list(probe_sets)))


def probe_counts(probe_sets: dict[str, ProbeSet], categories: list[str]) -> xr.Dataset:
    """probe_words and probe_items (probe_set, category): each category's words with contexts, and its contexts."""
    sets = list(probe_sets.values())
    words = [[len(np.unique(w[labels == c])) for c in categories] for _, labels, w in sets]
    items = [[int((labels == c).sum()) for c in categories] for _, labels, _ in sets]
    dims = ("probe_set", "category")
    coords = {"probe_set": list(probe_sets), "category": categories}
    return xr.Dataset({"probe_words": (dims, words), "probe_items": (dims, items)}, coords=coords)


def read_probe_sets(
    network: torch.nn.Module, checkpoint: Path, probes: Path, mined: Path | None, settings: dict
) -> dict[str, ProbeSet]:
    """Every probe set's activations at its targets, labels and words: the template contexts (text items, their
    target located by character offsets) and, with real text, the mined ones (token-id windows, target last)."""
    items = read_probes(probes)
    labels = np.array([item.category for item in items])
    words = np.array([item.word for item in items])
    check_heldout_words(labels, words, settings["categories"])
    batch_size = settings["forward_batch_size"]
    sets = {PROBE_SETS[0]: (probe_activations(network, load_tokenizer(checkpoint), items, batch_size), labels, words)}
    if mined is not None:
        ids, labels, words = read_mined(mined)
        sets[PROBE_SETS[1]] = (window_activations(network, ids, batch_size), labels, words)
    for name, (_, labels, _) in sets.items():
        unknown = sorted(set(labels.tolist()) - set(settings["categories"]) - {CONTROL})
        if unknown:
            source = probes if name == PROBE_SETS[0] else mined
            raise ValueError(f"probe file {source} holds categories {unknown} that the config does not list")
    return sets


def studied_sae_dirs(manifests: list[Path], layers: list[int], seeds: list[int]) -> dict[tuple[int, int], str]:
    """Each studied (layer, seed)'s SAE folder, from the manifests of the groups that trained them (later ones win)."""
    folders = {unit: folder for manifest in manifests for unit, folder in group_sae_dirs(manifest).items()}
    missing = [(layer, seed) for layer in layers for seed in seeds if (layer, seed) not in folders]
    if missing:
        raise ValueError(f"no SAE group among {[str(m) for m in manifests]} holds (layer, seed) {missing}")
    return {(layer, seed): folders[layer, seed] for layer in layers for seed in seeds}


def load_seed_sae(folder: str, seed: int, device: torch.device) -> torch.nn.Module:
    """A cell's SAE of one seed, refused when its folder holds another seed's (renamed folders, reordered seeds)."""
    trained = read_json(Path(folder) / SAE_CONFIG)["trainer"].get("seed")
    if trained != seed:
        raise ValueError(
            f"the SAE in {folder} was trained with seed {trained}, not seed {seed} as its folder says: delete the "
            "manifest of its layer group and rerun, to retrain it"
        )
    return load_sae(folder, device)


def per_seed_quality(
    network: torch.nn.Module, reference, layer: int, saes: dict, folders: dict, evaluation: dict
) -> dict[str, list[float]]:
    """Per seed of one layer: the trainer's dead fraction at the end of training and the downstream quality."""
    values: dict[str, list[float]] = {}
    zeroed = zero_ablated(network, reference, layer)
    for seed, ae in saes.items():
        trained = read_json(Path(folders[layer, seed]) / SAE_CONFIG)["training"].get("dead_fraction_train")
        values.setdefault("dead_fraction_train", []).append(np.nan if trained is None else trained)
        reconstruct = sae_reconstruction(ae)
        downstream = downstream_quality(network, reference, layer, reconstruct, evaluation["ce_floor"], zeroed)
        for name, value in downstream.items():
            values.setdefault(name, []).append(value)
    return values


def score_step(
    checkpoint: Path,
    probes: Path,
    eval_tokens: Path,
    manifests: list[Path],
    layers: list[int],
    settings: dict,
    out_path: Path,
    *,
    model: str,
    step: int,
    mined: Path | None,
) -> xr.Dataset:
    """Score every studied layer of one (model, step), each SAE seed (settings["seeds"]) on its own, on every probe
    set and measure its SAEs' quality; write one netCDF file. `mined`: the mined probes of real text (mining.py),
    scored as the probe set "mined".

    One forward pass over each probe set and one over the held-out evaluation split serve every layer; one
    clean pass over the split gives the clean loss (the same for every layer), then each layer's SAE is
    spliced in (and zero ablation) for its downstream quality (featurebirth.downstream).
    """
    seeds = settings["seeds"]
    folders = studied_sae_dirs(manifests, layers, seeds)
    device = resolve_device(settings["device"])
    network = load_model(checkpoint, device, forward_dtype(device, settings["gpu_dtype"]))
    probe_sets = read_probe_sets(network, checkpoint, probes, mined, settings)
    categories, scoring = settings["categories"], settings["scoring"]
    heldout = {
        name: heldout_targets(labels, words, categories, scoring) for name, (_, labels, words) in probe_sets.items()
    }
    evaluation = settings["evaluation"]
    ids = token_rows(eval_tokens, checkpoint, EVAL_SPLIT, evaluation["tokens"], evaluation["seq_len"], spread=True)
    batch_size, exclude_first = settings["forward_batch_size"], evaluation["exclude_first"]
    held_out = layer_activations(network, ids, layers, batch_size, exclude_first)
    reference = clean_reference(network, ids, exclude_first, batch_size)
    cells = []
    for layer in layers:
        saes = {seed: load_seed_sae(folders[layer, seed], seed, device) for seed in seeds}
        cell = score_layer(saes, probe_sets, heldout, layer, held_out.pop(layer), settings)
        for name, values in per_seed_quality(network, reference, layer, saes, folders, evaluation).items():
            cell[name] = ("seed", values)
        cells.append(cell.expand_dims(layer=[layer]))
        del saes
    scores = xr.concat(cells, "layer").merge(probe_counts(probe_sets, settings["categories"]))
    scores.attrs.update(
        {
            "model": model,
            "step": step,
            "eval_tokens": int(ids.numel()),
            "eval_predictions": reference.n_predictions,
            "ce_floor": float(evaluation["ce_floor"]),
            **checkpoint_metadata(network, checkpoint),
        }
    )
    with atomic_path(out_path) as tmp:
        scores.to_netcdf(tmp, engine="h5netcdf")
    return scores
