"""Bad configs stop with a message naming the key; good ones get their defaults; each stage sees only its settings."""

import copy
from pathlib import Path

import pytest
import yaml

from featurebirth import sae
from featurebirth.config import (
    SAE_ARCHITECTURES,
    ConfigError,
    categories,
    cube_settings,
    grid,
    layer_groups,
    model_layers,
    model_spec,
    sae_settings,
    sae_training_settings,
    scoring_settings,
    validate_config,
)

TESTS = Path(__file__).resolve().parent
MICRO_LEXICON = str(TESTS / "micro_lexicon.yaml")
MISSING_LEXICON = str(TESTS / "no_such_lexicon.yaml")


def test_defaults_are_filled(micro):
    assert micro["sae"]["architecture"] == "topk"
    assert micro["sae"]["layers_per_job"] == "all"
    assert micro["device"] == "auto"
    assert micro["models"]["tiny-a"]["layers"] == "all"
    assert model_layers(micro, "tiny-a") == [0, 1]
    assert model_layers(micro, "tiny-b") == [0, 2]
    assert len(grid(micro)) == 2 * 2 + 2 * 2
    assert "seed" not in micro and "eval_tokens" not in micro["sae"]


def test_lexicon_file_is_read_into_the_corpus(micro, micro_raw):
    lexicon = yaml.safe_load(Path(micro_raw["corpus"]["lexicon"]).read_text())
    for key in ("categories", "neutral_prefixes", "filler_words"):
        assert key not in micro_raw["corpus"]
        assert micro["corpus"][key] == lexicon[key]
    assert categories(micro) == ["animals", "colours", "numbers"]
    assert {c: s["planted_frequency"] for c, s in micro["corpus"]["categories"].items()} == {
        "animals": 4,
        "colours": 2,
        "numbers": 1,
    }
    # the same lexicon written into the config validates to the same config
    inline = validate_config(_inlined(micro_raw))
    from_file = copy.deepcopy(micro)
    from_file["corpus"].pop("lexicon")
    assert inline == from_file


def _inlined(raw: dict) -> dict:
    """`raw` with its lexicon file's content written into the corpus section instead (so rows can edit it)."""
    config = copy.deepcopy(raw)
    config["corpus"].update(yaml.safe_load(Path(config["corpus"].pop("lexicon")).read_text()))
    return config


def _broken(raw, edit):
    config = _inlined(raw)
    edit(config)
    return config


