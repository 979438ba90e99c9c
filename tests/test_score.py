"""Per-cell scores on hand-made codes with known answers, the permutation null, and the score file's downstream
quality with hand-made SAEs whose splice is known (exact and zero)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from featurebirth import layout
from featurebirth.activations import token_rows
from featurebirth.config import scoring_settings
from featurebirth.downstream import VARIABLES, clean_reference, downstream_quality, sae_reconstruction
from featurebirth.io import write_json
from featurebirth.layout import CONTROL
from featurebirth.models import load_model
from featurebirth.sae import dictionary_classes, load_sae, quality, save_sae
from featurebirth.score import (
    auroc_matrix,
    encode,
    f1_matrix,
    one_hot,
    permuted_labels,
    score_codes,
    score_layer,
    score_step,
)

CATEGORIES = ["animals", "colours", "numbers"]
WORDS = {
    "animals": ["dog", "cat", "cow", "fox"],
    "colours": ["red", "blue", "green", "pink"],
    "numbers": ["one", "two", "six", "ten"],
}
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


class FixedSAE(torch.nn.Module):
    """A hand-made dictionary: codes relu(x @ encoder), reconstruction codes @ decoder.weight.T."""

    def __init__(self, encoder: np.ndarray, decoder: np.ndarray):
        super().__init__()
        self.encoder = torch.from_numpy(encoder.astype(np.float32))
        self.decoder = torch.nn.Linear(encoder.shape[1], encoder.shape[0], bias=False)
        self.decoder.weight.data = torch.from_numpy(decoder.astype(np.float32))

    def encode(self, x):
        return torch.relu(x @ self.encoder)

    def decode(self, codes):
        return self.decoder(codes)


def category_sae() -> FixedSAE:
    """4-d activations (one axis per category, the last for controls), 6 features: feature j reads axis j
    (features 4 and 5 read -x0 and -x1 and never fire on nonnegative inputs); decoder columns 1.5 e_j and e_0 + e_1."""
    encoder = np.zeros((4, 6))
    encoder[np.arange(4), np.arange(4)] = 1.0
    encoder[0, 4] = encoder[1, 5] = -1.0
    decoder = np.zeros((4, 6))
    decoder[np.arange(4), np.arange(4)] = 1.5
    decoder[:2, 4] = decoder[:2, 5] = 1.0
    return FixedSAE(encoder, decoder)


def test_encode_gives_codes_and_unit_decoder_directions():
    x = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0], [-1.0, 0.0, 0.0, 3.0]], dtype=np.float32)
    codes, directions = encode(category_sae(), x)
    assert codes.tolist() == [[1, 0, 0, 0, 0, 0], [0, 0.5, 0, 0, 0, 0], [0, 0, 0, 3, 1, 0]]
    assert directions.shape == (6, 4)
    np.testing.assert_allclose(directions[:4], np.eye(4), atol=1e-7)
    np.testing.assert_allclose(directions[4], [2**-0.5, 2**-0.5, 0, 0], rtol=1e-6)


def test_score_layer_scores_the_probes_and_measures_quality_on_held_out():
    labels, words = probe_labels()
    axis = {category: i for i, category in enumerate(CATEGORIES)} | {CONTROL: 3}
    probes = np.eye(4, dtype=np.float32)[[axis[label] for label in labels]]
    held_out = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    ae = category_sae()
    cell = score_layer(ae, probes, held_out, labels, words, {"categories": CATEGORIES, "scoring": SETTINGS})
    assert cell["score"].values.tolist() == [1.0, 1.0, 1.0]
    assert cell["best_feature"].values.tolist() == [0, 1, 2]
    assert cell["auroc"].values.tolist() == [1.0, 1.0, 1.0]
    assert cell["best_direction"].dims == ("category", "hidden")
    np.testing.assert_allclose(cell["best_direction"].values, np.eye(4)[:3], atol=1e-7)
    assert cell["feature_f1"].shape == (6, 3)
    # reconstruction 1.5 x: squared error 0.25 per unit, 6 units over 4 tokens; the held-out columns' sums of
    # squared deviations are 1, 1, 0.75 and 0.75; 6 codes fire; features 4 and 5 never do
    assert float(cell["reconstruction_mse"]) == pytest.approx(1.5 / 4)
    assert float(cell["variance_explained"]) == pytest.approx(1 - 1.5 / 3.5)
    assert float(cell["l0"]) == pytest.approx(6 / 4)
    assert float(cell["dead_fraction"]) == pytest.approx(2 / 6)
    for name, value in quality(ae, held_out).items():
        assert float(cell[name]) == pytest.approx(value), name


def identity_sae(d_model: int) -> torch.nn.Module:
    """A TopK dictionary that reconstructs exactly: features relu(x_i) and relu(-x_i), decoded with +e_i and -e_i."""
    ae = dictionary_classes()["AutoEncoderTopK"](d_model, 2 * d_model, d_model)
    eye = torch.eye(d_model)
    ae.encoder.weight.data = torch.cat([eye, -eye])
    ae.decoder.weight.data = torch.cat([eye, -eye], dim=1)
    return ae


def zero_sae(d_model: int) -> torch.nn.Module:
    """A TopK dictionary whose reconstruction is zero everywhere."""
    ae = identity_sae(d_model)
    ae.decoder.weight.data.zero_()
    return ae


@pytest.fixture(scope="module")
def spliced_scores(micro, checkpoint, corpus, tmp_path_factory):
    """score_step of tiny-a step 6 with an exact SAE at layer 0 and a zero one at layer 1: (file, settings)."""
    results = tmp_path_factory.mktemp("results")
    manifest = Path(layout.sae_group(results, "tiny-a", 6, layout.layer_group([0, 1])))
    for layer, ae in {0: identity_sae(16), 1: zero_sae(16)}.items():
        trainer = {"dict_class": "AutoEncoderTopK", "k": 16}
        save_sae(
            ae, trainer, {}, {}, layout.cell_name("tiny-a", 6, layer), Path(layout.sae_dir(results, "tiny-a", 6, layer))
        )
    write_json({"layers": [0, 1]}, manifest)
    settings = {**scoring_settings(micro), "device": "cpu"}
    settings["evaluation"] = {**settings["evaluation"], "ce_floor": 1e-3}
    out = Path(layout.score_path(results, "tiny-a", 6))
    score_step(
        checkpoint, corpus("probes"), corpus("eval_tokens"), [manifest], [0, 1], settings, out, model="tiny-a", step=6
    )
    return xr.load_dataset(out, engine="h5netcdf"), settings, results


def test_score_file_carries_the_downstream_quality_of_every_layer(micro, checkpoint, corpus, spliced_scores):
    written, settings, results = spliced_scores
    for name in VARIABLES:
        assert written[name].dims == ("layer",), name
    # the exact SAE changes nothing; the zero SAE is zero ablation
    exact, zero = written.sel(layer=0), written.sel(layer=1)
    assert float(exact["ce_loss_sae"]) == float(exact["ce_loss_clean"])
    assert float(exact["ce_loss_increase"]) == 0.0
    assert float(exact["ce_loss_recovered"]) == 1.0 and float(exact["kl_score"]) == 1.0
    assert float(zero["ce_loss_sae"]) == float(zero["ce_loss_zero"])
    assert float(zero["ce_loss_recovered"]) == 0.0 and float(zero["kl_score"]) == 0.0
    assert float(zero["ce_loss_increase"]) == pytest.approx(float(zero["ce_loss_zero"] - zero["ce_loss_clean"]))
    # one clean loss for every layer: the mean next-token loss of positions 1..30 of the 8 evaluation rows
    model = load_model(checkpoint, torch.device("cpu"))
    ids = token_rows(corpus("eval_tokens"), checkpoint, "eval", micro["evaluation"]["tokens"], 32)
    with torch.no_grad():
        logits = model(ids).logits[:, 1:-1]
    clean = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 2:].reshape(-1)).item()
    assert written["ce_loss_clean"].values.tolist() == [pytest.approx(clean, rel=1e-6)] * 2
    assert written.attrs["eval_predictions"] == 8 * 30 and written.attrs["ce_floor"] == 1e-3
    # each layer's numbers are downstream_quality with that layer's SAE, as loaded from its folder
    reference = clean_reference(model, ids, 1, settings["forward_batch_size"])
    for layer in (0, 1):
        ae = load_sae(layout.sae_dir(results, "tiny-a", 6, layer))
        expected = downstream_quality(model, reference, layer, sae_reconstruction(ae), 1e-3)
        for name, value in expected.items():
            assert float(written[name].sel(layer=layer)) == pytest.approx(value, rel=1e-9), (layer, name)
