"""Bad configs stop with a message naming the key; good ones get their defaults; each stage sees only its settings."""

import copy
from pathlib import Path

import pytest
import yaml

from featurebirth import sae
from featurebirth.config import (
    SAE_ARCHITECTURES,
    SAE_JOB_SHAPE,
    ConfigError,
    categories,
    cube_settings,
    grid,
    layer_groups,
    model_layers,
    model_spec,
    resolve_sae,
    sae_settings,
    sae_training_settings,
    scoring_settings,
    validate_config,
)

TESTS = Path(__file__).resolve().parent
MICRO_LEXICON = str(TESTS / "micro_lexicon.yaml")
MISSING_LEXICON = str(TESTS / "no_such_lexicon.yaml")


def trained_recipe(recipe: dict) -> dict:
    """What an SAE job's settings hold of a recipe: no job shape, and the first seed in place of the seed list (a
    job's own seeds come from its name)."""
    kept = {key: value for key, value in recipe.items() if key not in (*SAE_JOB_SHAPE, "seeds")}
    return kept | {"seed": recipe["seeds"][0]}


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
    "no position left to count": (lambda c: c["activations"].update(exclude_first=31), "activations.exclude_first", "31 leaves no counted position in contexts of 32"),
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
    # the micro budget, 7680 tokens in batches of 64, is 120 optimizer updates
    "warmup not below the updates": (lambda c: c["sae"].update(warmup_steps=120), "sae.warmup_steps", ("120 must be smaller than the 120 updates", "(sae.tokens)")),
    "threshold start not below the updates": (lambda c: c["sae"].update(architecture="batchtopk", threshold_start_step=500), "sae.threshold_start_step", "500 must be smaller than the 120 updates"),
    "sparsity warm-up not below the updates": (lambda c: c["sae"].update(architecture="relu", sparsity_warmup_steps=120), "sae.sparsity_warmup_steps", "the 120 updates"),
    "budget below two batches": (lambda c: c["sae"].update(tokens=127), "sae.tokens", "a budget of 127 tokens is less than two batches of 64"),
    "batches grown past half the budget": (lambda c: c["sae"].update(batch_size=4096), "sae.tokens", "7680 tokens is less than two batches of 4096"),
    "sae.steps (replaced by sae.tokens)": (lambda c: c["sae"].update(steps=120), "sae", "'steps' was unexpected"),
    "activations.max_tokens (removed)": (lambda c: c["activations"].update(max_tokens=1280), "activations", "'max_tokens' was unexpected"),
    "max_epochs below one": (lambda c: c["sae"].update(max_epochs=0.5), "sae.max_epochs", "minimum"),
    "negative exclude_first": (lambda c: c["activations"].update(exclude_first=-1), "activations.exclude_first", "minimum"),
    # the generated SAE split holds n_sae_sequences x (seq_len - exclude_first) = 40 x 31 = 1240 distinct tokens:
    # 7 passes (micro's max_epochs) are 8680 tokens, one pass 1240
    "budget above max_epochs passes": (lambda c: c["sae"].update(tokens=8681), "sae.tokens", ("8681 is more than sae.max_epochs = 7 pass(es) over the 1240 training tokens",)),
    "one pass allowed over less text than the budget": (lambda c: c["sae"].update(max_epochs=1), "sae.tokens", ("7680 is more than sae.max_epochs = 1 pass(es)", "the 1240 training tokens")),
    "first positions kept count as training text": (lambda c: (c["sae"].update(tokens=8961), c["activations"].update(exclude_first=0)), "sae.tokens", ("8961 is more than", "over the 1280 training tokens")),
    "SAE split shrunk below the budget": (lambda c: c["corpus"].update(n_sae_sequences=20), "sae.tokens", ("7680 is more than sae.max_epochs = 7", "the 620 training tokens")),
    "model budget above max_epochs passes": (lambda c: c["models"]["tiny-b"].update(sae={"tokens": 8704}), "models.tiny-b.sae.tokens", ("8704 is more than models.tiny-b.sae.max_epochs = 7", "the 1240 training tokens")),
    "model max_epochs too few for the budget": (lambda c: c["models"]["tiny-b"].update(sae={"max_epochs": 2}), "models.tiny-b.sae.tokens", ("7680 is more than models.tiny-b.sae.max_epochs = 2", "the 1240 training tokens")),
    "model budget below two batches": (lambda c: c["models"]["tiny-b"].update(sae={"tokens": 100}), "models.tiny-b.sae.tokens", "a budget of 100 tokens is less than two batches of 64"),
    "given warm-up not below a model's smaller budget": (lambda c: (c["sae"].update(warmup_steps=100), c["models"]["tiny-b"].update(sae={"tokens": 3840})), "models.tiny-b.sae.warmup_steps", "100 must be smaller than the 60 updates of the budget (models.tiny-b.sae.tokens)"),
    "sae.seed (replaced by sae.seeds)": (lambda c: c["sae"].update(seed=3), "sae.seed", "sae.seeds: [3]"),
    "no SAE seed": (lambda c: c["sae"].update(seeds=[]), "sae.seeds", "should be non-empty"),
    "a seed twice": (lambda c: c["sae"].update(seeds=[0, 1, 0]), "sae.seeds", "non-unique elements"),
    "negative seed": (lambda c: c["sae"].update(seeds=[-1]), "sae.seeds.0", "minimum"),
    "seeds per model": (lambda c: c["models"]["tiny-b"].update(sae={"seeds": [1]}), "models.tiny-b.sae.seeds", "for the whole study"),
    "lineage figure of an unknown model": (lambda c: c.update(figures={"lineage_model": "tiny-z"}), "figures.lineage_model", "'tiny-z' is not a configured model"),
    "lineage figure of an unknown category": (lambda c: c.update(figures={"lineage_categories": ["animals", "fish"]}), "figures.lineage_categories", "['fish'] are not categories"),
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
    "mined probes drawn without real text": (lambda c: c.update(figures={"probe_set": "mined"}), "figures.probe_set", ("'mined' is not scored with corpus.source generated", "['template']")),
    "mined context without a word before it": (lambda c: c["probes"].update(mined_context=1), "probes.mined_context", "minimum"),
    "null quantile above one": (lambda c: c.update(scoring={"null_quantile": 1.5}), "scoring.null_quantile", "maximum"),
    "one held-out fold": (lambda c: c.update(scoring={"folds": 1}), "scoring.folds", "minimum"),
    "probe without penalty": (lambda c: c.update(scoring={"probe_l2": 0}), "scoring.probe_l2", "less than or equal to"),
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


