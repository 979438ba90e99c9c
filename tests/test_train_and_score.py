"""A checkpoint's SAE jobs (train_layer_group) and its score job (score_step), on the micro checkpoint, on the CPU."""

import copy
import functools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from featurebirth import layout
from featurebirth.activations import layer_activations, probe_activations, token_rows
from featurebirth.config import categories, resolve_sae, sae_training_settings, scoring_settings, validate_config
from featurebirth.corpus import read_probes
from featurebirth.io import read_json
from featurebirth.models import load_model, load_tokenizer, weight_fingerprint
from featurebirth.sae import SAETrainingError, load_sae, quality, train_layer_group
from featurebirth.score import encode, score_codes, score_step
from featurebirth.text import BudgetError

CPU = torch.device("cpu")
LAYERS = [0, 1]


def _settings(micro) -> dict:
    return {**sae_training_settings(micro, "tiny-a"), "device": "cpu"}


def _weights(results: Path, layer: int) -> dict[str, torch.Tensor]:
    return torch.load(Path(layout.sae_dir(results, "tiny-a", 6, layer)) / layout.SAE_WEIGHTS)


def _manifest(results: Path, layers: list[int]) -> Path:
    """Where the SAE job of a layer group of tiny-a step 6 writes its manifest."""
    return Path(layout.sae_group(results, "tiny-a", 6, layout.layer_group(layers)))


def _leftovers(results: Path) -> list[Path]:
    return list(Path(results).rglob(".tmp-*"))


CELLS = {layer: layout.cell_name("tiny-a", 6, layer) for layer in LAYERS}  # the manifest's keys
_train_group = functools.partial(train_layer_group, save_every_minutes=60)  # one SAE job, no state saves


@pytest.fixture(scope="module")
def trained(micro, checkpoint, corpus, tmp_path_factory) -> tuple[Path, dict]:
    """SAEs of both layers of tiny-a step 6, trained by one layer-group job: (results, its manifest)."""
    results = tmp_path_factory.mktemp("results")
    manifest = _train_group(
        checkpoint, corpus("tokens"), _settings(micro), _manifest(results, LAYERS), model="tiny-a", step=6
    )
    return results, manifest


def test_layer_group_writes_every_cell_and_its_manifest_last(micro, trained):
    results, manifest = trained
    manifest_path = Path(layout.sae_group(results, "tiny-a", 6, layout.layer_group(LAYERS)))
    assert read_json(manifest_path) == manifest
    assert manifest["model"] == "tiny-a" and manifest["step"] == 6
    assert manifest["layers"] == LAYERS
    # the budget (7680) is more than the SAE split: the job reads all of it, 40 rows of 32 token ids, and keeps
    # the activations of 31 positions of each row (exclude_first=1), 40 x 31 = 1240 distinct tokens
    assert manifest["tokens"] == 40 * 32 == 1280
    assert manifest["seeds"] == [0] and sorted(manifest["cells"]) == [CELLS[0], CELLS[1]]
    for layer in LAYERS:
        folder = Path(layout.sae_dir(results, "tiny-a", 6, layer))
        assert sorted(p.name for p in folder.iterdir()) == sorted([layout.SAE_WEIGHTS, layout.SAE_CONFIG])
        saved = read_json(folder / layout.SAE_CONFIG)
        assert saved["cell"] == layout.cell_name("tiny-a", 6, layer)
        assert saved["settings"] == _settings(micro)["sae"]
        assert saved["training"] == manifest["cells"][CELLS[layer]]
        # the budget, 7680 = 120 updates of 64, trained over the 1240 distinct tokens (6.2 passes, max_epochs 7)
        assert saved["training"]["tokens_trained"] == 120 * 64 == micro["sae"]["tokens"]
        assert saved["training"]["distinct_tokens"] == 40 * 31 == 1240
        assert saved["trainer"]["layer"] == layer and saved["trainer"]["lm_name"] == "tiny-a"
        assert manifest_path.stat().st_mtime_ns >= (folder / layout.SAE_WEIGHTS).stat().st_mtime_ns
    assert layout.trained_groups(results, "tiny-a", 6) == [(LAYERS, [0])]
    assert not _leftovers(results)


def test_one_group_trains_the_same_saes_as_separate_groups(micro, checkpoint, corpus, trained, tmp_path):
    for layer in LAYERS:
        manifest = _train_group(
            checkpoint, corpus("tokens"), _settings(micro), _manifest(tmp_path, [layer]), model="tiny-a", step=6
        )
        assert manifest["layers"] == [layer] and manifest["tokens"] == 1280
    assert layout.trained_groups(tmp_path, "tiny-a", 6) == [([0], [0]), ([1], [0])]
    for layer in LAYERS:
        together, alone = _weights(trained[0], layer), _weights(tmp_path, layer)
        assert sorted(together) == sorted(alone)
        for name in together:
            assert torch.equal(together[name], alone[name]), (layer, name)
    assert not torch.equal(_weights(tmp_path, 0)["encoder.weight"], _weights(tmp_path, 1)["encoder.weight"])
    assert not _leftovers(tmp_path)


