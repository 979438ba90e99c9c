"""SAE training with dictionary-learning: quality on held-out activations, save/load round trip, loud failure."""

import re

import pytest
import torch

from featurebirth.activations import layer_activations, token_rows
from featurebirth.config import sae_training_settings, token_settings
from featurebirth.corpus import SPLIT_FILES
from featurebirth.io import read_json
from featurebirth.layout import SAE_CONFIG, SAE_WEIGHTS, cell_name
from featurebirth.models import load_model
from featurebirth.sae import SAETrainingError, load_sae, quality, save_sae, train_sae
from featurebirth.text import BudgetError, check_budget

CPU = torch.device("cpu")
CELL = cell_name("tiny-a", 6, 1)
LAYER0 = cell_name("tiny-a", 6, 0)


@pytest.fixture(scope="module")
def activations(micro, checkpoint, corpus) -> dict[str, dict[int, torch.Tensor]]:
    """The checkpoint's layer activations on the SAE split (training) and the eval split (held out), as the jobs
    read them: the first min(budget, split) tokens, the first position of every row left out."""
    model = load_model(checkpoint, CPU)
    splits = {"sae": sae_training_settings(micro, "tiny-a")["sae"]["tokens"], "eval": micro["evaluation"]["tokens"]}
    exclude_first = token_settings(micro)["exclude_first"]
    return {
        split: layer_activations(
            model, token_rows(corpus(SPLIT_FILES[split][0]), checkpoint, split, tokens, 32), [0, 1], 16, exclude_first
        )
        for split, tokens in splits.items()
    }


@pytest.fixture(scope="module")
def trained(micro, activations) -> dict[str, tuple]:
    """One SAE of layer 1 per architecture: (settings, ae, trainer config, stats)."""
    out = {}
    for architecture in ("topk", "batchtopk", "relu"):
        settings = {**sae_training_settings(micro, "tiny-a")["sae"], "architecture": architecture}
        ae, trainer, stats = train_sae(activations["sae"][1], settings, CPU, model="tiny-a", layer=1, cell=CELL)
        out[architecture] = (settings, ae, trainer, stats)
    return out


def test_activation_splits(activations):
    # the budget (7680) is more than the SAE split (40 rows of 32): all 40 rows, 31 positions kept of each;
    # evaluation reads 256 tokens = 8 rows of 32, 31 positions kept of each
    assert activations["sae"][1].shape == (40 * 31, 16) == (1240, 16)
    assert activations["eval"][1].shape == (8 * 31, 16) == (248, 16)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "relu"])
def test_sae_explains_held_out_activations(trained, activations, architecture):
    settings, ae, trainer, stats = trained[architecture]
    metrics = quality(ae, activations["eval"][1].float())
    # A 64-feature dictionary on a 16-dimensional residual stream: even 4 active features
    # reconstruct most of the variance; 0.7 leaves room for seeds, 0.0 would be "no better
    # than the mean", which a broken trainer or a wrong rescaling quickly falls to.
    assert metrics["variance_explained"] > 0.7, metrics
    assert sorted(metrics) == ["dead_fraction", "l0", "reconstruction_mse", "variance_explained"]
    if architecture == "topk":
        assert metrics["l0"] == pytest.approx(settings["k"])
    assert 0.0 < metrics["l0"] <= 64
    assert 0.0 <= metrics["dead_fraction"] < 1.0
    assert metrics["reconstruction_mse"] > 0.0
    # the budget, 7680 tokens = 120 updates of 64, trained in 6.2 passes over the 40 x 31 distinct tokens held
    assert stats["tokens_trained"] == settings["updates"] * settings["batch_size"] == 120 * 64 == settings["tokens"]
    assert stats["distinct_tokens"] == 40 * 31 == 1240
    assert trainer["steps"] == 120 and trainer["warmup_steps"] == 120 // 8
    assert trainer["dict_size"] == 64 and trainer["activation_dim"] == 16
    assert trainer["architecture"] == architecture and trainer["norm_factor"] > 0
    assert not next(ae.parameters()).is_cuda and next(ae.parameters()).dtype == torch.float32


