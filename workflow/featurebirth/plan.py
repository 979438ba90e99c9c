"""The cost plan of a config, before anything runs: jobs, GPU-hours, memory, disk, downloads and results.

`python -m featurebirth plan --configfile config/pythia.yaml` reads the validated config only (no network, no
SLURM, no results folder) and plans a fresh run. Job counts come from the planning functions the Snakefile uses
(config.sae_job_groups, config.model_layers), so they are the counts `snakemake -n --quiet rules` prints (a
workflow test compares them); every constant and the memory arithmetic come from costs.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import costs
from .config import (
    SaeGroup,
    is_generated,
    model_layers,
    probe_sets,
    sae_job_groups,
    sae_seeds,
    sae_settings,
    text_fetch_settings,
    token_settings,
)
from .layout import FIGURES
from .stream import ChunkSchedule, chunk_schedule, kept_positions, rows_wanted

# The rules that run on the submitting node, never as SLURM jobs: the `localrules:` of workflow/rules/*.smk and the
# target rule (a workflow test checks this set against the jobs Snakemake's plan marks local).
LOCAL_RULES = frozenset(
    {
        "corpus",
        "eval_split",
        "probes",
        "fetch_text",
        "check_text",
        "mine_probes",
        "prefetch",
        "cube",
        "tables",
        "heatmaps",
        "quality_heatmaps",
        "figure",
        "all",
    }
)
GPU_RULES = ("train_saes", "score")
MIB = 2**20  # SLURM reads --mem (Snakemake's mem_mb) in MiB


def model_jobs(config: dict, model: str) -> dict[str, int]:
    """A fresh run's jobs of one model, per rule."""
    steps = len(config["steps"])
    checkpoint = "toy_model" if config["models"][model]["source"] == "toy" else "prefetch"
    jobs = {
        checkpoint: steps,
        "train_saes": steps * len(sae_job_groups(config, model, [])),
        "score": steps,
        "heatmaps": 1,
        "quality_heatmaps": 1,
    }
    if not is_generated(config):
        jobs["check_text"] = 1
    return jobs


def shared_jobs(config: dict) -> dict[str, int]:
    """A fresh run's jobs made once whatever the models: corpus or text, probes, aggregates, figures, the target."""
    source = (
        {"corpus": 1, "eval_split": 1}
        if is_generated(config)
        else {"fetch_text": 1, "tokenize_text": 1, "mine_probes": 1}
    )
    return {**source, "probes": 1, "cube": 1, "tables": 1, "figure": len(FIGURES), "all": 1}


def rule_counts(config: dict) -> dict[str, int]:
    """Every job of a fresh run, per rule: what `snakemake -n --quiet rules` counts."""
    counts = dict(shared_jobs(config))
    for model in config["models"]:
        for rule, count in model_jobs(config, model).items():
            counts[rule] = counts.get(rule, 0) + count
    return counts


def slurm_jobs(counts: dict[str, int]) -> int:
    """How many of `counts` are submitted to SLURM (the rest run on the submitting node)."""
    return sum(count for rule, count in counts.items() if rule not in LOCAL_RULES)


def model_shape(config: dict, model: str) -> costs.ModelShape:
    """A configured model's shape; hub models have their Pythia size's vocabulary, toy models the generated corpus's."""
    spec = config["models"][model]
    d_mlp = spec.get("d_mlp", costs.MLP_RATIO * spec["d_model"])
    vocab = costs.hub_vocab(spec["repo"]) if spec["source"] == "hub" else toy_vocabulary(config)
    return costs.ModelShape(spec["n_layers"], spec["d_model"], d_mlp, vocab)


def toy_vocabulary(config: dict) -> int:
    """Rows of a toy model's embeddings: the generated corpus's word-level vocabulary."""
    from .corpus import vocabulary  # imports the tokenizers: only configs with toy models pay for it

    return len(vocabulary(config["corpus"], config["probes"]))


def checkpoint_bytes(config: dict, model: str) -> float:
    """One checkpoint's weights on disk: a hub revision (fp16, downloaded), a toy checkpoint (fp32, trained here)."""
    shape = model_shape(config, model)
    if config["models"][model]["source"] == "hub":
        return costs.hub_revision_bytes(shape)
    return shape.n_params * costs.FLOAT


