"""Per-cell scores on hand-made codes with known answers, the permutation null, and the score file's downstream
quality with hand-made SAEs whose splice is known (exact and zero)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from featurebirth import layout
from featurebirth.activations import probe_activations, token_rows
from featurebirth.config import scoring_settings
from featurebirth.corpus import read_probes
from featurebirth.downstream import VARIABLES, clean_reference, downstream_quality, sae_reconstruction
from featurebirth.io import write_json
from featurebirth.layout import CONTROL
from featurebirth.models import load_model, load_tokenizer
from featurebirth.probe_baseline import training_masks, word_folds
from featurebirth.sae import dictionary_classes, load_sae, quality, save_sae
from featurebirth.score import (
    auroc_matrix,
    check_heldout_words,
    encode,
    f1_matrix,
    heldout_sae_scores,
    heldout_targets,
    load_seed_sae,
    one_hot,
    permuted_labels,
    probe_scores,
    score_codes,
    score_layer,
    score_step,
)

CPU = torch.device("cpu")
CATEGORIES = ["animals", "colours", "numbers"]
WORDS = {
    "animals": ["dog", "cat", "cow", "fox"],
    "colours": ["red", "blue", "green", "pink"],
    "numbers": ["one", "two", "six", "ten"],
}
SETTINGS = {
    "n_permutations": 50,
    "null_quantile": 0.95,
    "seed": 0,
    "folds": 4,
    "heldout_permutations": 10,
    "probe_l2": 0.1,
}


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


def heldout_scores(activations, codes, labels, words, categories, settings, device) -> xr.Dataset:
    """Both held-out controls of one cell: the linear probe on the activations and the SAE on unseen words."""
    heldout = heldout_targets(labels, words, categories, settings)
    probe = probe_scores(activations, heldout, categories, settings, device)
    return probe.merge(heldout_sae_scores(codes, heldout, categories, settings))


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
    settings = {"categories": CATEGORIES, "scoring": SETTINGS}
    sets = {
        "template": (probes[None], labels, words),
        "mined": (probes[None], labels, np.where(labels == "numbers", "one", words)),
    }
    heldout = {name: heldout_targets(labels, words, CATEGORIES, SETTINGS) for name, (_, labels, words) in sets.items()}
    scored = score_layer({3: ae}, sets, heldout, 0, held_out, {**settings, "device": "cpu"})
    assert scored["seed"].values.tolist() == [3] and scored["score"].dims == ("seed", "probe_set", "category")
    assert scored["probe_score"].dims == ("probe_set", "category")  # the probe reads no SAE: no seed
    both = scored.sel(seed=3)
    assert both["probe_set"].values.tolist() == ["template", "mined"]
    # the mined set's numbers have one word: not scored (NaN), the other categories score as in the template set
    mined = both.sel(probe_set="mined")
    assert np.isnan(mined["score"].sel(category="numbers")) and np.isnan(mined["heldout_score"].sel(category="numbers"))
    for name in ("score", "null", "auroc", "probe_score", "heldout_score"):
        np.testing.assert_array_equal(
            mined[name].values[:2], both.sel(probe_set="template")[name].values[:2], err_msg=name
        )
    cell = both.sel(probe_set="template")
    assert cell["score"].values.tolist() == [1.0, 1.0, 1.0]
    assert cell["best_feature"].values.tolist() == [0, 1, 2]
    assert cell["auroc"].values.tolist() == [1.0, 1.0, 1.0]
    assert cell["best_direction"].dims == ("category", "hidden")
    np.testing.assert_allclose(cell["best_direction"].values, np.eye(4)[:3], atol=1e-7)
    assert cell["feature_f1"].shape == (6, 3)
    # the best feature's code on every probe item, for the lineage: feature c fires 1 on the items of c
    np.testing.assert_array_equal(cell["best_codes"].values, one_hot(labels, CATEGORIES).T)
    assert both["reconstruction_mse"].dims == ()
    # one axis per category: the probe and the SAE feature chosen on other words both find every held-out word
    for name in ("probe_score", "probe_auroc", "heldout_score"):
        assert cell[name].values.tolist() == [1.0, 1.0, 1.0], name
    assert (cell["probe_null"] < 0.8).all() and (cell["heldout_null"] < 0.8).all()
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
        trainer = {"dict_class": "AutoEncoderTopK", "k": 16, "seed": 0}
        save_sae(
            ae, trainer, {}, {}, layout.cell_name("tiny-a", 6, layer), Path(layout.sae_dir(results, "tiny-a", 6, layer))
        )
    write_json({"layers": [0, 1]}, manifest)
    settings = {**scoring_settings(micro), "device": "cpu"}
    settings["evaluation"] = {**settings["evaluation"], "ce_floor": 1e-3}
    out = Path(layout.score_path(results, "tiny-a", 6))
    score_step(
        checkpoint,
        corpus("probes"),
        corpus("eval_tokens"),
        [manifest],
        [0, 1],
        settings,
        out,
        model="tiny-a",
        step=6,
        mined=None,
    )
    return xr.load_dataset(out, engine="h5netcdf"), settings, results


def test_score_file_carries_the_downstream_quality_of_every_layer(micro, checkpoint, corpus, spliced_scores):
    written, settings, results = spliced_scores
    for name in VARIABLES:
        assert written[name].dims == ("layer", "seed"), name
    # the exact SAE changes nothing; the zero SAE is zero ablation
    exact, zero = written.sel(layer=0, seed=0), written.sel(layer=1, seed=0)
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
    assert written["ce_loss_clean"].values.ravel().tolist() == [pytest.approx(clean, rel=1e-6)] * 2
    assert written.attrs["eval_predictions"] == 8 * 30 and written.attrs["ce_floor"] == 1e-3
    # each layer's numbers are downstream_quality with that layer's SAE, as loaded from its folder
    reference = clean_reference(model, ids, 1, settings["forward_batch_size"])
    for layer in (0, 1):
        ae = load_sae(layout.sae_dir(results, "tiny-a", 6, layer))
        expected = downstream_quality(model, reference, layer, sae_reconstruction(ae), 1e-3)
        for name, value in expected.items():
            assert float(written[name].sel(layer=layer, seed=0)) == pytest.approx(value, rel=1e-9), (layer, name)


def test_a_folder_holding_another_seeds_sae_is_refused(spliced_scores, tmp_path):
    _, settings, results = spliced_scores
    folder = layout.sae_dir(results, "tiny-a", 6, 0)
    with pytest.raises(ValueError, match=r"trained with seed 0, not seed 3 as its folder says: delete the manifest"):
        load_seed_sae(folder, 3, CPU)
    assert load_seed_sae(folder, 0, CPU).dict_size == 32


def test_score_file_carries_the_held_out_controls_of_every_layer(checkpoint, corpus, spliced_scores):
    written, settings, results = spliced_scores
    items = read_probes(corpus("probes"))
    labels, words = np.array([i.category for i in items]), np.array([i.word for i in items])
    probes = probe_activations(load_model(checkpoint, CPU), load_tokenizer(checkpoint), items, 16)
    for layer in (0, 1):
        codes, _ = encode(load_sae(layout.sae_dir(results, "tiny-a", 6, layer)), probes[layer])
        expected = heldout_scores(probes[layer], codes, labels, words, settings["categories"], settings["scoring"], CPU)
        for name, values in expected.data_vars.items():
            seed = {"seed": 0} if name.startswith("heldout") else {}
            assert written[name].dims == ("layer", *seed, "probe_set", "category"), name
            got = written[name].sel(layer=layer, probe_set="template", **seed).values
            np.testing.assert_allclose(got, values.values, rtol=1e-9, err_msg=name)


# word-grouped held-out controls: planted probe sets with a known answer
N_WORDS, CONTEXTS, D_MODEL = 8, 4, 24


def planted_probes(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Six categories of 8 words and 20 control words, 4 contexts each: every word its own random vector, every
    category's words share one planted direction (linearly separable), contexts add small noise.
    (activations, labels, words, categories)."""
    rng = np.random.default_rng(seed)
    categories = [f"c{i}" for i in range(6)]
    vocabulary = [(c, f"{c}w{j}") for c in categories for j in range(N_WORDS)]
    vocabulary += [(CONTROL, f"filler{j}") for j in range(20)]
    directions = dict(zip(categories, 4 * rng.standard_normal((6, D_MODEL))))
    rows, labels, words = [], [], []
    for category, word in vocabulary:
        vector = rng.standard_normal(D_MODEL) + directions.get(category, 0)
        rows += [vector + 0.2 * rng.standard_normal(D_MODEL) for _ in range(CONTEXTS)]
        labels += [category] * CONTEXTS
        words += [word] * CONTEXTS
    return np.array(rows, dtype=np.float32), np.array(labels), np.array(words), categories