def test_failed_group_writes_no_manifest(micro, checkpoint, corpus, tmp_path):
    settings = _settings(micro)
    settings["sae"] = {**settings["sae"], "architecture": "relu", "lr": 1e4, "l1_penalty": 0.0}
    with pytest.raises(SAETrainingError, match=f"SAE {re.escape(layout.cell_name('tiny-a', 6, 0))}: "):
        _train_group(checkpoint, corpus("tokens"), settings, _manifest(tmp_path, LAYERS), model="tiny-a", step=6)
    assert layout.trained_groups(tmp_path, "tiny-a", 6) == []
    assert not Path(layout.sae_group(tmp_path, "tiny-a", 6, layout.layer_group(LAYERS))).exists()
    assert not _leftovers(tmp_path)


def test_budget_beyond_max_epochs_passes_fails_before_training(micro, micro_raw, checkpoint, corpus, tmp_path):
    """7 passes (max_epochs) over the 40 x 31 = 1240 distinct tokens are 8680: one token more is refused, naming
    both figures, before any SAE is trained, and no manifest is written."""
    settings = _settings(micro)
    settings["sae"] = {**settings["sae"], "tokens": 8681}  # the job's own check (validation refuses it too)
    with pytest.raises(BudgetError) as caught:
        _train_group(checkpoint, corpus("tokens"), settings, _manifest(tmp_path, LAYERS), model="tiny-a", step=6)
    message = str(caught.value)
    for fragment in ("sae.tokens = 8681", "sae.max_epochs = 7", "the 1240 training tokens", str(corpus("tokens"))):
        assert fragment in message, message
    assert layout.trained_groups(tmp_path, "tiny-a", 6) == []
    assert not list(tmp_path.rglob(layout.SAE_WEIGHTS)) and not _leftovers(tmp_path)
    # with exclude_first=0 the job keeps 40 x 32 = 1280 distinct tokens: 8681 is 6.8 passes, within 7
    raw = copy.deepcopy(micro_raw)
    raw["sae"]["tokens"] = 8681
    raw["activations"]["exclude_first"] = 0
    settings = _settings(validate_config(raw))
    manifest = _train_group(checkpoint, corpus("tokens"), settings, _manifest(tmp_path, LAYERS), model="tiny-a", step=6)
    for layer in LAYERS:
        assert manifest["cells"][CELLS[layer]]["distinct_tokens"] == 1280
        assert manifest["cells"][CELLS[layer]]["tokens_trained"] == 8681 // 64 * 64 == 135 * 64


def _score(checkpoint: Path, corpus, results: Path, settings: dict, out: Path) -> xr.Dataset:
    """score_step on both layers of tiny-a step 6, from the group trained in `results`."""
    manifests = [_manifest(results, LAYERS)]
    return score_step(
        checkpoint,
        corpus("probes"),
        corpus("eval_tokens"),
        manifests,
        LAYERS,
        settings,
        out,
        model="tiny-a",
        step=6,
        mined=None,
    )


@pytest.fixture(scope="module")
def scored(micro, checkpoint, corpus, trained) -> tuple[xr.Dataset, xr.Dataset, dict]:
    """score_step over both layers: (what it returned, the file it wrote, its settings)."""
    results = trained[0]
    settings = {**scoring_settings(micro), "device": "cpu"}
    out = Path(layout.score_path(results, "tiny-a", 6))
    returned = _score(checkpoint, corpus, results, settings, out)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary leftover
    return returned, xr.load_dataset(out, engine="h5netcdf"), settings


def test_probe_categories_missing_from_the_config_fail_and_are_listed_plainly(
    micro, checkpoint, corpus, trained, tmp_path
):
    settings = {**scoring_settings(micro), "device": "cpu", "categories": ["animals", "colours"]}
    out = Path(layout.score_path(tmp_path, "tiny-a", 6))
    with pytest.raises(ValueError) as caught:
        _score(checkpoint, corpus, trained[0], settings, out)
    assert not out.exists()
    assert str(caught.value) == (
        f"probe file {corpus('probes')} holds categories ['numbers'] that the config does not list"
    )