def sae_schedule(config: dict, model: str) -> ChunkSchedule:
    """The chunk schedule of the model's SAE jobs (stream.py, the jobs' own arithmetic): the rows they read (for
    the generated corpus at most its SAE split; real text holds them, or check_text refuses the run) and the rows
    one chunk holds."""
    recipe, kept, buffer = sae_settings(config, model), kept_positions(token_settings(config)), config["activations"]
    rows = rows_wanted(buffer, recipe, kept)
    if is_generated(config):
        rows = min(rows, config["corpus"]["n_sae_sequences"])
    return chunk_schedule(
        buffer["mode"], buffer["buffer_tokens"], rows, kept, recipe["batch_size"], sae_seeds(config)[0]
    )


def held_tokens(config: dict, model: str) -> int:
    """Activations per layer an SAE job holds at once: one chunk (the old one is released before the next)."""
    return sae_schedule(config, model).rows_per_chunk * kept_positions(token_settings(config))


def forward_positions(config: dict, model: str) -> int:
    """Positions one SAE job's truncated forward pass runs over: every row once when one chunk holds them all
    (it is reused for every pass); else once per chunk served."""
    rows = sae_schedule(config, model).rows_run(sae_settings(config, model)["updates"])
    return rows * config["corpus"]["seq_len"]


@dataclass(frozen=True)
class JobCost:
    """One GPU job's estimate."""

    rule: str
    what: str
    seconds: float
    gpu_bytes: float
    host_bytes: float
    disk_bytes: float  # the training state beside the group's manifest while the job runs
    memory: costs.SAEJobMemory | None = None


def sae_job_cost(config: dict, model: str, group: SaeGroup) -> JobCost:
    """One train_saes job: a forward pass truncated after the group's deepest layer feeds every SAE of the group (its
    layers x its seeds)."""
    (layers, seeds), shape, recipe = group, model_shape(config, model), sae_settings(config, model)
    dict_size, saes = recipe["expansion"] * shape.d_model, len(layers) * len(seeds)
    memory = costs.sae_job_memory(shape, layers, len(seeds), dict_size, held_tokens(config, model))
    trained = recipe["updates"] * recipe["batch_size"]
    flops = costs.forward_flops(shape, max(layers)) * forward_positions(config, model)
    flops += saes * costs.sae_training_flops(shape.d_model, dict_size) * trained
    seconds = (
        costs.JOB_START_SECONDS
        + costs.checkpoint_read_seconds(checkpoint_bytes(config, model))
        + costs.gpu_seconds(flops)
        + recipe["updates"] * saes * costs.UPDATE_OVERHEAD_SECONDS
    )
    what = f"{model} layers {layers[0]}-{layers[-1]}" if len(layers) > 1 else f"{model} layer {layers[0]}"
    return JobCost(
        "train_saes", what + f", {len(seeds)} seed(s)", seconds, memory.gpu, memory.host, memory.training_state, memory
    )


def probe_items(config: dict) -> int:
    """Items of the probe sets: every category word in every template and the controls (corpus.probe_items); with
    real text at most probes.mined_per_word contexts of every word and of its control (mining.py)."""
    words = sum(len(spec["words"]) for spec in config["corpus"]["categories"].values())
    template = words * len(config["probes"]["templates"]) + config["probes"]["n_controls"]
    mined = 2 * words * config["probes"]["mined_per_word"] if "mined" in probe_sets(config) else 0
    return template + mined