def test_word_folds_never_put_a_word_on_both_sides():
    _, labels, words, categories = planted_probes()
    folds = word_folds(labels, words, 4, seed=0)
    for fold, train in enumerate(training_masks(folds, 4)):
        assert not set(words[train]) & set(words[~train]), fold
        assert (folds[~train] == fold).all() and (folds[train] != fold).all()
        # every category's 8 words dealt evenly: 2 held out per fold
        for category in categories:
            assert len(set(words[~train & (labels == category)])) == 2, (fold, category)
    assert len({w: f for w, f in zip(words, folds)}) == len(set(words))  # one fold per word
    np.testing.assert_array_equal(word_folds(labels, words, 4, seed=0), folds)
    assert not np.array_equal(word_folds(labels, words, 4, seed=1), folds)


def test_probe_finds_a_planted_category_on_unseen_words():
    activations, labels, words, categories = planted_probes()
    codes = np.zeros((len(labels), 1))
    cell = heldout_scores(activations, codes, labels, words, categories, SETTINGS, CPU)
    assert (cell["probe_score"] >= 0.95).all() and (cell["probe_auroc"] >= 0.99).all()
    assert (cell["probe_null"] <= 0.5).all()
    # a dead SAE predicts nothing: its held-out F1 is 0
    assert cell["heldout_score"].values.tolist() == [0.0] * 6


