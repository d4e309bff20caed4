"""GPU memory and step-time estimates for full, LoRA and QLoRA fine-tuning, from a model's shape alone.

Nothing is loaded: the shape comes from a local ``config.json`` or from a small table of known
architectures, and the parameter count is computed exactly from it.

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

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

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


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a decoder-only transformer that memory and FLOPs depend on."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    head_dim: int | None = None
    qkv_bias: bool = False  # Qwen2 puts a bias on q, k and v only
    gated_mlp: bool = True  # SwiGLU (gate, up, down); False for GPT-2-style (fc, proj)
    linear_bias: bool = False  # GPT-2: every linear layer has a bias
    norm_bias: bool = False  # LayerNorm (weight + bias) instead of RMSNorm
    learned_positions: int = 0  # GPT-2's absolute position table
    fused_qkv: bool = False  # one qkv projection (Phi-3, GPT-2): LoRA gets one A/B pair for it, not three
    fused_gate_up: bool = False  # Phi-3's gate_up_proj
    extra_block_params: int = 0  # per block: Qwen3's q/k norms, Gemma 2's sandwich norms, Llama's o/MLP biases

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.d_head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.d_head

    def projections(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of every linear layer in one decoder block."""
        h, i = self.hidden, self.intermediate
        if self.fused_qkv:
            attn = [("qkv_proj", h, self.q_dim + 2 * self.kv_dim), ("o_proj", self.q_dim, h)]
        else:
            attn = [("q_proj", h, self.q_dim), ("k_proj", h, self.kv_dim), ("v_proj", h, self.kv_dim), ("o_proj", self.q_dim, h)]
        if not self.gated_mlp:
            mlp = [("fc", h, i), ("proj", i, h)]
        elif self.fused_gate_up:
            mlp = [("gate_up_proj", h, 2 * i), ("down_proj", i, h)]
        else:
            mlp = [("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]
        return attn + mlp


# Shapes of public checkpoints, so `--model llama-3.1-8b` works without any download.
KNOWN_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in [
        ModelShape("smollm2-135m", 576, 30, 9, 3, 1536, 49152, True),
        ModelShape("smollm2-360m", 960, 32, 15, 5, 2560, 49152, True),
        # the second embedded model: q/k norms over one head and the sandwich norms are its extra block weights
        ModelShape("gemma3-270m", 640, 18, 4, 1, 2048, 262144, True, head_dim=256,
                   extra_block_params=2 * 256 + 2 * 640),
        ModelShape("qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, True, qkv_bias=True),
        ModelShape("qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, True, qkv_bias=True),
        ModelShape("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, False, qkv_bias=True),
        ModelShape("llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, True, head_dim=64),
        ModelShape("llama-3.2-3b", 3072, 28, 24, 8, 8192, 128256, True, head_dim=128),
        ModelShape("llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256, False),
        ModelShape("mistral-7b", 4096, 32, 32, 8, 14336, 32768, False),
        ModelShape("mistral-7b-v0.1", 4096, 32, 32, 8, 14336, 32000, False),  # v0.1 and v0.2: the smaller vocabulary
        ModelShape("llama-2-7b", 4096, 32, 32, 32, 11008, 32000, False),
        ModelShape("llama-2-13b", 5120, 40, 40, 40, 13824, 32000, False),
        ModelShape("llama-3.1-70b", 8192, 80, 64, 8, 28672, 128256, False),
    ]
}

_ALIASES = {"gemma-3-270m": "gemma3-270m", "llama-3-8b": "llama-3.1-8b", "mistral-7b-v0.3": "mistral-7b",
            "mistral-7b-v0.2": "mistral-7b-v0.1"}


class UnknownModel(ValueError):
    pass


def _normalise(name: str) -> str:
    """Hub ids to shape keys: meta-llama/Meta-Llama-3.1-8B-Instruct, mistralai/Mistral-7B-Instruct-v0.3,
    meta-llama/Llama-2-7b-chat-hf (tuning variants share the base's shape)."""
    key = name.strip().lower().split("/")[-1].removeprefix("meta-")
    key = "-".join(part for part in key.split("-") if part not in ("instruct", "chat", "hf", "it"))
    return _ALIASES.get(key, key)


def _default_tied(model_type: str | None) -> bool:
    """What transformers assumes when config.json omits tie_word_embeddings (Gemma's official configs do, and tie)."""
    try:
        from transformers import CONFIG_MAPPING

        return bool(CONFIG_MAPPING[model_type]().tie_word_embeddings)
    except Exception:  # unknown or missing model_type: the Llama-style default
        return False


def _extra_block_params(cfg: dict, heads: int) -> int:
    """Weights per block beyond the common layout: q/k norms over one head (Qwen3, Gemma 3), the pre/post
    feed-forward norms of Gemma 2 and 3, and the o_proj and MLP biases of Llama-style `attention_bias` /
    `mlp_bias` (the q/k/v biases are counted as qkv_bias)."""
    model_type, h, i = cfg.get("model_type"), cfg["hidden_size"], cfg["intermediate_size"]
    d_head = cfg.get("head_dim") or h // heads
    qk = 2 * d_head if model_type in ("qwen3", "gemma3_text", "gemma3") else 0
    sandwich = 2 * h if model_type in ("gemma2", "gemma3_text", "gemma3") else 0
    o_bias = h if cfg.get("attention_bias") and model_type != "qwen2" else 0
    mlp_bias = 2 * i + h if cfg.get("mlp_bias") else 0
    return qk + sandwich + o_bias + mlp_bias


def shape_from_config(config: dict, name: str = "model") -> ModelShape:
    """Read a transformers ``config.json`` dict (Llama, Mistral, SmolLM, Qwen2/3, Gemma 1-3, Phi-3, GPT-2 families)."""
    cfg = config.get("text_config", config)  # multimodal configs nest the language model's
    try:
        if "n_embd" in cfg:  # GPT-2 naming
            h = cfg["n_embd"]
            return ModelShape(
                name, h, cfg["n_layer"], cfg["n_head"], cfg["n_head"], cfg.get("n_inner") or 4 * h,
                cfg["vocab_size"], cfg.get("tie_word_embeddings", True), gated_mlp=False, linear_bias=True,
                norm_bias=True, learned_positions=cfg.get("n_positions", 1024), fused_qkv=True,
            )
        heads = cfg["num_attention_heads"]
        return ModelShape(
            name=name,
            hidden=cfg["hidden_size"],
            layers=cfg["num_hidden_layers"],
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            intermediate=cfg["intermediate_size"],
            vocab=cfg["vocab_size"],
            tied_embeddings=bool(cfg.get("tie_word_embeddings", _default_tied(cfg.get("model_type")))),
            head_dim=cfg.get("head_dim"),
            qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") == "qwen2",
            fused_qkv=cfg.get("model_type") == "phi3",
            fused_gate_up=cfg.get("model_type") == "phi3",
            extra_block_params=_extra_block_params(cfg, heads),
        )
    except KeyError as exc:
        raise UnknownModel(f"config.json lacks {exc.args[0]!r}; cannot derive the model shape") from None


def resolve_shape(model: str) -> ModelShape:
    """A local directory with config.json, a config.json path, a .gguf file, or a name from KNOWN_SHAPES."""
    if not model.strip():
        raise UnknownModel(f"no model given: pass a directory with config.json or one of: {', '.join(KNOWN_SHAPES)}")
    path = Path(model)
    if path.suffix.lower() == ".gguf":  # the shape is the converted model's: converted once, as training does
        from tunesmith.models import ModelError, resolve_model

        try:
            path = resolve_model(path, setting="--model")
        except ModelError as exc:
            raise UnknownModel(str(exc)) from None
    cfg_path = path / "config.json" if path.is_dir() else path
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise UnknownModel(f"{cfg_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        return shape_from_config(config, name=str(path))
    if path.is_dir():
        raise UnknownModel(f"{path} has no config.json")
    key = _normalise(model)
    if key not in KNOWN_SHAPES:
        raise UnknownModel(f"unknown model {model!r}: pass a directory with config.json or one of: {', '.join(KNOWN_SHAPES)}")
    return KNOWN_SHAPES[key]


def _block_params(s: ModelShape) -> tuple[int, int]:
    """(linear-layer parameters, other parameters) of one decoder block."""
    linear = sum(i * o for _, i, o in s.projections())
    if s.qkv_bias:
        linear += s.q_dim + 2 * s.kv_dim
    if s.linear_bias:
        linear += sum(o for _, _, o in s.projections())
    norms = 2 * s.hidden * (2 if s.norm_bias else 1) + s.extra_block_params
    return linear, norms


def param_count(s: ModelShape) -> int:
    """Exact parameter count, tied embeddings counted once."""
    linear, norms = _block_params(s)
    embed = s.vocab * s.hidden * (1 if s.tied_embeddings else 2)
    final_norm = s.hidden * (2 if s.norm_bias else 1)
    return s.layers * (linear + norms) + embed + final_norm + s.learned_positions * s.hidden


def lora_param_count(s: ModelShape, r: int) -> int:
    """Adapters of rank r on every linear projection of every block (peft 'all-linear')."""
    return s.layers * sum(r * (i + o) for _, i, o in s.projections())


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
    linear, _ = _block_params(shape)

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
