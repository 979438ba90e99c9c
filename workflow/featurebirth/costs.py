"""What a run costs before it runs: every constant of the cost plan and the arithmetic on them, in one place.

Each constant says where it comes from: published (with the source), derived from published figures, or assumed
(said so, with the reason). The cost plan (`featurebirth plan`, plan.py) and anything else that sizes a job (GPU
and host memory of an SAE job: `sae_job_memory`) use these functions. Nothing here reads a file, the network or
SLURM. Sizes are in bytes, compute in FLOPs, times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- bytes per value
HALF = 2  # float16 / bfloat16: model weights in GPU forward passes (activations.gpu_dtype), held activations
FLOAT = 4  # float32: SAE weights as trained and saved (ae.pt), score-file arrays
DOUBLE = 8  # float64: the cube's and score files' per-category and per-cell scalars
ACTIVATION_BYTES = HALF  # activations an SAE job holds are float16 (activations.STORAGE_DTYPE; a test ties the two)
# SAE training: fp32 weight, its gradient and Adam's two moments (dictionary-learning's trainers keep fp32
# parameters and optimise with torch.optim.Adam; bf16 autocast changes the matmuls, not the stored state)
SAE_TRAINING_BYTES_PER_PARAM = 4 * FLOAT
# the resumable training state (resume.py): weights and both Adam moments per parameter (gradients are not saved)
SAE_STATE_BYTES_PER_PARAM = 3 * FLOAT


# --- Pythia, as published
@dataclass(frozen=True)
class Published:
    """One Pythia size as EleutherAI publishes it."""

    n_layers: int
    d_model: int
    n_params: int  # total parameters
    non_embedding: int  # parameters outside the input embedding and the unembedding

    @property
    def vocab(self) -> int:
        """Rows of each (untied) embedding matrix: (total - non-embedding) / (2 x d_model)."""
        return (self.n_params - self.non_embedding) // (2 * self.d_model)


# Parameter counts: the Pythia model cards (huggingface.co/EleutherAI/pythia-*, "Naming convention and parameter
# count"); depth and width: ../shared/notes/pythia.md and the same cards (tests check that ModelShape reproduces every
# count exactly). Deduped repositories have the same shapes.
PYTHIA = {
    "pythia-70m": Published(6, 512, 70_426_624, 18_915_328),
    "pythia-160m": Published(12, 768, 162_322_944, 85_056_000),
    "pythia-410m": Published(24, 1024, 405_334_016, 302_311_424),
    "pythia-1b": Published(16, 2048, 1_011_781_632, 805_736_448),
    "pythia-1.4b": Published(24, 2048, 1_414_647_808, 1_208_602_624),
    "pythia-2.8b": Published(32, 2560, 2_775_208_960, 2_517_652_480),
    "pythia-6.9b": Published(32, 4096, 6_857_302_016, 6_444_163_072),
    "pythia-12b": Published(36, 5120, 11_846_072_320, 11_327_027_200),
}
# Rows of each embedding matrix, derived from the published counts: the GPT-NeoX-20B tokenizer padded to 50,304 up to
# 2.8b, to 50,432 for 6.9b and 50,688 for 12b. A hub model that is not a published Pythia size is assumed to have 50,304.
HUB_VOCAB = PYTHIA["pythia-70m"].vocab


def pythia_size(repo: str) -> Published | None:
    """The published Pythia size of a hub repository id (e.g. 'EleutherAI/pythia-70m-deduped'), if it is one."""
    return PYTHIA.get(repo.split("/")[-1].removesuffix("-deduped"))


def hub_vocab(repo: str) -> int:
    """Embedding rows of a hub model: its Pythia size's, else HUB_VOCAB."""
    size = pythia_size(repo)
    return size.vocab if size else HUB_VOCAB


