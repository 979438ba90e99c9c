"""Bad configs stop with a message naming the key; good ones get their defaults."""

import copy

import pytest

from featurebirth.config import ConfigError, grid, model_layers, sae_settings, validate_config


def test_defaults_are_filled(micro):
    assert micro["sae"]["architecture"] == "topk"
    assert micro["device"] == "auto"
    assert micro["models"]["tiny-a"]["layers"] == "all"
    assert model_layers(micro, "tiny-a") == [0, 1]
    assert model_layers(micro, "tiny-b") == [0, 2]
    assert len(grid(micro)) == 2 * 2 + 2 * 2


def _broken(raw, edit):
    config = copy.deepcopy(raw)
    edit(config)
    return config


BAD_CONFIGS = {
    "unknown model source": (lambda c: c["models"]["tiny-a"].update(source="gguf"), "models.tiny-a.source", "unknown model source"),
    "layer outside depth": (lambda c: c["models"]["tiny-a"].update(layers=[0, 5]), "models.tiny-a.layers", "outside the model's depth"),
    "empty step list": (lambda c: c.update(steps=[]), "steps", "should be non-empty"),
    "unsorted steps": (lambda c: c.update(steps=[6, 0]), "steps", "ascending"),
    "duplicate step": (lambda c: c.update(steps=[0, 6, 6]), "steps", "duplicate"),
    "negative step": (lambda c: c.update(steps=[-1, 6]), "steps.0", "minimum"),
    "unknown SAE architecture": (lambda c: c["sae"].update(architecture="gated"), "sae.architecture", "is not one of"),
    "empty category": (lambda c: c["corpus"]["categories"]["animals"].update(words=[]), "corpus.categories.animals.words", "empty"),
    "k larger than dictionary": (lambda c: c["sae"].update(k=1000), "sae.k", "larger than the dictionary"),
    "warmup not below SAE steps": (lambda c: c["sae"].update(warmup_steps=500), "sae.warmup_steps", "smaller than"),
    "word in two categories": (lambda c: c["corpus"]["categories"]["colours"]["words"].append("dog"), "corpus.categories.colours.words", "also in category 'animals'"),
    "category word in a context": (lambda c: c["corpus"]["categories"]["colours"]["after"].append("like a cat"), "corpus.categories.colours.after", "category word(s) ['cat']"),
    "toy model without size": (lambda c: c["models"]["tiny-a"].pop("d_model"), "models.tiny-a", "needs ['d_model']"),
    "heads do not divide d_model": (lambda c: c["models"]["tiny-a"].update(n_heads=3), "models.tiny-a.n_heads", "not divisible"),
    "misspelled key": (lambda c: c["sae"].update(expanson=4), "sae", "Additional properties"),
    "dip threshold not below tau": (lambda c: c.update(analysis={"tau": 0.7, "tau_low": 0.7}), "analysis.tau_low", "must be below analysis.tau"),
    "figure step not configured": (lambda c: c.update(figures={"steps": [3]}), "figures.steps", "[3] are not among"),
    "null quantile above one": (lambda c: c.update(scoring={"null_quantile": 1.5}), "scoring.null_quantile", "maximum"),
    "eval split larger than cache": (lambda c: c["sae"].update(eval_tokens=5000), "sae.eval_tokens", "smaller than activations.max_tokens"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_names_the_key(micro_raw, name):
    edit, key, fragment = BAD_CONFIGS[name]
    with pytest.raises(ConfigError) as caught:
        validate_config(_broken(micro_raw, edit))
    assert caught.value.key == key
    assert fragment in str(caught.value)
    assert f"config key '{key}'" in str(caught.value)


def test_model_override_of_sae_settings(micro_raw):
    raw = _broken(micro_raw, lambda c: c["models"]["tiny-b"].update(sae={"k": 6}))
    config = validate_config(raw)
    assert sae_settings(config, "tiny-b")["k"] == 6
    assert sae_settings(config, "tiny-a")["k"] == 4
