"""The linear-probe baseline: probe items split into folds by word, and a batched logistic-regression fit.

Folds group the items by *word* (every context of a word falls in one fold), each label's words (every
category's and the control words) dealt evenly over the folds: a fold's items are words the others never saw.

The probe of category c is an L2-regularised logistic regression, c against every other probe token, on the
raw residual activations standardised with the fold's training items' mean and standard deviation. It
minimises mean_i(weight_i logloss_i) + lambda / 2 ||w||^2 over the training items, the bias not penalised,
with the class weights of scikit-learn's `class_weight="balanced"` (n / (2 n_class)) and lambda =
`scoring.probe_l2`: scikit-learn's LogisticRegression with C = 1 / (lambda n_train) on the same features.
Every (label set, fold, category) problem is fitted at once, by one L-BFGS over the sum of the independent
objectives (analytic gradients), in float32 on the score job's device; it predicts c where its logit is > 0.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_ITERATIONS = 500  # L-BFGS iterations of the batched fit
GRADIENT_TOLERANCE = 1e-4  # it stops when every entry of the gradient is below this
HISTORY = 20  # L-BFGS history size


def word_folds(labels: np.ndarray, words: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every item: each label's words shuffled (seeded) and dealt round-robin; a word's contexts share one."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for label in np.unique(labels):
        for word in rng.permutation(np.unique(words[labels == label])):
            fold_of.setdefault(str(word), len(fold_of) % n_folds)
    return np.array([fold_of[str(w)] for w in words])


def training_masks(folds: np.ndarray, n_folds: int) -> np.ndarray:
    """[folds, items] bool: the items each fold's probe is fitted on (every other fold's)."""
    return folds[None, :] != np.arange(n_folds)[:, None]


def standardised(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """[K, n, d]: the activations centred and scaled by each fold's training items (constant dimensions: 0)."""
    mask = train[:, :, None].to(x.dtype)
    count = mask.sum(1, keepdim=True)
    mean = (x[None] * mask).sum(1, keepdim=True) / count
    std = (((x[None] - mean) ** 2 * mask).sum(1, keepdim=True) / count).sqrt()
    return (x[None] - mean) / torch.where(std > 0, std, torch.ones_like(std))


def item_weights(y: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """[K, n, P] balanced class weight over n_train of each training item (0 on held-out items): sums to 1."""
    mask = train[:, :, None].to(y.dtype)
    total = mask.sum(1, keepdim=True)
    positives = (y * mask).sum(1, keepdim=True)
    weight = torch.where(y > 0, 1 / (2 * positives.clamp(min=1)), 1 / (2 * (total - positives).clamp(min=1)))
    return weight * mask


def probe_logits(
    activations: np.ndarray, targets: np.ndarray, train: np.ndarray, l2: float, device: torch.device | str
) -> np.ndarray:
    """Logits [B, K, n, C] of the probes of B label sets [B, n, C], fold k's fitted on its training items train[k]."""
    n_sets, n_items, n_categories = targets.shape
    x = torch.from_numpy(activations).to(device=device, dtype=torch.float32)
    fit_on = torch.from_numpy(train).to(device)
    features = standardised(x, fit_on)
    transposed = features.transpose(1, 2)
    y = torch.from_numpy(targets).to(x).permute(1, 0, 2).reshape(1, n_items, n_sets * n_categories)
    weights = item_weights(y, fit_on)
    w = torch.zeros(len(train), x.shape[1], y.shape[2], dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(len(train), 1, y.shape[2], dtype=x.dtype, device=x.device, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [w, b],
        max_iter=MAX_ITERATIONS,
        history_size=HISTORY,
        tolerance_grad=GRADIENT_TOLERANCE,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        with torch.no_grad():
            logits = torch.baddbmm(b, features, w)
            loss = (weights * (torch.nn.functional.softplus(logits) - y * logits)).sum() + 0.5 * l2 * (w * w).sum()
            residual = weights * (torch.sigmoid(logits) - y)
            w.grad = torch.bmm(transposed, residual) + l2 * w
            b.grad = residual.sum(1, keepdim=True)
        return loss

    optimiser.step(objective)
    with torch.no_grad():
        logits = torch.baddbmm(b, features, w)
    return logits.reshape(len(train), n_items, n_sets, n_categories).permute(2, 0, 1, 3).cpu().numpy()


def out_of_fold(values: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """[B, K, n, C] -> [B, n, C]: each item's value from the fold that held it out."""
    return values[:, folds, np.arange(len(folds))]