# name: (edit of the micro config with its lexicon inlined, key at fault, fragments of the message)
# fmt: off
BAD_CONFIGS = {
    "unknown model source": (lambda c: c["models"]["tiny-a"].update(source="gguf"), "models.tiny-a.source", "is not one of"),
    "layer outside depth": (lambda c: c["models"]["tiny-a"].update(layers=[0, 5]), "models.tiny-a.layers", "outside the model's depth"),
    "empty step list": (lambda c: c.update(steps=[]), "steps", "should be non-empty"),
    "unsorted steps": (lambda c: c.update(steps=[6, 0]), "steps", "ascending"),
    "duplicate step": (lambda c: c.update(steps=[0, 6, 6]), "steps", "duplicate"),
    "negative step": (lambda c: c.update(steps=[-1, 6]), "steps.0", "minimum"),
    "top-level seed (removed)": (lambda c: c.update(seed=0), "<root>", "'seed' was unexpected"),
    "unknown SAE architecture": (lambda c: c["sae"].update(architecture="gated"), "sae.architecture", "is not one of"),
    "empty category": (lambda c: c["corpus"]["categories"]["animals"].update(words=[]), "corpus.categories.animals.words", "empty"),
    "frequency (renamed planted_frequency)": (lambda c: c["corpus"]["categories"]["animals"].update(frequency=4), "corpus.categories.animals", "'frequency' was unexpected"),
    "k larger than dictionary": (lambda c: c["sae"].update(k=1000), "sae.k", "larger than the dictionary"),
    "warmup not below SAE steps": (lambda c: c["sae"].update(warmup_steps=500), "sae.warmup_steps", "smaller than"),
    "layers_per_job zero": (lambda c: c["sae"].update(layers_per_job=0), "sae.layers_per_job", "0 is not valid"),
    "layers_per_job unknown word": (lambda c: c["sae"].update(layers_per_job="some"), "sae.layers_per_job", "'some' is not valid"),
    "model SAE override of the wrong type": (lambda c: c["models"]["tiny-b"].update(sae={"k": "four"}), "models.tiny-b.sae.k", "'four' is not of type 'integer'"),
    "model SAE override out of range": (lambda c: c["models"]["tiny-b"].update(sae={"layers_per_job": 0}), "models.tiny-b.sae.layers_per_job", "0 is not valid"),
    "model SAE override unknown": (lambda c: c["models"]["tiny-b"].update(sae={"kk": 4}), "models.tiny-b.sae", "unknown SAE setting(s) ['kk']"),
    "model k larger than its dictionary": (lambda c: c["models"]["tiny-b"].update(sae={"k": 97}), "models.tiny-b.sae.k", ("k=97", "(96 features)")),
    "word in two categories": (lambda c: c["corpus"]["categories"]["colours"]["words"].append("dog"), "corpus.categories.colours.words", "also in category 'animals'"),
    "category word in a context": (lambda c: c["corpus"]["categories"]["colours"]["after"].append("like a cat"), "corpus.categories.colours.after", "category word(s) ['cat']"),
    "lexicon file missing": (lambda c: c["corpus"].update(lexicon=MISSING_LEXICON), "corpus.lexicon", (f"lexicon file '{MISSING_LEXICON}' not found",)),
    "lexicon keys also in the config": (lambda c: c["corpus"].update(lexicon=MICRO_LEXICON), "corpus.categories", f"given both in the config and in the lexicon file '{MICRO_LEXICON}'"),
    "toy model without size": (lambda c: c["models"]["tiny-a"].pop("d_model"), "models.tiny-a", "needs ['d_model']"),
    "heads do not divide d_model": (lambda c: c["models"]["tiny-a"].update(n_heads=3), "models.tiny-a.n_heads", "not divisible"),
    "misspelled key": (lambda c: c["sae"].update(expanson=4), "sae", "Additional properties"),
    "sae.eval_tokens (moved to evaluation.tokens)": (lambda c: c["sae"].update(eval_tokens=256), "sae", "'eval_tokens' was unexpected"),
    "evaluation tokens beyond the eval split": (lambda c: c["evaluation"].update(tokens=257), "evaluation.tokens", ("257 is more than", "= 256")),
    "eval split shrunk below evaluation tokens": (lambda c: c["corpus"].update(n_eval_sequences=4), "evaluation.tokens", ("256 is more than", "= 128")),
    "dip threshold not below tau": (lambda c: c.update(analysis={"tau": 0.7, "tau_low": 0.7}), "analysis.tau_low", "must be below analysis.tau"),
    "figure step not configured": (lambda c: c.update(figures={"steps": [3]}), "figures.steps", "[3] are not among"),
    "null quantile above one": (lambda c: c.update(scoring={"null_quantile": 1.5}), "scoring.null_quantile", "maximum"),
}
# fmt: on


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_names_the_key(micro_raw, name):
    edit, key, fragments = BAD_CONFIGS[name]
    with pytest.raises(ConfigError) as caught:
        validate_config(_broken(micro_raw, edit))
    assert caught.value.key == key
    for fragment in (fragments,) if isinstance(fragments, str) else fragments:
        assert fragment in str(caught.value)
    assert f"config key '{key}'" in str(caught.value)


@pytest.mark.parametrize("lexicon_key", ["categories", "neutral_prefixes", "filler_words"])
def test_lexicon_key_also_in_the_config_names_the_key(micro_raw, lexicon_key):
    raw = copy.deepcopy(micro_raw)
    raw["corpus"][lexicon_key] = _inlined(micro_raw)["corpus"][lexicon_key]
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    assert caught.value.key == f"corpus.{lexicon_key}"
    assert f"given both in the config and in the lexicon file '{micro_raw['corpus']['lexicon']}'" in str(caught.value)


def test_unknown_key_in_the_lexicon_file_names_the_lexicon(micro_raw, tmp_path):
    lexicon = yaml.safe_load(Path(micro_raw["corpus"]["lexicon"]).read_text())
    lexicon["catgories"] = lexicon.pop("categories")
    path = tmp_path / "lexicon.yaml"
    path.write_text(yaml.safe_dump(lexicon))
    raw = copy.deepcopy(micro_raw)
    raw["corpus"]["lexicon"] = str(path)
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    assert caught.value.key == "corpus.lexicon"
    assert f"lexicon file '{path}' has unknown key(s) ['catgories']" in str(caught.value)


def test_model_override_of_sae_settings(micro_raw):
    config = validate_config(_broken(micro_raw, lambda c: c["models"]["tiny-b"].update(sae={"k": 6})))
    assert sae_settings(config, "tiny-b")["k"] == 6
    assert sae_settings(config, "tiny-a")["k"] == 4
    assert sae_training_settings(config, "tiny-b")["sae"]["k"] == 6
    assert sae_training_settings(config, "tiny-a")["sae"]["k"] == 4


def _variant(micro_raw, edit) -> dict:
    """The micro config (lexicon from its file) validated after `edit`."""
    config = copy.deepcopy(micro_raw)
    edit(config)
    return validate_config(config)


# edits that shape jobs or belong to other stages: none may change what an SAE job or the cube is built from
def _other_stages(c):
    c["sae"]["layers_per_job"] = 1
    c["evaluation"] = {"tokens": 128}
    c["scoring"] = {"n_permutations": 7, "null_quantile": 0.5, "seed": 3}