def test_quality_by_hand():
    """quality's numbers on a dictionary whose reconstruction is known: identity codes, decoder halves them."""

    class Halving(torch.nn.Module):
        def encode(self, x):
            return torch.relu(torch.cat([x, -x], dim=1))  # 2d features, exactly d of them nonzero per token

        def decode(self, codes):
            d = codes.shape[1] // 2
            return 0.5 * (codes[:, :d] - codes[:, d:])

    x = torch.tensor([[1.0, -2.0], [3.0, 4.0], [-1.0, 0.5], [1.0, 2.5]])
    metrics = quality(Halving(), x, batch=3)  # two batches
    error = (0.5 * x).pow(2).sum().item()
    assert metrics["variance_explained"] == pytest.approx(1 - error / (x - x.mean(dim=0)).pow(2).sum().item())
    assert metrics["reconstruction_mse"] == pytest.approx(error / 4)
    assert metrics["l0"] == pytest.approx(2.0)
    # features: x0 > 0 (rows 0, 1, 3), x1 > 0 (rows 1, 2, 3), -x0 > 0 (row 2), -x1 > 0 (row 0): none dead
    assert metrics["dead_fraction"] == 0.0
    assert quality(Halving(), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))["dead_fraction"] == 0.5


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "relu"])
def test_saved_sae_reloads_with_identical_codes(trained, activations, tmp_path, architecture):
    settings, ae, trainer, stats = trained[architecture]
    save_sae(ae, trainer, settings, stats, CELL, tmp_path)
    assert (tmp_path / SAE_WEIGHTS).is_file()
    saved = read_json(tmp_path / SAE_CONFIG)
    assert saved["cell"] == CELL and saved["settings"] == settings and saved["training"] == stats
    assert saved["trainer"]["dict_size"] == 64 and saved["trainer"]["architecture"] == architecture
    loaded = load_sae(tmp_path)
    assert not loaded.training
    x = activations["eval"][1].float()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), ae.encode(x))
        assert torch.equal(loaded.decode(loaded.encode(x)), ae.decode(ae.encode(x)))
    reloaded = quality(loaded, x)
    assert reloaded == quality(ae, x)
    if architecture != "relu":
        # through load_sae, the path scoring uses: TopK keeps k; BatchTopK's learned threshold keeps it near k
        assert 0 < reloaded["l0"] <= 2 * settings["k"], reloaded
    if architecture == "topk":
        assert reloaded["l0"] == pytest.approx(settings["k"])
    assert not list(tmp_path.glob(".tmp-*"))


def test_training_is_seeded(micro, activations, trained):
    settings, ae, _, _ = trained["topk"]
    again, _, _ = train_sae(activations["sae"][1], settings, CPU, model="tiny-a", layer=1, cell=CELL)
    for name, tensor in ae.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    other, _, _ = train_sae(activations["sae"][1], {**settings, "seed": 1}, CPU, model="tiny-a", layer=1, cell=CELL)
    assert not torch.equal(other.encoder.weight, ae.encoder.weight)


def test_nan_activations_fail_naming_the_cell(micro, activations):
    poisoned = activations["sae"][0].clone()
    poisoned[100:400] = float("nan")
    settings = sae_training_settings(micro, "tiny-a")["sae"]
    with pytest.raises(SAETrainingError, match=f"SAE {re.escape(LAYER0)}: .*(nan|NaN)"):
        train_sae(poisoned, settings, CPU, model="tiny-a", layer=0, cell=LAYER0)


def test_divergence_fails_naming_the_cell(micro, activations):
    settings = {**sae_training_settings(micro, "tiny-a")["sae"], "architecture": "relu", "lr": 1e4, "l1_penalty": 0.0}
    with pytest.raises(SAETrainingError, match=f"SAE {re.escape(LAYER0)}: .*(diverged|training failed)"):
        train_sae(activations["sae"][0], settings, CPU, model="tiny-a", layer=0, cell=LAYER0)


def test_budget_beyond_max_epochs_passes_is_refused_with_both_figures(micro, tmp_path):
    recipe = sae_training_settings(micro, "tiny-a")["sae"]  # 7680 tokens, at most 7 passes
    source = tmp_path / "tokens.h5"
    check_budget(recipe, 1240, source)  # 7680 <= 7 x 1240 = 8680
    check_budget({**recipe, "tokens": 8680}, 1240, source)  # exactly 7 passes
    with pytest.raises(BudgetError) as caught:
        check_budget({**recipe, "tokens": 8681}, 1240, source)
    message = str(caught.value)
    for figure in ("sae.tokens = 8681", "sae.max_epochs = 7", "the 1240 training tokens", str(source)):
        assert figure in message, message
    # 7680 tokens need 7680 / 1240 = 6.2 passes: 6 epochs are too few, a fractional 6.2 is enough
    with pytest.raises(BudgetError, match=r"sae\.tokens = 7680 is more than sae\.max_epochs = 6 pass"):
        check_budget({**recipe, "max_epochs": 6}, 1240, source)
    check_budget({**recipe, "max_epochs": 6.2}, 1240, source)
    assert issubclass(BudgetError, ValueError)


def test_dead_fraction_comes_from_the_trainers_own_counter():
    from types import SimpleNamespace

    from featurebirth.sae import dead_fraction_in_training

    counted = SimpleNamespace(num_tokens_since_fired=torch.tensor([0, 5, 10, 20]), dead_feature_threshold=10)
    assert dead_fraction_in_training(counted) == 0.5  # 10 and 20 tokens silent reach the window of 10
    assert dead_fraction_in_training(SimpleNamespace()) is None  # relu without resampling keeps no counter


def test_every_cell_records_its_training_dead_fraction(trained):
    for settings, _, _, stats in trained.values():
        if settings["architecture"] == "relu":
            assert stats["dead_fraction_train"] is None
        else:
            assert 0.0 <= stats["dead_fraction_train"] <= 1.0