MLP_RATIO = 4  # GPT-NeoX / Pythia: d_mlp = 4 x d_model (intermediate_size in every Pythia config)
# Pythia checkpoints store fp16 weights and, per block, GPT-NeoX's causal-mask buffer of max_position_embeddings^2 =
# 2048^2 uint8 (the Hub lists the checkpoints' tensor types as F16 and U8): a revision's weights are n_params x 2 B +
# n_layers x 2048^2 B [derived; the Hub's file listings were not fetched here]. For config/pythia.yaml's 25 revisions
# of 8 sizes this gives 1.25 TB, issue 14's "~1.2 TB" hub cache.
MASK_BYTES_PER_LAYER = 2048**2
# tokenizer.json (GPT-NeoX-20B, about 2.1 MB) and the small config JSON files fetched with every revision
# (hub.WEIGHT_PATTERNS) [estimate]
HUB_TEXT_FILES_BYTES = 2.2e6


@dataclass(frozen=True)
class ModelShape:
    """A GPT-NeoX model's size: depth, widths and the rows of each (untied) embedding matrix."""

    n_layers: int
    d_model: int
    d_mlp: int
    vocab: int

    @property
    def block_params(self) -> int:
        """One block: attention (fused QKV and output, with biases), MLP (in and out, with biases), two LayerNorms."""
        d, m = self.d_model, self.d_mlp
        return (4 * d * d + 4 * d) + (2 * d * m + m + d) + 4 * d

    @property
    def embedding_params(self) -> int:
        """One embedding matrix (Pythia's input embedding and unembedding are separate)."""
        return self.vocab * self.d_model

    @property
    def n_params(self) -> int:
        """Every parameter: both embeddings, the blocks and the final LayerNorm."""
        return 2 * self.embedding_params + self.n_layers * self.block_params + 2 * self.d_model

    def params_through(self, deepest: int) -> int:
        """What a model truncated after block `deepest` keeps (models.load_truncated): the input embedding and
        blocks 0..deepest."""
        return self.embedding_params + (deepest + 1) * self.block_params


def published_shape(name: str) -> ModelShape:
    """The shape of a published Pythia size (e.g. 'pythia-70m')."""
    size = PYTHIA[name]
    return ModelShape(size.n_layers, size.d_model, MLP_RATIO * size.d_model, size.vocab)


def hub_revision_bytes(shape: ModelShape) -> float:
    """What one hub revision downloads: fp16 weights, the per-block uint8 masks and the tokenizer and config files."""
    return shape.n_params * HALF + shape.n_layers * MASK_BYTES_PER_LAYER + HUB_TEXT_FILES_BYTES


def sae_params(d_model: int, dict_size: int) -> int:
    """One SAE's parameters: encoder and decoder matrices, the encoder bias and the decoder (pre-encoder) bias."""
    return 2 * d_model * dict_size + dict_size + d_model


# --- compute per token
def forward_flops(shape: ModelShape, deepest: int) -> int:
    """FLOPs per token of a forward pass truncated after block `deepest`: 2 per weight (multiply, add); embedding
    lookups cost none; attention over a short context (seq_len 64-128 << d_model x 12) is left out."""
    return 2 * (deepest + 1) * shape.block_params


def full_forward_flops(shape: ModelShape) -> int:
    """FLOPs per token of a whole forward pass with the unembedding (the score job's next-token losses)."""
    return 2 * (shape.n_layers * shape.block_params + shape.embedding_params)


# Per token and SAE weight: encoder and decoder each 2 FLOPs forward, twice that backward: 6 x 2 over the two
# d_model x dict_size matrices (the decoder runs dense in dictionary-learning's TopK/BatchTopK/ReLU SAEs).
SAE_TRAINING_FLOPS_PER_WEIGHT = 6


def sae_training_flops(d_model: int, dict_size: int) -> int:
    """FLOPs per training token of one SAE (forward and backward through encoder and decoder)."""
    return SAE_TRAINING_FLOPS_PER_WEIGHT * 2 * d_model * dict_size


def sae_inference_flops(d_model: int, dict_size: int) -> int:
    """FLOPs per token of one SAE encoding and decoding (the score job's quality and spliced passes)."""
    return 2 * 2 * d_model * dict_size


