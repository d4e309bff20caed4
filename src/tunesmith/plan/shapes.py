"""What a model looks like to the estimates: a decoder-only transformer's shape, read from a local
``config.json`` (or known by name for public checkpoints), and its exact parameter counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import UserError


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


class UnknownModel(UserError):
    pass


def normalise_name(name: str) -> str:
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
    key = normalise_name(model)
    if key not in KNOWN_SHAPES:
        raise UnknownModel(f"unknown model {model!r}: pass a directory with config.json or one of: {', '.join(KNOWN_SHAPES)}")
    return KNOWN_SHAPES[key]


def block_params(s: ModelShape) -> tuple[int, int]:
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
    linear, norms = block_params(s)
    embed = s.vocab * s.hidden * (1 if s.tied_embeddings else 2)
    final_norm = s.hidden * (2 if s.norm_bias else 1)
    return s.layers * (linear + norms) + embed + final_norm + s.learned_positions * s.hidden


def lora_param_count(s: ModelShape, r: int) -> int:
    """Adapters of rank r on every linear projection of every block (peft 'all-linear')."""
    return s.layers * sum(r * (i + o) for _, i, o in s.projections())
