"""Validate the workflow configuration: JSON schema with defaults, then cross-field checks.

Every error names the config key at fault, so a bad config stops the workflow before
any job starts and tells the user exactly what to fix.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TOY_REQUIRED = ("d_model", "n_layers", "n_heads")
HUB_REQUIRED = ("repo", "d_model", "n_layers")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"config key '{key}': {problem}")


def load_schema() -> dict:
    """The JSON schema (YAML) that defines every config key and its default."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _schema_enum(*path: str) -> tuple[str, ...]:
    """The allowed values of an enumerated key, read from the schema (their one home)."""
    node = load_schema()
    for part in path:
        node = node["properties"][part]
    return tuple(node["enum"])


SAE_ARCHITECTURES = _schema_enum("sae", "architecture")


def _validator_filling_defaults() -> type:
    """A Draft 2020-12 validator that writes each missing property's default into the instance."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def fill_then_validate(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": fill_then_validate})


def _key(path: Iterator) -> str:
    return ".".join(str(part) for part in path) or "<root>"


LEXICON_KEYS = ("categories", "neutral_prefixes", "filler_words")


def _with_lexicon(config: dict) -> dict:
    """The config with corpus.lexicon's file (categories, neutral prefixes, filler words) read into corpus."""
    corpus = config.get("corpus")
    if not isinstance(corpus, dict) or "lexicon" not in corpus:
        return config
    path = Path(corpus["lexicon"])
    if not path.is_file():
        raise ConfigError(
            "corpus.lexicon", f"lexicon file '{path}' not found (relative paths start at the working directory)"
        )
    lexicon = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(lexicon) - set(LEXICON_KEYS))
    if unknown:
        raise ConfigError(
            "corpus.lexicon", f"lexicon file '{path}' has unknown key(s) {unknown}; expected {list(LEXICON_KEYS)}"
        )
    both = sorted(set(lexicon) & set(corpus))
    if both:
        raise ConfigError(f"corpus.{both[0]}", f"given both in the config and in the lexicon file '{path}'")
    corpus.update(lexicon)
    return config