SCALED = ("warmup_steps", "sparsity_warmup_steps", "threshold_start_step", "dead_feature_tokens")


@pytest.mark.parametrize(
    ("tokens", "updates", "warmup", "threshold", "dead"),
    [
        # 100k tokens / 256 = 390 updates; 390 // 8 = 48, 390 // 4 = 97; a fifth of the budget is 20,000 tokens
        (100_000, 390, 48, 97, 20_000),
        # 500M / 256 = 1,953,125 updates; // 8 = 244,140, // 4 = 488,281; a fifth (100M) is capped at 10M
        (500_000_000, 1_953_125, 244_140, 488_281, 10_000_000),
    ],
)
def test_resolve_sae_scales_null_settings_with_the_budget(micro, tokens, updates, warmup, threshold, dead):
    recipe = {**micro["sae"], "tokens": tokens, "batch_size": 256}
    assert all(recipe[name] is None for name in SCALED)  # the schema's defaults: scale with the budget
    resolved = resolve_sae(recipe)
    assert resolved["updates"] == updates
    assert (resolved["warmup_steps"], resolved["sparsity_warmup_steps"]) == (warmup, warmup)
    assert (resolved["threshold_start_step"], resolved["dead_feature_tokens"]) == (threshold, dead)
    assert {k: v for k, v in resolved.items() if k not in (*SCALED, "updates")} == {
        k: v for k, v in recipe.items() if k not in SCALED
    }
    assert all(recipe[name] is None for name in SCALED)  # the recipe given is left as it was
    # given values are kept, zero included (it is no null)
    given = {"warmup_steps": 0, "sparsity_warmup_steps": 6, "threshold_start_step": 7, "dead_feature_tokens": 8}
    kept = resolve_sae({**recipe, **given})
    assert {name: kept[name] for name in SCALED} == given and kept["updates"] == updates


def test_sae_settings_resolve_the_budget_per_model(micro_raw):
    # 100k tokens of 256: 390 updates; 100k is within 81 passes over the micro SAE split (81 x 1240 = 100,440)
    def budgets(c):
        c["sae"].update(tokens=100_000, batch_size=256, max_epochs=81, threshold_start_step=50)
        c["models"]["tiny-b"]["sae"] = {"tokens": 25_600, "warmup_steps": 3}  # 100 updates of 256

    config = _variant(micro_raw, budgets)
    a, b = sae_settings(config, "tiny-a"), sae_settings(config, "tiny-b")
    assert (a["updates"], a["warmup_steps"], a["dead_feature_tokens"]) == (390, 48, 20_000)
    assert a["threshold_start_step"] == 50  # given, kept
    # tiny-b: its own budget scales what is null (100 // 8 = 12, 25,600 // 5 = 5120); given values are kept
    assert (b["updates"], b["warmup_steps"], b["sparsity_warmup_steps"], b["dead_feature_tokens"]) == (100, 3, 12, 5120)
    assert b["threshold_start_step"] == 50
    assert sae_training_settings(config, "tiny-b")["sae"] == trained_recipe(b)
    assert config["sae"]["warmup_steps"] is None  # the validated config keeps the null; the recipe fills it


