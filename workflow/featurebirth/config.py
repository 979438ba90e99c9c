"""Validate the workflow configuration: JSON schema with defaults, then cross-field checks.

Every error names the config key at fault, so a bad config stops the workflow before
any job starts and tells the user exactly what to fix.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import yaml

from .layout import PROBE_SETS
from .stream import kept_positions, rows_wanted

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TOY_REQUIRED = ("d_model", "n_layers", "n_heads")
HUB_REQUIRED = ("repo", "d_model", "n_layers")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"config key '{key}': {problem}")


@functools.cache
def load_schema() -> dict:
    """The JSON schema (YAML) that defines every config key and its default; read once per process (validation
    reads it for the config and again for each model's SAE overrides). Shared: callers do not modify it."""
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
    if "seed" in (raw.get("sae") or {}):
        raise ConfigError("sae.seed", "was replaced by sae.seeds, a list (sae.seed: 3 is now sae.seeds: [3])")
    config = _with_lexicon(copy.deepcopy(raw))
    validator = _validator_filling_defaults()(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ConfigError(_key(error.absolute_path), error.message)
    _check_steps(config["steps"], "steps")
    _check_positions(config)
    _check_corpus(config["corpus"])
    _check_sae(config["sae"], "sae", d_model=None)
    if is_generated(config):
        _check_generated(config)
    else:
        _check_text(config)
    for name, model in config["models"].items():
        _check_model(config, name, model)
    _check_analysis(config)
    _check_figures(config)
    return config


def is_generated(config: dict) -> bool:
    """The corpus is the planted, generated one (not real text)."""
    return config["corpus"]["source"] == "generated"


def _check_generated(config: dict) -> None:
    """The generated corpus needs its contexts and planted frequencies, and an evaluation split large enough."""
    corpus = config["corpus"]
    if "neutral_prefixes" not in corpus:
        raise ConfigError("corpus.neutral_prefixes", "the generated corpus needs neutral sentence openings")
    for category, spec in corpus["categories"].items():
        missing = [field for field in ("planted_frequency", "before", "after") if field not in spec]
        if missing:
            raise ConfigError(
                f"corpus.categories.{category}", f"the generated corpus needs {missing} for each category"
            )
    _check_contexts(corpus)
    eval_split = corpus["n_eval_sequences"] * corpus["seq_len"]
    if config["evaluation"]["tokens"] > eval_split:
        raise ConfigError(
            "evaluation.tokens",
            f"{config['evaluation']['tokens']} is more than the corpus's evaluation split holds "
            f"(corpus.n_eval_sequences x corpus.seq_len = {eval_split})",
        )


def _check_text(config: dict) -> None:
    """Real text: files or a dataset, hub models only (toy models train on the generated corpus), a known tokenizer."""
    text = config["corpus"].get("text", {})
    sources = [name for name in ("files", "dataset") if name in text]
    if len(sources) != 1:
        raise ConfigError(
            "corpus.text", f"source text needs exactly one of 'files' or 'dataset', got {sources or 'none'}"
        )
    toy = [name for name, model in config["models"].items() if model["source"] != "hub"]
    if toy:
        raise ConfigError("corpus.source", f"text is for hub models; toy model(s) {toy} train on the generated corpus")
    tokenizer = text.setdefault("tokenizer", next(iter(config["models"])))
    if tokenizer not in config["models"]:
        raise ConfigError(
            "corpus.text.tokenizer", f"'{tokenizer}' is not a configured model ({list(config['models'])})"
        )


def _check_generated_budget(config: dict, recipe: dict, key: str) -> None:
    """The generated corpus's SAE split is known now: refuse a budget it cannot feed, with both figures."""
    distinct = config["corpus"]["n_sae_sequences"] * kept_positions(token_settings(config))
    if recipe["tokens"] > distinct * recipe["max_epochs"]:
        raise ConfigError(
            f"{key}.tokens",
            f"{recipe['tokens']} is more than {key}.max_epochs = {recipe['max_epochs']} pass(es) over the {distinct} "
            "training tokens of the SAE split (corpus.n_sae_sequences x (corpus.seq_len - activations.exclude_first))",
        )


def _check_positions(config: dict) -> None:
    """At least one position of every context is kept and predicts a next token."""
    exclude, seq_len = config["activations"]["exclude_first"], config["corpus"]["seq_len"]
    if exclude >= seq_len - 1:
        raise ConfigError("activations.exclude_first", f"{exclude} leaves no counted position in contexts of {seq_len}")


def _check_figures(config: dict) -> None:
    model, chosen = config["figures"]["lineage_model"], config["figures"]["lineage_categories"] or []
    if model is not None and model not in config["models"]:
        raise ConfigError("figures.lineage_model", f"{model!r} is not a configured model ({list(config['models'])})")
    unknown = [c for c in chosen if c not in config["corpus"]["categories"]]
    if unknown:
        raise ConfigError("figures.lineage_categories", f"{unknown} are not categories of the lexicon")


def _check_analysis(config: dict) -> None:
    analysis = config["analysis"]
    if analysis["tau_low"] >= analysis["tau"]:
        raise ConfigError("analysis.tau_low", f"{analysis['tau_low']} must be below analysis.tau ({analysis['tau']})")
    if config["figures"]["probe_set"] not in (None, *probe_sets(config)):
        raise ConfigError(
            "figures.probe_set",
            f"'{config['figures']['probe_set']}' is not scored with corpus.source {config['corpus']['source']} "
            f"(probe sets: {probe_sets(config)})",
        )
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
    clash = sorted(set(corpus["filler_words"]) & set(seen))
    if clash:
        raise ConfigError("corpus.filler_words", f"filler words {clash} are also category words")


def _check_contexts(corpus: dict) -> None:
    """No category word in a generator context phrase: it would blur the planted frequencies."""
    seen = {word for spec in corpus["categories"].values() for word in spec["words"]}
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


def _check_sae(sae: dict, key: str, d_model: int | None) -> None:
    sae = resolve_sae(sae)
    updates = sae["updates"]
    if updates < 2:
        raise ConfigError(
            f"{key}.tokens", f"a budget of {sae['tokens']} tokens is less than two batches of {sae['batch_size']}"
        )
    used = {"topk": (), "batchtopk": ("threshold_start_step",), "relu": ("sparsity_warmup_steps",)}
    for name in ("warmup_steps", *used[sae["architecture"]]):
        if sae[name] >= updates:
            raise ConfigError(
                f"{key}.{name}", f"{sae[name]} must be smaller than the {updates} updates of the budget ({key}.tokens)"
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
        hint = " (sae.seed is now sae.seeds, set for the whole study)" if "seed" in unknown else ""
        raise ConfigError(f"{key}.sae", f"unknown SAE setting(s) {unknown}{hint}")
    if "seeds" in overrides:
        raise ConfigError(
            f"{key}.sae.seeds", "seeds are set for the whole study (sae.seeds: the cube's seed dimension)"
        )
    merged = {**config["sae"], **overrides}
    errors = list(jsonschema.Draft202012Validator(load_schema()["properties"]["sae"]).iter_errors(merged))
    if errors:
        raise ConfigError(_key([f"{key}.sae", *errors[0].absolute_path]), errors[0].message)
    _check_sae(merged, f"{key}.sae" if overrides else "sae", model["d_model"])
    if is_generated(config):
        _check_generated_budget(config, resolve_sae(merged), f"{key}.sae" if overrides else "sae")


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
    """The SAE recipe for `model`: the global sae section with the model's overrides, budget-scaled values filled."""
    return resolve_sae({**config["sae"], **config["models"][model].get("sae", {})})


DICTIONARY_LEARNING_DEAD_TOKENS = 10_000_000  # its trainers' default dead-feature window


def resolve_sae(recipe: dict) -> dict:
    """The recipe with its optimizer updates and every budget-scaled setting left null filled in from sae.tokens."""
    updates = recipe["tokens"] // recipe["batch_size"]
    scaled = {
        "warmup_steps": updates // 8,
        "sparsity_warmup_steps": updates // 8,
        "threshold_start_step": updates // 4,
        "dead_feature_tokens": max(1, min(DICTIONARY_LEARNING_DEAD_TOKENS, recipe["tokens"] // 5)),
    }
    filled = {name: value if recipe[name] is None else recipe[name] for name, value in scaled.items()}
    return {**recipe, **filled, "updates": updates}


def layer_groups(config: dict, model: str, layers: list[int]) -> list[list[int]]:
    """`layers` cut into the groups that one SAE job each trains (sae.layers_per_job, 'all' = one job)."""
    size = sae_settings(config, model)["layers_per_job"]
    size = len(layers) if size == "all" else size
    return [layers[i : i + size] for i in range(0, len(layers), max(size, 1))]


def sae_seeds(config: dict) -> list[int]:
    """The SAE seeds of the study (sae.seeds)."""
    return list(config["sae"]["seeds"])


SaeGroup = tuple[list[int], list[int]]  # (layers, seeds) of one SAE job


def sae_job_groups(config: dict, model: str, trained: list[SaeGroup]) -> list[SaeGroup]:
    """The (layers, seeds) groups whose SAE jobs cover every studied (layer, seed) of one (model, step): the trained
    groups (known by their manifests' names, layout.trained_groups) holding a studied layer and seed, then what
    they leave out: per seed its missing layers, seeds missing the same layers trained together, the layers cut by
    layer_groups.

    So adding a layer trains only that layer, adding a seed only that seed, and a trained group keeps its name; the
    Snakefile and the cost plan (trained = [] for a fresh run) plan with this one function.
    """
    studied, seeds = model_layers(config, model), sae_seeds(config)
    kept = [(ls, ss) for ls, ss in trained if set(ls) & set(studied) and set(ss) & set(seeds)]
    covered = {(layer, seed) for ls, ss in kept for layer in ls for seed in ss}
    missing: dict[tuple[int, ...], list[int]] = {}
    for seed in seeds:
        layers = tuple(layer for layer in studied if (layer, seed) not in covered)
        if layers:
            missing.setdefault(layers, []).append(seed)
    new = [
        (group, group_seeds) for ls, group_seeds in missing.items() for group in layer_groups(config, model, list(ls))
    ]
    return kept + new


def model_spec(config: dict, model: str) -> dict:
    """What defines a model's checkpoints (architecture, source, training recipe)."""
    spec = {key: value for key, value in config["models"][model].items() if key not in ("layers", "sae", "resources")}
    if spec["source"] == "toy":
        spec["training"] = config["toy_training"]
    return spec


RUNTIME_KEYS = ("device", "gpu_dtype", "forward_batch_size")
SAE_JOB_SHAPE = ("layers_per_job", "save_every_minutes")  # how SAE jobs run, not what they train


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


TEMPLATE_PROBE_KEYS = ("seed", "templates", "n_controls")  # the probes keys of the template set (the rest: mined)


def probe_settings(config: dict) -> dict:
    """What the probe job reads: the template keys of the probes section and the words it places in the templates."""
    corpus = {key: config["corpus"][key] for key in ("categories", "filler_words")}
    return {"corpus": corpus, "probes": {key: config["probes"][key] for key in TEMPLATE_PROBE_KEYS}}


def probe_sets(config: dict) -> list[str]:
    """The probe sets scored: the templates, and with real text the contexts mined from its probe-mining part."""
    return list(PROBE_SETS if not is_generated(config) else PROBE_SETS[:1])


def mining_settings(config: dict) -> dict:
    """What the mining job reads: the lexicon's words and how many contexts of how many tokens to mine per word."""
    return {
        "categories": {name: spec["words"] for name, spec in config["corpus"]["categories"].items()},
        "per_word": config["probes"]["mined_per_word"],
        "context": config["probes"]["mined_context"],
    }


FETCH_MARGIN = 1.25  # text fetched beyond the estimate: held-out documents and the estimate's error


def text_fetch_settings(config: dict) -> dict:
    """What the text fetch reads: the text section and how many tokens the budgets need at most.

    needed = the largest distinct-token need of any model (sae.tokens / sae.max_epochs, positions left out
    added back) plus the evaluation tokens, times FETCH_MARGIN.
    """
    text = {key: value for key, value in config["corpus"]["text"].items() if key != "tokenizer"}
    needed = (sae_text_tokens(config) + config["evaluation"]["tokens"]) * FETCH_MARGIN
    return {"text": text, "needed_tokens": int(needed), "hub": config["hub"]}


def sae_text_tokens(config: dict) -> int:
    """Packed tokens of SAE-training text the largest budget reads, per pass it may take: the rows its SAE job runs
    over (stream.rows_wanted: the budget in kept positions, plus the chunk remainders streaming skips)."""
    kept, buffer = kept_positions(token_settings(config)), buffer_settings(config)
    rows = [-(-rows_wanted(buffer, budget, kept) // budget["max_epochs"]) for budget in text_budgets(config).values()]
    return max(rows) * config["corpus"]["seq_len"]


def buffer_settings(config: dict) -> dict:
    """How SAE jobs hold their activations (activations.mode and buffer_tokens)."""
    return {key: config["activations"][key] for key in ("mode", "buffer_tokens")}


def text_tokenize_settings(config: dict) -> dict:
    """What the tokenize job reads: how documents are split and packed (budgets are checked per model after it)."""
    keys = ("field", "eval_documents", "probe_documents")
    return {
        "text": {key: config["corpus"]["text"][key] for key in keys},
        "seed": config["corpus"]["seed"],
        "seq_len": config["corpus"]["seq_len"],
        "sae_tokens": int(sae_text_tokens(config) * FETCH_MARGIN),  # room for stream chunks' skipped remainders
    }


def text_budgets(config: dict) -> dict[str, dict]:
    """Each model's SAE budget: its tokens, the passes over the text it may take, and its batches."""
    keys = ("tokens", "max_epochs", "batch_size", "updates")
    return {model: {key: sae_settings(config, model)[key] for key in keys} for model in config["models"]}


def text_check_settings(config: dict, model: str) -> dict:
    """What one model's check against the text reads: the lexicon, the control words, its budget, the positions."""
    corpus = config["corpus"]
    categories = {name: spec["words"] for name, spec in corpus["categories"].items()}
    return {
        "categories": categories,
        "filler_words": corpus["filler_words"],
        "budget": text_budgets(config)[model],
        "buffer": buffer_settings(config),
        "evaluation_tokens": config["evaluation"]["tokens"],
        **token_settings(config),
    }


def hub_settings(config: dict, model: str) -> dict:
    """What the prefetch of a hub model reads."""
    return {"model": model_spec(config, model), "hub": config["hub"]}


def sae_training_settings(config: dict, model: str, seeds: list[int] | None = None) -> dict:
    """Everything an SAE job of `model` training `seeds` (default: sae.seeds) reads: its recipe and the training
    tokens, never evaluation or scoring.

    The job shape (SAE_JOB_SHAPE: layer-group size, save interval) is left out: changing it retrains nothing. The
    recipe names the first of the job's seeds (the others are in its name, layout.group_name): a job's settings
    depend on its own seeds only, so adding, dropping or reordering sae.seeds changes no trained job's settings, and
    a job of seed 0 alone has the settings it had before there were seeds.
    """
    recipe = {key: value for key, value in sae_settings(config, model).items() if key not in SAE_JOB_SHAPE}
    del recipe["seeds"]
    recipe["seed"] = (seeds or sae_seeds(config))[0]
    return {
        **runtime_settings(config),
        "sae": recipe,
        "tokens": token_settings(config),
        "buffer": buffer_settings(config),
    }


def token_settings(config: dict) -> dict:
    """How contexts are cut and which of their positions count (SAE training and evaluation alike)."""
    return {"seq_len": config["corpus"]["seq_len"], "exclude_first": config["activations"]["exclude_first"]}


def categories(config: dict) -> list[str]:
    """The categories in config order (the cube's order)."""
    return list(config["corpus"]["categories"])


def scoring_settings(config: dict) -> dict:
    """Everything a score job reads: SAE evaluation, category scoring and the categories."""
    return {
        **runtime_settings(config),
        "evaluation": {**config["evaluation"], **token_settings(config)},
        "scoring": config["scoring"],
        "categories": categories(config),
        "seeds": sae_seeds(config),
    }


def provenance(config: dict) -> dict:
    """The settings that made the cube's numbers, stage by stage: job shape, paths, devices and resources left out,
    and so are analysis and figures, so that changing any of those never rebuilds the cube."""
    models = {name: {k: v for k, v in model_spec(config, name).items() if k != "training"} for name in config["models"]}
    sae = {name: sae_training_settings(config, name)["sae"] for name in config["models"]}
    scoring = {key: value for key, value in scoring_settings(config).items() if key not in RUNTIME_KEYS}
    return {
        "steps": config["steps"],
        "corpus": {key: value for key, value in config["corpus"].items() if key != "lexicon"},
        "probes": config["probes"],
        "toy_training": config["toy_training"],
        "models": models,
        "sae": sae,
        "tokens": token_settings(config),
        "buffer": buffer_settings(config),
        **scoring,
    }


def cube_settings(config: dict) -> dict:
    """What the cube is built from: order, steps, planted frequencies, and the provenance."""
    return {
        "models": list(config["models"]),
        "steps": config["steps"],
        "categories": categories(config),
        # real text plants nothing: NaN
        "planted_frequency": {
            name: spec.get("planted_frequency", math.nan) if is_generated(config) else math.nan
            for name, spec in config["corpus"]["categories"].items()
        },
        "probe_sets": probe_sets(config),
        "seeds": sae_seeds(config),
        "provenance": provenance(config),
    }


STEP_FIGURES = ("scale", "reactivation")  # the figures drawn at chosen steps (figures.steps)


def figure_settings(config: dict, figure: str) -> dict:
    """What one figure reads: the dpi, the steps where it is drawn at chosen steps, and the lineage figure's model
    (figures.lineage_model, null: the last configured) and categories (null: every one)."""
    chosen = {"steps": config["figures"]["steps"]} if figure in STEP_FIGURES else {}
    if figure == "lineage":
        chosen = {
            "model": config["figures"]["lineage_model"] or list(config["models"])[-1],
            "categories": config["figures"]["lineage_categories"] or categories(config),
        }
    return {"dpi": config["figures"]["dpi"], "probe_set": config["figures"]["probe_set"], **chosen}


def grid(config: dict) -> list[tuple[str, int, int]]:
    """Every (model, step, layer) cell of the study."""
    return [
        (model, step, layer)
        for model in config["models"]
        for step in config["steps"]
        for layer in model_layers(config, model)
    ]