def validate_config(raw: dict) -> dict:
    """Return a validated copy of `raw` with defaults filled in, or raise ConfigError."""
    config = _with_lexicon(copy.deepcopy(raw))
    validator = _validator_filling_defaults()(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ConfigError(_key(error.absolute_path), error.message)
    _check_steps(config["steps"], "steps")
    _check_corpus(config["corpus"])
    _check_sae(config["sae"], "sae", d_model=None)
    eval_split = config["corpus"]["n_eval_sequences"] * config["corpus"]["seq_len"]
    if config["evaluation"]["tokens"] > eval_split:
        raise ConfigError(
            "evaluation.tokens",
            f"{config['evaluation']['tokens']} is more than the corpus's evaluation split holds "
            f"(corpus.n_eval_sequences x corpus.seq_len = {eval_split})",
        )
    for name, model in config["models"].items():
        _check_model(config, name, model)
    _check_analysis(config)
    return config


def _check_analysis(config: dict) -> None:
    analysis = config["analysis"]
    if analysis["tau_low"] >= analysis["tau"]:
        raise ConfigError("analysis.tau_low", f"{analysis['tau_low']} must be below analysis.tau ({analysis['tau']})")
    shown = config["figures"]["steps"] or []
    unknown = sorted(set(shown) - set(config["steps"]))
    if unknown:
        raise ConfigError("figures.steps", f"step(s) {unknown} are not among the configured steps")


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    return validate_config(yaml.safe_load(Path(path).read_text()))


def _check_steps(steps: list[int], key: str) -> None:
    duplicates = sorted({s for s in steps if steps.count(s) > 1})
    if duplicates:
        raise ConfigError(key, f"duplicate step(s) {duplicates}")
    if steps != sorted(steps):
        raise ConfigError(key, f"steps must be in ascending order, got {steps}")


def _check_corpus(corpus: dict) -> None:
    seen: dict[str, str] = {}
    for category, spec in corpus["categories"].items():
        key = f"corpus.categories.{category}"
        if not NAME_PATTERN.match(category):
            raise ConfigError(key, "category names use letters, digits, '.', '_' and '-' only")
        if not spec["words"]:
            raise ConfigError(f"{key}.words", "the category is empty: list at least one word")
        for word in spec["words"]:
            if word in seen:
                raise ConfigError(f"{key}.words", f"word '{word}' is also in category '{seen[word]}'")
            seen[word] = category
    contexts = {"corpus.neutral_prefixes": corpus["neutral_prefixes"]}
    for category, spec in corpus["categories"].items():
        contexts[f"corpus.categories.{category}.before"] = spec["before"]
        contexts[f"corpus.categories.{category}.after"] = spec["after"]
    for key, phrases in contexts.items():
        leaked = sorted({word for phrase in phrases for word in phrase.split() if word in seen})
        if leaked:
            raise ConfigError(
                key, f"context phrases contain category word(s) {leaked}, which would blur the planted frequencies"
            )
    clash = sorted(set(corpus["filler_words"]) & set(seen))
    if clash:
        raise ConfigError("corpus.filler_words", f"filler words {clash} are also category words")


def _check_sae(sae: dict, key: str, d_model: int | None) -> None:
    if sae["warmup_steps"] >= sae["steps"]:
        raise ConfigError(f"{key}.warmup_steps", f"must be smaller than {key}.steps ({sae['steps']})")
    if sae["architecture"] == "relu" and sae["sparsity_warmup_steps"] >= sae["steps"]:
        raise ConfigError(f"{key}.sparsity_warmup_steps", f"must be smaller than {key}.steps")
    if sae["architecture"] == "batchtopk" and sae["threshold_start_step"] >= sae["steps"]:
        raise ConfigError(
            f"{key}.threshold_start_step",
            "must be smaller than steps, or BatchTopK never learns its inference threshold",
        )
    if d_model is not None and sae["architecture"] != "relu":
        dict_size = sae["expansion"] * d_model
        if sae["k"] > dict_size:
            raise ConfigError(f"{key}.k", f"k={sae['k']} is larger than the dictionary ({dict_size} features)")


def _check_model(config: dict, name: str, model: dict) -> None:
    key = f"models.{name}"
    if not NAME_PATTERN.match(name):
        raise ConfigError(key, "model names use letters, digits, '.', '_' and '-' only")
    source = model["source"]
    required = TOY_REQUIRED if source == "toy" else HUB_REQUIRED
    missing = [field for field in required if field not in model]
    if missing:
        raise ConfigError(key, f"a {source} model needs {missing}")
    if source == "toy" and model["d_model"] % model["n_heads"]:
        raise ConfigError(
            f"{key}.n_heads", f"d_model={model['d_model']} is not divisible by n_heads={model['n_heads']}"
        )
    if model["layers"] != "all":
        _check_layers(model["layers"], model["n_layers"], f"{key}.layers")
    overrides = model.get("sae", {})
    unknown = sorted(set(overrides) - set(config["sae"]))
    if unknown:
        raise ConfigError(f"{key}.sae", f"unknown SAE setting(s) {unknown}")
    merged = {**config["sae"], **overrides}
    errors = list(jsonschema.Draft202012Validator(load_schema()["properties"]["sae"]).iter_errors(merged))
    if errors:
        raise ConfigError(_key([f"{key}.sae", *errors[0].absolute_path]), errors[0].message)
    _check_sae(merged, f"{key}.sae" if overrides else "sae", model["d_model"])


def _check_layers(layers: list[int], n_layers: int, key: str) -> None:
    outside = [layer for layer in layers if not 0 <= layer < n_layers]
    if outside:
        raise ConfigError(key, f"layer(s) {outside} outside the model's depth (n_layers={n_layers}: 0..{n_layers - 1})")
    if len(set(layers)) != len(layers) or layers != sorted(layers):
        raise ConfigError(key, f"layers must be ascending without duplicates, got {layers}")


def model_layers(config: dict, model: str) -> list[int]:
    """The block indices studied for `model`."""
    spec = config["models"][model]
    return list(range(spec["n_layers"])) if spec["layers"] == "all" else list(spec["layers"])


def sae_settings(config: dict, model: str) -> dict:
    """The SAE recipe for `model`: the global sae section with the model's overrides."""
    return {**config["sae"], **config["models"][model].get("sae", {})}


def layer_groups(config: dict, model: str, layers: list[int]) -> list[list[int]]:
    """`layers` cut into the groups that one SAE job each trains (sae.layers_per_job, 'all' = one job)."""
    size = sae_settings(config, model)["layers_per_job"]
    size = len(layers) if size == "all" else size
    return [layers[i : i + size] for i in range(0, len(layers), max(size, 1))]


def model_spec(config: dict, model: str) -> dict:
    """What defines a model's checkpoints (architecture, source, training recipe)."""
    spec = {key: value for key, value in config["models"][model].items() if key not in ("layers", "sae", "resources")}
    if spec["source"] == "toy":
        spec["training"] = config["toy_training"]
    return spec


RUNTIME_KEYS = ("device", "gpu_dtype", "forward_batch_size")


def runtime_settings(config: dict) -> dict:
    """Where and how a compute stage runs its forward passes (RUNTIME_KEYS)."""
    return {
        "device": config["device"],
        "gpu_dtype": config["activations"]["gpu_dtype"],
        "forward_batch_size": config["activations"]["batch_size"],
    }


SPLIT_SIZES = ("n_train_sequences", "n_sae_sequences", "n_eval_sequences")
GENERATION_KEYS = ("seed", "seq_len", "category_fraction", "neutral_context_fraction", *LEXICON_KEYS)


def _generation(config: dict, *sizes: str) -> dict:
    """The corpus generator's settings (the lexicon's content, not its file name) with the given split sizes."""
    return {key: config["corpus"][key] for key in (*GENERATION_KEYS, *sizes)}


def corpus_settings(config: dict) -> dict:
    """What the corpus job reads: the generator, the train and SAE split sizes, the probe templates (vocabulary)."""
    return {
        "corpus": _generation(config, "n_train_sequences", "n_sae_sequences"),
        "probes": {"templates": config["probes"]["templates"]},
    }


def eval_split_settings(config: dict) -> dict:
    """What the evaluation-split job reads: the generator and the split's size."""
    return {"corpus": _generation(config, "n_eval_sequences")}


def probe_settings(config: dict) -> dict:
    """What the probe job reads: the probes section and the words it places in the templates."""
    corpus = {key: config["corpus"][key] for key in ("categories", "filler_words")}
    return {"corpus": corpus, "probes": config["probes"]}


def hub_settings(config: dict, model: str) -> dict:
    """What the prefetch of a hub model reads."""
    return {"model": model_spec(config, model), "hub": config["hub"]}


def sae_training_settings(config: dict, model: str) -> dict:
    """Everything an SAE job of `model` reads: its recipe and the training tokens, never evaluation or scoring.

    The layer-group size is left out: it shapes jobs, not SAEs, so changing it retrains nothing.
    """
    recipe = {key: value for key, value in sae_settings(config, model).items() if key != "layers_per_job"}
    tokens = {"max_tokens": config["activations"]["max_tokens"], "seq_len": config["corpus"]["seq_len"]}
    return {**runtime_settings(config), "sae": recipe, "tokens": tokens}


def categories(config: dict) -> list[str]:
    """The categories in config order (the cube's order)."""
    return list(config["corpus"]["categories"])


def scoring_settings(config: dict) -> dict:
    """Everything a score job reads: SAE evaluation, category scoring and the categories."""
    return {
        **runtime_settings(config),
        "evaluation": {**config["evaluation"], "seq_len": config["corpus"]["seq_len"]},
        "scoring": config["scoring"],
        "categories": categories(config),
    }


def provenance(config: dict) -> dict:
    """The settings that made the cube's numbers, stage by stage: job shape, paths, devices and resources left out,
    and so are analysis and figures, so that changing any of those never rebuilds the cube."""
    models = {name: {k: v for k, v in model_spec(config, name).items() if k != "training"} for name in config["models"]}
    sae = {name: sae_training_settings(config, name)["sae"] for name in config["models"]}
    scoring = {key: value for key, value in scoring_settings(config).items() if key not in RUNTIME_KEYS}
    return {
        "steps": config["steps"],
        "corpus": _generation(config, *SPLIT_SIZES),
        "probes": config["probes"],
        "toy_training": config["toy_training"],
        "models": models,
        "sae": sae,
        "sae_tokens": {"max_tokens": config["activations"]["max_tokens"], "seq_len": config["corpus"]["seq_len"]},
        **scoring,
    }


def cube_settings(config: dict) -> dict:
    """What the cube is built from: order, steps, planted frequencies, and the provenance."""
    return {
        "models": list(config["models"]),
        "steps": config["steps"],
        "categories": categories(config),
        "planted_frequency": {name: spec["planted_frequency"] for name, spec in config["corpus"]["categories"].items()},
        "provenance": provenance(config),
    }


STEP_FIGURES = ("scale", "reactivation")  # the figures drawn at chosen steps (figures.steps)


def figure_settings(config: dict, figure: str) -> dict:
    """What one figure reads: the dpi, and the steps where it is drawn at chosen steps."""
    chosen = {"steps": config["figures"]["steps"]} if figure in STEP_FIGURES else {}
    return {"dpi": config["figures"]["dpi"], **chosen}


def grid(config: dict) -> list[tuple[str, int, int]]:
    """Every (model, step, layer) cell of the study."""
    return [
        (model, step, layer)
        for model in config["models"]
        for step in config["steps"]
        for layer in model_layers(config, model)
    ]