def _presentation(c):
    c["results"] = "elsewhere"
    c["analysis"] = {"tau": 0.9, "margin": 0.1}
    c["figures"] = {"steps": [6], "dpi": 60}


def test_sae_training_settings_hold_training_only(micro, micro_raw):
    settings = sae_training_settings(micro, "tiny-a")
    assert sorted(settings) == ["device", "forward_batch_size", "gpu_dtype", "sae", "tokens"]
    assert settings["sae"] == {key: value for key, value in micro["sae"].items() if key != "layers_per_job"}
    assert settings["tokens"] == {"max_tokens": 1280, "seq_len": 32}
    assert settings["forward_batch_size"] == 16
    assert "layers_per_job" not in settings["sae"]
    assert not {"evaluation", "scoring", "categories"} & set(settings)
    assert sae_training_settings(_variant(micro_raw, _other_stages), "tiny-a") == settings
    assert sae_training_settings(_variant(micro_raw, _presentation), "tiny-a") == settings


def test_scoring_settings(micro):
    settings = scoring_settings(micro)
    assert settings["evaluation"] == {"tokens": 256, "seq_len": 32}
    assert settings["scoring"] == {"n_permutations": 50, "null_quantile": 0.95, "seed": 0}
    assert settings["categories"] == ["animals", "colours", "numbers"]
    assert (settings["device"], settings["gpu_dtype"], settings["forward_batch_size"]) == ("auto", "float16", 16)
    assert "sae" not in settings


def test_cube_settings_leave_out_presentation(micro, micro_raw):
    settings = cube_settings(micro)
    assert settings["models"] == ["tiny-a", "tiny-b"]
    assert settings["steps"] == [0, 6]
    assert settings["categories"] == ["animals", "colours", "numbers"]
    assert settings["planted_frequency"] == {"animals": 4, "colours": 2, "numbers": 1}
    assert not {"analysis", "figures", "results"} & set(settings["provenance"])
    provenance = settings["provenance"]
    assert provenance["corpus"] == {key: value for key, value in micro["corpus"].items() if key != "lexicon"}
    assert provenance["sae"]["tiny-a"] == {k: v for k, v in micro["sae"].items() if k != "layers_per_job"}
    assert provenance["scoring"] == micro["scoring"] and provenance["evaluation"]["tokens"] == 256
    assert not {"device", "gpu_dtype", "forward_batch_size"} & set(provenance)
    assert cube_settings(_variant(micro_raw, _presentation)) == settings

    def reshape_jobs(c):
        c["sae"]["layers_per_job"] = 1
        c["device"] = "cpu"
        c["models"]["tiny-a"]["resources"] = {"mem_mb": 9000}
        c["activations"]["batch_size"] = 3

    assert cube_settings(_variant(micro_raw, reshape_jobs)) == settings


def test_model_spec_is_what_defines_checkpoints(micro, micro_raw):
    spec = model_spec(micro, "tiny-a")
    assert spec["training"] == micro["toy_training"]
    assert (spec["source"], spec["d_model"], spec["n_layers"], spec["n_heads"]) == ("toy", 16, 2, 2)
    assert not {"layers", "sae", "resources"} & set(spec)

    def study_differently(c):
        c["models"]["tiny-a"].update(layers=[1], sae={"k": 2}, resources={"mem_mb": 100})
        c["sae"]["steps"] = 60

    assert model_spec(_variant(micro_raw, study_differently), "tiny-a") == spec


def test_every_architecture_has_a_trainer():
    assert set(sae.TRAINER_NAMES) == set(SAE_ARCHITECTURES)
    assert set(sae.trainer_classes()) == set(SAE_ARCHITECTURES)


@pytest.mark.parametrize(
    ("layers_per_job", "groups"),
    [
        (2, [[0, 1], [2, 3], [4, 5]]),
        (4, [[0, 1, 2, 3], [4, 5]]),
        (1, [[0], [1], [2], [3], [4], [5]]),
        (6, [[0, 1, 2, 3, 4, 5]]),
        (10, [[0, 1, 2, 3, 4, 5]]),
        ("all", [[0, 1, 2, 3, 4, 5]]),
    ],
)
def test_layer_groups(micro_raw, layers_per_job, groups):
    config = _variant(micro_raw, lambda c: c["sae"].update(layers_per_job=layers_per_job))
    assert layer_groups(config, "tiny-a", [0, 1, 2, 3, 4, 5]) == groups
    assert layer_groups(config, "tiny-a", [3]) == [[3]]


def test_layer_groups_follow_the_model_override(micro_raw):
    config = _variant(micro_raw, lambda c: c["models"]["tiny-b"].update(sae={"layers_per_job": 1}))
    assert layer_groups(config, "tiny-b", [0, 2]) == [[0], [2]]
    assert layer_groups(config, "tiny-a", [0, 1]) == [[0, 1]]
