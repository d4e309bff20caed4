"""GPU memory and step-time estimates for full, LoRA and QLoRA fine-tuning, from a model's shape alone.

Nothing is loaded: the shape (shapes.py) comes from a local ``config.json`` or from a small table of
known architectures, and the parameter count is computed exactly from it.

Assumptions (the numbers are meant for "will it fit, roughly how long", not for the last 10%):

- Training runs in bf16 with AdamW, as tunesmith's trainer (transformers + peft + trl) does.
- Full fine-tuning uses the mixed-precision accounting of the ZeRO paper: 2 bytes of bf16 weights,
  2 bytes of gradient and 12 bytes of fp32 optimizer state (master copy, m, v) per parameter.
- LoRA keeps the frozen base in bf16. QLoRA stores the base's linear layers in NF4 with double
  quantisation (0.5 byte per weight + 1 byte absmax per 64-block + fp32 per 256 absmax blocks);
  embeddings, LM head and norms stay bf16. Adapters are fp32 (peft's default) with fp32 gradients
  and two fp32 Adam moments: 16 bytes per adapter parameter.
- Activations are counted per token, so ``batch x seq_len`` tokens per micro-batch is what matters
  (for padding to the longest sequence, pass the padded length; for padding-free or packed batches,
  the mean real length). Per decoder layer we count what autograd keeps in bf16: both RMSNorms
  (input, fp32 upcast, output), q/k/v, rotated q/k, the attention output and its contiguous copy,
  and the four intermediate-width MLP tensors. Attention scores are never materialised (SDPA/flash).
  With gradient checkpointing only each layer's input is kept, plus one layer recomputed during
  backward together with its gradients (``_BACKWARD_FACTOR``).
- The loss uses TRL's chunked LM head, so full logits never exist: only a (4096 x 32768) bf16 tile,
  an fp32 gradient of the final hidden state and, for full fine-tuning, an fp32 LM-head gradient.
- ``_ACTIVATION_CALIBRATION`` and ``_WORKSPACE_BYTES`` were fitted to the peaks measured on one H100
  (shared/bench/peer_bench_results.md: Llama-3.2-1B and Qwen2.5-0.5B shapes, LoRA r=16 on all seven
  projections, gradient checkpointing, torch.cuda.max_memory_allocated). They absorb what the
  enumeration misses: autocast copies, cuBLAS/cuDNN workspaces, allocator rounding. With them the
  estimate lands within 15% of every bench config (A-F, A16, B16, B32) except packing (G, +28%).
- ``peak_allocated`` is comparable to ``torch.cuda.max_memory_allocated``; ``total`` adds the CUDA
  context and allocator fragmentation (``_CUDA_CONTEXT_BYTES``, ``_FRAGMENTATION``), which is what
  must be free on the card.
- Step time = compute + host. Compute is FLOPs / (peak bf16 TFLOP/s x MFU); FLOPs per token are 6N for
  full training, 4N + 6N_lora for adapters (the frozen base needs no weight gradient), +2N when
  checkpointing recomputes the forward, plus causal attention 6 * layers * d_attn * seq_len. Host is a
  fixed launch cost per decoder layer per micro-batch (``_HOST_S_PER_LAYER``): the bench profile found
  the GPU idle about 60% of each step for a 1B model, and a Qwen-0.5B step as slow as a Llama-1B one.
  Default MFU: 0.2 under 3B parameters (small matmuls), 0.4 above. QLoRA steps take ``_QLORA_SLOWDOWN``
  longer (bench: +19%). With these, bench configs A, B, D, E, F come out within about 20%.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from tunesmith.plan.shapes import ModelShape, block_params, lora_param_count, param_count
# Callers from before shapes.py existed import these from here.
from tunesmith.plan.shapes import KNOWN_SHAPES, resolve_shape, shape_from_config  # noqa: F401

Method = Literal["full", "lora", "qlora"]
GIB = 1024**3

_BF16 = 2
_FP32 = 4
_NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
_FULL_STATE_BYTES = {"weights": 2, "gradients": 2, "optimizer": 12}
_ADAPTER_BYTES = {"weights": 4, "gradients": 4, "optimizer": 8}
_BACKWARD_FACTOR = 2.0
_ACTIVATION_CALIBRATION = 1.2
_WORKSPACE_BYTES = int(0.35 * GIB)
_CUDA_CONTEXT_BYTES = int(0.6 * GIB)
_FRAGMENTATION = 0.08
_LOSS_TOKEN_TILE = 4096
_LOSS_VOCAB_TILE = 32768
_LOSS_TOKEN_FRACTION = 0.7  # share of tokens that carry a label; the chunked head projects only those
_QLORA_SLOWDOWN = 1.2
_SMALL_MODEL_PARAMS = 3e9
_HOST_S_PER_LAYER = 0.017


def _layer_activation_bytes(s: ModelShape, lora_r: int) -> float:
    """bf16 bytes autograd keeps per token for one decoder block (see module docstring)."""
    h, i = s.hidden, s.intermediate
    norms = 2 * (_BF16 * h + _FP32 * h + _BF16 * h)
    attention = _BF16 * ((s.q_dim + 2 * s.kv_dim) + (s.q_dim + s.kv_dim) + 2 * s.q_dim)
    mlp = _BF16 * i * (4 if s.gated_mlp else 2)
    adapters = _BF16 * lora_r * len(s.projections())
    return norms + attention + mlp + adapters


@dataclass
class MemoryEstimate:
    model: str
    method: str
    params: int
    trainable_params: int
    tokens_per_micro_batch: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    adapters_gib: float
    activations_gib: float
    workspace_gib: float
    peak_allocated_gib: float
    cuda_overhead_gib: float
    total_gib: float

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_memory(
    shape: ModelShape,
    method: Method,
    seq_len: int = 1024,
    batch: int = 1,
    grad_checkpointing: bool = True,
    lora_r: int = 16,
) -> MemoryEstimate:
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"method must be full, lora or qlora, not {method!r}")
    n = param_count(shape)
    tokens = seq_len * batch
    linear, _ = block_params(shape)

    if method == "full":
        trainable = n
        weights = n * _FULL_STATE_BYTES["weights"]
        grads = n * _FULL_STATE_BYTES["gradients"]
        optim = n * _FULL_STATE_BYTES["optimizer"]
        adapters = 0.0
    else:
        trainable = lora_param_count(shape, lora_r)
        quantised = shape.layers * linear if method == "qlora" else 0
        weights = (n - quantised) * _BF16 + quantised * _NF4_BYTES_PER_WEIGHT
        adapters = trainable * _ADAPTER_BYTES["weights"]
        grads = trainable * _ADAPTER_BYTES["gradients"]
        optim = trainable * _ADAPTER_BYTES["optimizer"]

    per_layer = _layer_activation_bytes(shape, lora_r if method != "full" else 0)
    if grad_checkpointing:
        body = shape.layers * _BF16 * shape.hidden + _BACKWARD_FACTOR * per_layer
    else:
        body = shape.layers * per_layer + (_BACKWARD_FACTOR - 1) * per_layer
    loss_tokens = min(int(tokens * _LOSS_TOKEN_FRACTION), _LOSS_TOKEN_TILE)
    loss = loss_tokens * min(shape.vocab, _LOSS_VOCAB_TILE) * _BF16 + tokens * shape.hidden * _FP32
    if method == "full":
        loss += shape.vocab * shape.hidden * (_FP32 + _BF16)  # fp32 LM-head grad accumulator, then cast
    activations = _ACTIVATION_CALIBRATION * (tokens * body + loss)

    peak = weights + grads + optim + adapters + activations + _WORKSPACE_BYTES
    overhead = _CUDA_CONTEXT_BYTES + _FRAGMENTATION * peak
    g = lambda b: round(b / GIB, 3)  # noqa: E731
    return MemoryEstimate(
        model=shape.name,
        method=method,
        params=n,
        trainable_params=trainable,
        tokens_per_micro_batch=tokens,
        weights_gib=g(weights),
        gradients_gib=g(grads),
        optimizer_gib=g(optim),
        adapters_gib=g(adapters),
        activations_gib=g(activations),
        workspace_gib=g(_WORKSPACE_BYTES),
        peak_allocated_gib=g(peak),
        cuda_overhead_gib=g(overhead),
        total_gib=g(peak + overhead),
    )


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float  # dense peak from the datasheet (T4: fp16, it has no bf16)
    memory_gib: float


GPUS: dict[str, GPU] = {
    "h100": GPU("H100 SXM 80GB", 989.0, 80),
    "a100": GPU("A100 80GB", 312.0, 80),
    "l4": GPU("L4 24GB", 121.0, 24),
    "t4": GPU("T4 16GB", 65.0, 16),
    "cpu": GPU("CPU (rough)", 1.0, 0),
}


def fits(total_gib: float, gpu_memory_gib: float | None = None) -> dict[str, bool]:
    """Whether `total_gib` fits on each listed GPU (not the CPU row) and, keyed "8GiB", on a card of that size."""
    verdict = {k: total_gib <= g.memory_gib for k, g in GPUS.items() if g.memory_gib}
    if gpu_memory_gib is not None:
        verdict[f"{gpu_memory_gib:g}GiB"] = total_gib <= gpu_memory_gib
    return verdict


def default_mfu(shape: ModelShape) -> float:
    return 0.2 if param_count(shape) < _SMALL_MODEL_PARAMS else 0.4


@dataclass
class StepTimeEstimate:
    gpu: str
    mfu: float
    flops_per_token: float
    tokens_per_step: int
    tokens_per_second: float
    seconds_per_step: float
    fits_in_memory: bool | None

    def to_dict(self) -> dict:
        return asdict(self)


def flops_per_token(shape: ModelShape, method: Method, seq_len: int, grad_checkpointing: bool, lora_r: int = 16) -> float:
    n = param_count(shape)
    base = 6 * n if method == "full" else 4 * n + 6 * lora_param_count(shape, lora_r)
    recompute = 2 * n if grad_checkpointing else 0
    attention = 6 * shape.layers * shape.q_dim * seq_len
    return base + recompute + attention


def estimate_step_time(
    shape: ModelShape,
    method: Method,
    seq_len: int,
    batch: int,
    grad_accum: int = 1,
    gpu: str = "h100",
    mfu: float | None = None,
    grad_checkpointing: bool = True,
    lora_r: int = 16,
    total_gib: float | None = None,
) -> StepTimeEstimate:
    if gpu not in GPUS:
        raise ValueError(f"unknown gpu {gpu!r}; choose one of {', '.join(GPUS)}")
    spec = GPUS[gpu]
    mfu = default_mfu(shape) if mfu is None else mfu
    fpt = flops_per_token(shape, method, seq_len, grad_checkpointing, lora_r)
    tokens = seq_len * batch * grad_accum
    seconds = tokens * fpt / (spec.bf16_tflops * 1e12 * mfu) + grad_accum * shape.layers * _HOST_S_PER_LAYER
    if method == "qlora":
        seconds *= _QLORA_SLOWDOWN
    fits = None if spec.memory_gib == 0 or total_gib is None else total_gib <= spec.memory_gib
    return StepTimeEstimate(spec.name, mfu, fpt, tokens, round(tokens / seconds, 1), round(seconds, 4), fits)
