"""SAE training with dictionary-learning: quality on real activations, loud failure on NaN."""

import h5py
import numpy as np
import pytest
import torch

from featurebirth.activations import cache_training_activations, layer_dataset
from featurebirth.config import sae_settings
from featurebirth.io import read_json
from featurebirth.sae import SAETrainingError, load_sae, quality, train_sae

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(checkpoint, corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "train.h5"
    cache_training_activations(
        checkpoint, corpus_dir / "tokens.h5", [0, 1], out, model_name="tiny-a", step=6,
        batch_size=16, max_tokens=1280, device=CPU,
    )
    return out


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "relu"])
def test_sae_explains_the_activations(micro, cache, tmp_path, architecture):
    settings = {**sae_settings(micro, "tiny-a"), "architecture": architecture}
    metrics = train_sae(cache, settings, tmp_path, model="tiny-a", layer=1, cell="tiny-a/step6/layer1", device=CPU)
    # A 64-feature dictionary on a 16-dimensional residual stream: even 4 active features
    # reconstruct most of the variance; 0.7 leaves room for seeds, 0.0 would be "no better
    # than the mean", which a broken trainer or a wrong rescaling quickly falls to.
    assert metrics["fraction_variance_explained"] > 0.7, metrics
    if architecture == "topk":
        assert metrics["l0"] == pytest.approx(settings["k"])
    assert 0.0 <= metrics["dead_fraction"] < 1.0
    assert metrics["tokens_trained"] == settings["steps"] * settings["batch_size"]
    config = read_json(tmp_path / "config.json")
    assert config["cell"] == "tiny-a/step6/layer1" and config["trainer"]["dict_size"] == 64
    ae = load_sae(tmp_path)
    with h5py.File(cache) as handle:
        held_out = torch.from_numpy(handle[layer_dataset(1)][-256:].astype(np.float32))
    assert quality(ae, held_out)["fraction_variance_explained"] == pytest.approx(metrics["fraction_variance_explained"], abs=1e-4)


def test_nan_activations_fail_naming_the_cell(micro, cache, tmp_path):
    poisoned = tmp_path / "poisoned.h5"
    with h5py.File(cache) as source, h5py.File(poisoned, "w") as target:
        data = source[layer_dataset(0)][:]
        data[100:400] = np.nan
        target.create_dataset(layer_dataset(0), data=data)
    with pytest.raises(SAETrainingError, match="tiny-a/step6/layer0"):
        train_sae(poisoned, sae_settings(micro, "tiny-a"), tmp_path / "out", model="tiny-a", layer=0, cell="tiny-a/step6/layer0", device=CPU)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_divergence_fails(micro, cache, tmp_path):
    settings = {**sae_settings(micro, "tiny-a"), "architecture": "relu", "lr": 1e4, "l1_penalty": 0.0}
    with pytest.raises(SAETrainingError, match="tiny-a/step6/layer0"):
        train_sae(cache, settings, tmp_path, model="tiny-a", layer=0, cell="tiny-a/step6/layer0", device=CPU)