def score_job_cost(config: dict, model: str) -> JobCost:
    """One score job: probe, held-out and clean passes, then per layer the zeroed pass and per seed the SAE-spliced
    pass."""
    shape, recipe = model_shape(config, model), sae_settings(config, model)
    d, vocab, layers = shape.d_model, shape.vocab, len(model_layers(config, model))
    dict_size, tokens, seeds = recipe["expansion"] * d, config["evaluation"]["tokens"], len(sae_seeds(config))
    passes = 3 + layers * (1 + seeds)
    saes = layers * seeds
    flops = tokens * (passes * costs.full_forward_flops(shape) + saes * costs.sae_inference_flops(d, dict_size))
    logits = config["activations"]["batch_size"] * config["corpus"]["seq_len"] * vocab * costs.FLOAT * 2
    saes_held = seeds * costs.sae_params(d, dict_size) * costs.FLOAT  # every seed's SAE of the layer being scored
    gpu = shape.n_params * costs.HALF + vocab * d * costs.FLOAT + saes_held + logits
    host = (
        costs.HOST_BASELINE_BYTES
        + checkpoint_bytes(config, model)
        + tokens * vocab * costs.FLOAT  # the clean log-probabilities (downstream.py)
        + tokens * layers * d * costs.ACTIVATION_BYTES
        + probe_items(config) * shape.n_layers * d * costs.FLOAT
    )
    seconds = costs.JOB_START_SECONDS + costs.checkpoint_read_seconds(checkpoint_bytes(config, model))
    return JobCost("score", model, seconds + costs.gpu_seconds(flops), gpu, host, 0.0)


@dataclass(frozen=True)
class ModelPlan:
    """One model's share of the run."""

    name: str
    steps: int
    cells: int
    jobs: dict[str, int]
    sae_jobs: list[JobCost]  # one per layer group of a checkpoint (each runs once per step)
    score_job: JobCost
    download_bytes: float
    sae_weight_bytes: float
    score_bytes: float
    checkpoint_bytes: float  # toy checkpoints in the results folder

    @property
    def gpu_hours(self) -> float:
        return self.steps * (sum(job.seconds for job in self.sae_jobs) + self.score_job.seconds) / 3600

    @property
    def gpu_jobs(self) -> list[JobCost]:
        return [*self.sae_jobs, self.score_job]

    @property
    def results_bytes(self) -> float:
        return self.sae_weight_bytes + self.score_bytes + self.checkpoint_bytes


def model_plan(config: dict, model: str) -> ModelPlan:
    """Cells, jobs, GPU jobs, downloads and results of one model."""
    spec, steps = config["models"][model], len(config["steps"])
    shape, recipe, layers = model_shape(config, model), sae_settings(config, model), model_layers(config, model)
    dict_size, categories = recipe["expansion"] * shape.d_model, len(config["corpus"]["categories"])
    cells, seeds = steps * len(layers), len(sae_seeds(config))
    per_category = dict_size + shape.d_model + probe_items(config)
    hub = spec["source"] == "hub"
    return ModelPlan(
        name=model,
        steps=steps,
        cells=cells,
        jobs=model_jobs(config, model),
        sae_jobs=[sae_job_cost(config, model, group) for group in sae_job_groups(config, model, [])],
        score_job=score_job_cost(config, model),
        download_bytes=steps * checkpoint_bytes(config, model) if hub else 0.0,
        sae_weight_bytes=cells * seeds * costs.sae_params(shape.d_model, dict_size) * costs.FLOAT,
        # feature_f1 [features x categories], best_direction [categories x d_model] and best_codes [categories x
        # probe items], float32, per cell, seed and probe set
        score_bytes=cells * seeds * len(probe_sets(config)) * categories * per_category * costs.FLOAT,
        checkpoint_bytes=0.0 if hub else steps * checkpoint_bytes(config, model),
    )


def cube_bytes(config: dict) -> float:
    """The cube: per-cell category variables (per seed; the probe's and the cross-seed lineage without), quality
    scalars per seed, and direction_cosine (layer x other_layer) per seed."""
    from .cube import CELL_VARIABLES, LINEAGE_VARIABLES, PROBE_VARIABLES, QUALITY_VARIABLES, SEED_VARIABLES

    models, steps, seeds = len(config["models"]), len(config["steps"]), len(sae_seeds(config))
    layers = max(spec["n_layers"] for spec in config["models"].values())
    categories = len(config["corpus"]["categories"])
    grid = models * steps * layers
    sets = len(probe_sets(config))
    per_seed = sets * categories * (len(CELL_VARIABLES) + len(LINEAGE_VARIABLES) + 1 + layers) + len(QUALITY_VARIABLES)
    once = sets * categories * (len(PROBE_VARIABLES) + len(SEED_VARIABLES))  # + 1 above: best_feature
    return costs.DOUBLE * grid * (seeds * per_seed + once)