# --- the GPU and how well it is used
GPU_NAME = "NVIDIA H100 SXM 80 GB"
# bf16/fp16 dense tensor-core peak, NVIDIA H100 datasheet (1,979 TFLOP/s is the 2:4-sparsity figure)
GPU_PEAK_FLOPS = 989e12
GPU_MEMORY_BYTES = 80e9  # HBM3, NVIDIA H100 SXM datasheet
# [assumption, not measured here: this task had no GPU] the share of peak reached on the FLOPs above. SAE updates
# at small batches spend as much time in Adam and decoder-norm passes over the fp32 weights as in the matmuls, and
# small models in kernel launches; dictionary-learning's own run (Pythia-70m, 2 SAEs of 4,096, ctx 128, ~83k
# tokens/s on an RTX 3090, ../shared/notes/scale.md) comes to ~6 TFLOP/s by this module's arithmetic, ~9% of that
# card's 71 TFLOP/s fp16 tensor peak. 20% on an H100 at Pythia widths >= 2,048 is a middle assumption: measure it
# (the SAE config.json records tokens_per_second) and change it here.
ASSUMED_MFU = 0.20
# [assumption] fixed cost of one update of one SAE (a layer and seed) outside its FLOPs: Python and ~60 kernel
# launches of a dictionary-learning TopK update at ~10 us each; it dominates for models up to 410m, where the FLOPs
# are tiny
UPDATE_OVERHEAD_SECONDS = 1e-3
# [assumption] a GPU job's start: Python, torch with CUDA, transformers and dictionary-learning imported, CUDA context
JOB_START_SECONDS = 60.0
# [assumption] reading a checkpoint from the shared hub cache (parallel file systems give one client 1-several GB/s)
CHECKPOINT_READ_BYTES_PER_SECOND = 1e9
# [assumption] host memory of a GPU job before its data: Python, torch with CUDA, transformers, dictionary-learning
HOST_BASELINE_BYTES = 4e9


def gpu_seconds(flops: float) -> float:
    """Seconds of GPU time for `flops` at ASSUMED_MFU of GPU_PEAK_FLOPS."""
    return flops / (GPU_PEAK_FLOPS * ASSUMED_MFU)


def checkpoint_read_seconds(weight_bytes: float) -> float:
    """Seconds to read a checkpoint's weights from the shared cache."""
    return weight_bytes / CHECKPOINT_READ_BYTES_PER_SECOND


@dataclass(frozen=True)
class SAEJobMemory:
    """Memory of one SAE job (one layer group of a checkpoint), part by part."""

    model_weights: int  # GPU: the model truncated after the group's deepest block, fp16
    sae_training: int  # GPU: every SAE of the group trained in lockstep, 16 B per parameter
    activation_buffer: int  # host: the chunk of activations held, every layer of the group, float16
    checkpoint_load: int  # host: the fp16 checkpoint while it loads, before truncation and the move to the GPU
    training_state: int  # disk, beside the group's manifest while the job runs: weights and Adam moments

    @property
    def gpu(self) -> int:
        return self.model_weights + self.sae_training

    @property
    def host(self) -> float:
        """Host peak, counting the load and the buffer together (an upper bound: the load is freed first)."""
        return HOST_BASELINE_BYTES + self.checkpoint_load + self.activation_buffer


def sae_job_memory(
    shape: ModelShape, layers: list[int], n_seeds: int, dict_size: int, held_tokens: int
) -> SAEJobMemory:
    """The memory arithmetic of an SAE job training one SAE per layer of `layers` and seed from one truncated forward
    pass: fp16 weights up to the deepest layer and 16 B per SAE parameter on the GPU; `held_tokens` activations per
    layer (one chunk, shared by the seeds) in host memory; 12 B per SAE parameter of training state."""
    saes = len(layers) * n_seeds * sae_params(shape.d_model, dict_size)
    return SAEJobMemory(
        model_weights=shape.params_through(max(layers)) * HALF,
        sae_training=saes * SAE_TRAINING_BYTES_PER_PARAM,
        activation_buffer=held_tokens * len(layers) * shape.d_model * ACTIVATION_BYTES,
        checkpoint_load=shape.n_params * HALF,
        training_state=saes * SAE_STATE_BYTES_PER_PARAM,
    )