def word_shuffled(labels: np.ndarray, words: np.ndarray, seed: int) -> np.ndarray:
    """Labels shuffled among every word, controls included (each word's contexts keep one label)."""
    vocabulary, first = np.unique(words, return_index=True)
    shuffled = dict(zip(vocabulary, np.random.default_rng(seed).permutation(labels[first])))
    return np.array([shuffled[w] for w in words])


def test_probe_on_shuffled_labels_stays_near_chance():
    activations, labels, words, categories = planted_probes()
    zero = np.zeros((len(labels), 1))
    # chance: AUROC 0.5 (on average: one shuffle's categories scatter around it); F1 of a coin at a base rate of
    # 32 / 320, 0.17 (predicting half) or less
    shuffles = [
        heldout_scores(activations, zero, word_shuffled(labels, words, seed), words, categories, SETTINGS, CPU)
        for seed in range(4)
    ]
    auroc = np.array([cell["probe_auroc"].values for cell in shuffles])
    assert abs(auroc.mean() - 0.5) < 0.1 and (auroc < 0.8).all()
    assert all((cell["probe_score"] < 0.35).all() for cell in shuffles)
    # random activations with the true labels: chance as well
    noise = np.random.default_rng(1).standard_normal(activations.shape).astype(np.float32)
    cell = heldout_scores(noise, zero, labels, words, categories, SETTINGS, CPU)
    assert abs(float(cell["probe_auroc"].mean()) - 0.5) < 0.1 and (cell["probe_score"] < 0.35).all()
    # shuffled among the category words only (the null's permutation), the probe still tells category words from
    # controls, above chance; its null accounts for that: it is nowhere near represented
    shuffled = permuted_labels(labels, words, np.random.default_rng(5))
    cell = heldout_scores(activations, zero, shuffled, words, categories, SETTINGS, CPU)
    assert (cell["probe_score"] < 0.5).all() and (cell["probe_score"] - cell["probe_null"] < 0.2).all()


def test_held_out_sae_keeps_category_features_and_drops_word_features():
    _, labels, words, categories = planted_probes()
    category_codes = one_hot(labels, categories)  # feature c fires on every word of category c
    vocabulary = sorted(set(words[labels != CONTROL]))
    word_codes = (words[:, None] == np.array(vocabulary)[None, :]).astype(float)  # one feature per word
    codes = np.concatenate([category_codes, word_codes], axis=1)
    activations = np.zeros((len(labels), 2), dtype=np.float32)
    cell = heldout_scores(activations, codes, labels, words, categories, SETTINGS, CPU)
    assert cell["heldout_score"].values.tolist() == [1.0] * 6
    # word features only: in sample the best scores 2 (1/8) / (1 + 1/8) = 0.22, on held-out words it never fires
    cell = heldout_scores(activations, word_codes, labels, words, categories, SETTINGS, CPU)
    assert score_codes(word_codes, labels, words, categories, SETTINGS)["score"].values == pytest.approx([2 / 9] * 6)
    assert cell["heldout_score"].values.tolist() == [0.0] * 6


def test_held_out_scoring_needs_two_words_per_category():
    labels, words = probe_labels()
    check_heldout_words(labels, words, CATEGORIES)
    lonely = np.where(labels == "numbers", "one", words)
    with pytest.raises(ValueError, match=r"at least two probe words per category; these have fewer: \{'numbers': 1\}"):
        check_heldout_words(labels, lonely, CATEGORIES)