def text_bytes(config: dict) -> float:
    """Text the fetch needs (uncompressed, about a byte a character; whole shards are fetched); 0 when generated."""
    if is_generated(config):
        return 0.0
    return text_fetch_settings(config)["needed_tokens"] * config["corpus"]["text"]["chars_per_token"]


def warnings(config: dict, plan: ModelPlan) -> list[str]:
    """Where the model's configured resources (first attempt) or the GPU fall short of the estimates."""
    spec, found = config["models"][plan.name], []
    resources = spec.get("resources", {})
    host = max(job.host_bytes for job in plan.gpu_jobs) / MIB
    minutes = max(job.seconds for job in plan.gpu_jobs) / 60
    if "mem_mb" in resources and resources["mem_mb"] < host:
        found.append(f"{plan.name}: resources.mem_mb {resources['mem_mb']:,} is below the estimated {host:,.0f} MiB")
    if "runtime" in resources and resources["runtime"] < minutes:
        found.append(f"{plan.name}: resources.runtime {resources['runtime']} min is below the estimated {minutes:.0f}")
    if not resources:
        found.append(f"{plan.name}: no resources set; the rules' base mem_mb and runtime apply (snakemake -n)")
    largest = max(plan.gpu_jobs, key=lambda job: job.gpu_bytes)
    if largest.gpu_bytes > costs.GPU_MEMORY_BYTES:
        found.append(f"{plan.name}: {largest.rule} {largest.what} needs {size(largest.gpu_bytes)} of GPU memory")
    known = costs.pythia_size(spec["repo"]) if spec["source"] == "hub" else None
    if known and (known.n_layers, known.d_model) != (spec["n_layers"], spec["d_model"]):
        found.append(f"{plan.name}: n_layers/d_model differ from {spec['repo']}'s ({known.n_layers}, {known.d_model})")
    return found