def test_budget_of_exactly_max_epochs_passes_is_accepted(micro_raw):
    # 7 passes over 40 x 31 = 1240 distinct tokens: 8680 (135 updates of 64)
    config = _variant(micro_raw, lambda c: c["sae"].update(tokens=8680))
    assert sae_settings(config, "tiny-a")["updates"] == 135
    # exclude_first=0 keeps every position: 40 x 32 = 1280, 7 passes = 8960
    config = _variant(micro_raw, lambda c: (c["sae"].update(tokens=8960), c["activations"].update(exclude_first=0)))
    assert sae_training_settings(config, "tiny-a")["tokens"] == {"seq_len": 32, "exclude_first": 0}


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
    assert sorted(settings) == ["buffer", "device", "forward_batch_size", "gpu_dtype", "sae", "tokens"]
    assert settings["sae"] == trained_recipe(sae_settings(micro, "tiny-a"))
    assert settings["buffer"] == {"mode": "stream", "buffer_tokens": 262144}
    # micro: 7680 tokens in batches of 64 = 120 updates; warm-ups 120 // 8, threshold 120 // 4, dead window 7680 // 5
    assert {key: settings["sae"][key] for key in ("tokens", "max_epochs", "batch_size", "updates")} == {
        "tokens": 7680,
        "max_epochs": 7,
        "batch_size": 64,
        "updates": 120,
    }
    assert (settings["sae"]["warmup_steps"], settings["sae"]["sparsity_warmup_steps"]) == (15, 15)
    assert (settings["sae"]["threshold_start_step"], settings["sae"]["dead_feature_tokens"]) == (30, 1536)
    assert settings["tokens"] == {"seq_len": 32, "exclude_first": 1}
    assert settings["forward_batch_size"] == 16
    assert "layers_per_job" not in settings["sae"]
    assert not {"evaluation", "scoring", "categories"} & set(settings)
    assert sae_training_settings(_variant(micro_raw, _other_stages), "tiny-a") == settings
    assert sae_training_settings(_variant(micro_raw, _presentation), "tiny-a") == settings
    # what an SAE is trained on does change them: the budget, and the positions left out
    assert sae_training_settings(_variant(micro_raw, lambda c: c["sae"].update(tokens=3840)), "tiny-a") != settings
    exclude_none = _variant(
        micro_raw, lambda c: (c["sae"].update(tokens=1280), c["activations"].update(exclude_first=0))
    )
    assert sae_training_settings(exclude_none, "tiny-a")["tokens"] == {"seq_len": 32, "exclude_first": 0}


def test_scoring_settings(micro):
    settings = scoring_settings(micro)
    # the evaluation section (micro: 256 tokens) with how contexts are cut and which positions count
    assert settings["evaluation"] == {**micro["evaluation"], "seq_len": 32, "exclude_first": 1}
    assert settings["evaluation"]["tokens"] == 256
    assert settings["scoring"] == {
        "n_permutations": 50,
        "null_quantile": 0.95,
        "seed": 0,
        "folds": 4,
        "heldout_permutations": 10,
        "probe_l2": 0.1,
    }
    assert settings["categories"] == ["animals", "colours", "numbers"]
    assert (settings["device"], settings["gpu_dtype"], settings["forward_batch_size"]) == ("auto", "float16", 16)
    assert "sae" not in settings


def test_cube_settings_leave_out_presentation(micro, micro_raw):
    settings = cube_settings(micro)
    assert settings["models"] == ["tiny-a", "tiny-b"]
    assert settings["steps"] == [0, 6]
    assert settings["categories"] == ["animals", "colours", "numbers"]
    assert settings["planted_frequency"] == {"animals": 4, "colours": 2, "numbers": 1}
    assert settings["probe_sets"] == ["template"]  # the generated corpus: template probes only
    assert not {"analysis", "figures", "results"} & set(settings["provenance"])
    provenance = settings["provenance"]
    assert provenance["corpus"] == {key: value for key, value in micro["corpus"].items() if key != "lexicon"}
    assert provenance["sae"]["tiny-a"] == trained_recipe(sae_settings(micro, "tiny-a"))
    assert provenance["buffer"] == {"mode": "stream", "buffer_tokens": 262144}
    assert provenance["sae"]["tiny-a"]["updates"] == 120 and provenance["sae"]["tiny-a"]["warmup_steps"] == 15
    assert provenance["tokens"] == {"seq_len": 32, "exclude_first": 1}
    assert provenance["evaluation"] == {**micro["evaluation"], "seq_len": 32, "exclude_first": 1}
    assert provenance["scoring"] == micro["scoring"] and provenance["evaluation"]["tokens"] == 256
    assert not {"device", "gpu_dtype", "forward_batch_size"} & set(provenance)
    assert cube_settings(_variant(micro_raw, _presentation)) == settings

    def reshape_jobs(c):
        c["sae"]["layers_per_job"] = 1
        c["sae"]["save_every_minutes"] = 1
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
        c["sae"]["tokens"] = 3840  # 60 updates of 64

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