def test_score_file_has_a_layer_dimension(micro, scored):
    returned, written, _ = scored
    assert written["score"].dims == ("layer", "seed", "probe_set", "category")
    assert written["probe_score"].dims == ("layer", "probe_set", "category") and written["seed"].values.tolist() == [0]
    assert written["probe_set"].values.tolist() == ["template"]  # the generated corpus: templates only
    assert written["probe_words"].values.tolist() == [[3, 3, 3]] and written["probe_items"].values.tolist() == [
        [6, 6, 6]
    ]
    assert written["layer"].values.tolist() == LAYERS
    assert written["category"].values.tolist() == categories(micro) == ["animals", "colours", "numbers"]
    assert written["feature_f1"].dims == ("layer", "seed", "probe_set", "feature", "category")
    assert written["feature_f1"].shape == (2, 1, 1, 64, 3)
    assert written["best_direction"].dims == ("layer", "seed", "probe_set", "category", "hidden")
    assert written["best_direction"].shape == (2, 1, 1, 3, 16)
    assert written["best_codes"].shape == (2, 1, 1, 3, 34)  # every probe item: 9 words x 2 templates + 16 controls
    for name in ("variance_explained", "l0", "dead_fraction", "reconstruction_mse"):
        assert written[name].dims == ("layer", "seed"), name
    for name in returned.data_vars:
        np.testing.assert_array_equal(written[name].values, returned[name].values, err_msg=name)


def test_score_file_quality_is_the_sae_quality_on_held_out_text(micro, checkpoint, corpus, trained, scored):
    _, written, settings = scored
    model = load_model(checkpoint, CPU)
    ids = token_rows(corpus("eval_tokens"), checkpoint, "eval", micro["evaluation"]["tokens"], 32)
    held_out = layer_activations(
        model, ids, LAYERS, settings["forward_batch_size"], settings["evaluation"]["exclude_first"]
    )
    # 256 evaluation tokens = 8 rows of 32; the first position of each is left out: 8 x 31 = 248 held out
    assert held_out[0].shape == (8 * 31, 16) == (248, 16)
    for layer in LAYERS:
        expected = quality(load_sae(layout.sae_dir(trained[0], "tiny-a", 6, layer)), held_out[layer].float())
        for name, value in expected.items():
            got = float(written[name].sel(layer=layer, seed=0))
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12), (layer, name)
        assert expected["variance_explained"] > 0.7


def test_score_file_scores_are_the_sae_codes_scored(checkpoint, corpus, trained, scored):
    _, written, settings = scored
    items = read_probes(corpus("probes"))
    labels, words = np.array([i.category for i in items]), np.array([i.word for i in items])
    model = load_model(checkpoint, CPU)
    probes = probe_activations(model, load_tokenizer(checkpoint), items, settings["forward_batch_size"])
    for layer in LAYERS:
        codes, directions = encode(load_sae(layout.sae_dir(trained[0], "tiny-a", 6, layer)), probes[layer])
        expected = score_codes(codes, labels, words, settings["categories"], settings["scoring"])
        cell = written.sel(layer=layer, seed=0, probe_set="template")
        for name in ("score", "null", "best_feature", "auroc", "precision", "recall", "feature_f1"):
            np.testing.assert_allclose(cell[name].values, expected[name].values, rtol=1e-6, err_msg=name)
        best = cell["best_feature"].values
        np.testing.assert_allclose(cell["score"].values, cell["feature_f1"].values.max(axis=0), rtol=1e-6)
        np.testing.assert_allclose(cell["best_direction"].values, directions[best], rtol=1e-6)
        np.testing.assert_allclose(cell["best_codes"].values, codes[:, best].T, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(cell["best_direction"].values, axis=1), 1.0, rtol=1e-5)
        assert ((cell["score"] >= 0) & (cell["score"] <= 1)).all()


def test_score_file_attrs_carry_the_checkpoint(checkpoint, scored):
    _, written, _ = scored
    model = load_model(checkpoint, CPU)
    assert written.attrs["model"] == "tiny-a" and written.attrs["step"] == 6
    assert written.attrs["fingerprint"] == weight_fingerprint(model)
    assert written.attrs["n_params"] == sum(p.numel() for p in model.parameters())
    assert written.attrs["tokens_seen"] == 6 * 8 * 32
    assert written.attrs["eval_tokens"] == 256  # the token ids read (8 rows of 32), first positions included
    assert (written.attrs["d_model"], written.attrs["n_layers"]) == (16, 2)


def test_one_pass_budget_reads_enough_contexts_for_its_kept_positions(micro, checkpoint, corpus, tmp_path):
    """1,000 tokens in one pass need ceil(1000 / 31) = 33 contexts of 32 with the first position left out."""
    settings = _settings(micro)
    scaled = dict.fromkeys(("warmup_steps", "sparsity_warmup_steps", "threshold_start_step", "dead_feature_tokens"))
    settings["sae"] = resolve_sae({**settings["sae"], **scaled, "tokens": 1000, "max_epochs": 1, "batch_size": 50})
    manifest = _train_group(checkpoint, corpus("tokens"), settings, _manifest(tmp_path, [0]), model="tiny-a", step=6)
    assert manifest["tokens"] == 33 * 32
    cell = manifest["cells"][CELLS[0]]
    assert cell["distinct_tokens"] == 33 * 31 and cell["tokens_trained"] == 1000