def size(value: float) -> str:
    """Bytes in decimal units, three significant digits (1.25 TB, 43.3 GB, 302 MB)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.{2 if scaled < 10 else 1 if scaled < 100 else 0}f} {unit}"
    return f"{value:.0f} B"


def _by_rule(counts: dict[str, int]) -> str:
    return ", ".join(f"{rule} {count:,}" for rule, count in counts.items()) or "none"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


ROW = "{:<14}{:>7}{:>6}{:>7}{:>10}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}"


HEADER = (
    "model",
    "cells",
    "SAE",
    "SLURM",
    "GPU-hours",
    "longest",
    "GPU mem",
    "host mem",
    "state",
    "download",
    "results",
)
LEGEND = (
    "SAE: train_saes jobs; SLURM: jobs submitted (SAE, score, toy checkpoints, text tokenization); GPU mem, host mem,"
    " state: the largest job's; longest: the longest job's minutes; state: training state on disk while it runs."
)


def format_plan(config: dict, source: str) -> str:
    """The plan as printed: per model and in total, jobs by rule, the largest job, downloads, results, options."""
    plans = [model_plan(config, model) for model in config["models"]]
    counts = rule_counts(config)
    cells = sum(plan.cells for plan in plans)
    lines = [
        f"Cost plan of {source}: {len(plans)} model(s) x {len(config['steps'])} step(s), {cells:,} cells; estimates"
        " for a fresh run (constants and assumptions: workflow/featurebirth/costs.py).",
        f"GPU: {costs.GPU_NAME}, {costs.GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s bf16 dense peak at an assumed"
        f" {costs.ASSUMED_MFU:.0%} utilisation, {costs.JOB_START_SECONDS:.0f} s start-up per GPU job.",
        "",
        ROW.format(*HEADER),
    ]
    for plan in plans:
        gpu = max(plan.gpu_jobs, key=lambda job: job.gpu_bytes)
        lines.append(
            ROW.format(
                plan.name,
                f"{plan.cells:,}",
                f"{plan.jobs['train_saes']:,}",
                f"{slurm_jobs(plan.jobs):,}",
                f"{plan.gpu_hours:.1f}",
                _minutes(max(job.seconds for job in plan.gpu_jobs)),
                size(gpu.gpu_bytes),
                size(max(job.host_bytes for job in plan.gpu_jobs)),
                size(max(job.disk_bytes for job in plan.gpu_jobs)),
                size(plan.download_bytes),
                size(plan.results_bytes),
            )
        )
    jobs = [job for plan in plans for job in plan.gpu_jobs]
    largest = max(jobs, key=lambda job: job.gpu_bytes)
    hub_bytes, text = sum(plan.download_bytes for plan in plans), text_bytes(config)
    cube, saes = cube_bytes(config), sum(plan.sae_weight_bytes for plan in plans)
    lines.append(
        ROW.format(
            "total",
            f"{cells:,}",
            f"{counts['train_saes']:,}",
            f"{slurm_jobs(counts):,}",
            f"{sum(plan.gpu_hours for plan in plans):.1f}",
            _minutes(max(job.seconds for job in jobs)),
            size(largest.gpu_bytes),
            size(max(job.host_bytes for job in jobs)),
            size(max(job.disk_bytes for job in jobs)),
            size(hub_bytes + text),
            size(sum(plan.results_bytes for plan in plans) + cube),
        )
    )
    local = {rule: count for rule, count in counts.items() if rule in LOCAL_RULES}
    lines += [
        LEGEND,
        "",
        f"SLURM jobs by rule: {_by_rule({r: c for r, c in counts.items() if r not in LOCAL_RULES})}",
        f"Local jobs (submitting node): {_by_rule(local)}",
        f"All jobs: {sum(counts.values()):,} (as `snakemake -n --quiet rules` counts them)",
        "",
        *_largest_job(config, largest),
        "",
        f"Downloads: hub revisions {size(hub_bytes)} (fp16 weights, {sum(p.jobs.get('prefetch', 0) for p in plans):,}"
        f" revisions), text {size(text)}" + (" (uncompressed; whole shards are fetched)" if text else ""),
        f"Results: SAE weights {size(saes)} (fp32), score files {size(sum(p.score_bytes for p in plans))}, cube"
        f" {size(cube)}" + _toy_checkpoints(plans),
        "",
        "Cutting the bill:",
        f"  - SAE weights stored in bf16: {size(saes)} -> {size(saes / 2)} (saves {size(saes / 2)})",
        *_revision_cleanup(plans),
    ]
    found = [warning for plan in plans for warning in warnings(config, plan)]
    lines += ["", "Warnings:" if found else "Warnings: none", *(f"  - {warning}" for warning in found)]
    return "\n".join(lines)


def _largest_job(config: dict, job: JobCost) -> list[str]:
    """What the largest job's GPU memory, host memory and disk are made of."""
    head = f"Largest GPU job: {job.rule} {job.what}, about {_minutes(job.seconds)}: GPU {size(job.gpu_bytes)}"
    if job.memory is None:
        return [head + f", host {size(job.host_bytes)}"]
    memory, mode = job.memory, config["activations"]["mode"]
    return [
        f"{head} = model to its deepest block {size(memory.model_weights)} (fp16) + SAEs training"
        f" {size(memory.sae_training)} (16 B/parameter);",
        f"  host {size(memory.host)} = baseline {size(costs.HOST_BASELINE_BYTES)} + checkpoint load"
        f" {size(memory.checkpoint_load)} + activations {size(memory.activation_buffer)} ({mode} mode);",
        f"  disk: training state {size(memory.training_state)} beside the group's manifest while it runs (removed at"
        " its end); no node-local scratch (activations never touch disk).",
    ]


def _toy_checkpoints(plans: list[ModelPlan]) -> str:
    toy = sum(plan.checkpoint_bytes for plan in plans)
    return f", toy checkpoints {size(toy)}" if toy else ""


def _revision_cleanup(plans: list[ModelPlan]) -> list[str]:
    """The effect of removing a hub revision once its (model, step)'s SAE and score jobs are done."""
    hub = [plan for plan in plans if plan.download_bytes]
    if not hub:
        return []
    total = sum(plan.download_bytes for plan in hub)
    one_each = sum(plan.download_bytes / plan.steps for plan in hub)
    return [
        f"  - Hub revisions removed once their checkpoint's SAE and score jobs are done: the hub cache peaks at the"
        f" revisions in flight instead of {size(total)}: {size(one_each)} with one checkpoint per model at a time"
        " (downloads stay the same)"
    ]


def print_plan(path: str) -> None:
    """Validate a config file and print its cost plan."""
    from .config import load_config

    print(format_plan(load_config(path), str(path)))
