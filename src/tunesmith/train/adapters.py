"""What is trained: the model as loaded for a method (QLoRA quantizes it) and its PEFT adapter config."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tunesmith.config import RunConfig
from tunesmith.errors import UserError

VIRTUAL_TOKEN_METHODS = ("prompt_tuning", "prefix_tuning")
_LINEAR = re.compile(r"Linear|Conv1D")  # module classes LoRA adapts, quantized ones (Linear4bit) included


class MethodError(UserError, RuntimeError):
    """A method this machine cannot run; the message says what to install or change."""


# report_to name -> modules any one of which transformers' callback accepts
REPORTERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def check_method(cfg: RunConfig) -> None:
    """Fail before anything is loaded when the run cannot run here: QLoRA needs CUDA and bitsandbytes, Liger
    needs liger-kernel, each train.report_to its logger's package."""
    for name in cfg.train.report_to:
        if not any(importlib.util.find_spec(m) for m in REPORTERS[name]):
            raise MethodError(f"train.report_to: {name} is not installed: pip install {REPORTERS[name][0]}")
    if cfg.train.liger and importlib.util.find_spec("liger_kernel") is None:
        raise MethodError("train.liger: liger-kernel is not installed (it needs a CUDA GPU): "
                          "pip install 'tunesmith[gpu]', or set train.liger: false")
    if cfg.method != "qlora":
        return
    import torch

    if not torch.cuda.is_available():
        raise MethodError(
            "method qlora needs an NVIDIA GPU with CUDA (bitsandbytes 4-bit kernels); none is visible here. "
            "Use method: lora on this machine, or run on a CUDA machine after pip install 'tunesmith[gpu]'."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MethodError("method qlora needs bitsandbytes: pip install 'tunesmith[gpu]'")


def load_for_training(cfg: RunConfig, base_dir: Path):
    from tunesmith.models import load_model, training_dtype

    if cfg.method != "qlora":
        model = load_model(base_dir, training_dtype(cfg.train.dtype), cfg.trust_remote_code)
    else:
        import torch
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        q = cfg.qlora
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(base_dir), quantization_config=bnb, dtype=getattr(torch, q.compute_dtype), use_safetensors=True,
            trust_remote_code=cfg.trust_remote_code, device_map={"": torch.cuda.current_device()},
        )
        if q.compute_dtype == "float16":
            # fp16 compute overflows in norms and the LM head: PEFT upcasts every unquantized weight to fp32.
            # With bf16 that is not needed and would cost ~1 GiB of fp32 embeddings on a 1B model.
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.train.gradient_checkpointing in ("auto", True))
    # Packed batches are isolated per example only when no KV cache is built (transformers derives the
    # per-example mask from position_ids only then); training never needs the cache anyway.
    model.config.use_cache = False
    return model


def _layer_indices(layers: list[int] | int | None, n: int) -> list[int] | None:
    """lora.layers as layer indices; an index the model does not have is an error, not silently no adapter."""
    if layers is None:
        return None
    if isinstance(layers, int) and layers < 0:
        if -layers > n:
            raise MethodError(f"lora.layers: {layers} asks for the last {-layers} layers; the model has {n}")
        return list(range(n + layers, n))
    wanted = [layers] if isinstance(layers, int) else layers
    bad = [i for i in wanted if not 0 <= i < n]
    if bad:
        raise MethodError(f"lora.layers: {bad} not in the model's layers 0..{n - 1} "
                          "(a single negative int -N means the last N layers)")
    return sorted(set(wanted))


def _check_targets(targets: list[str], model) -> None:
    """Every lora.target_modules name must name modules of this model (PEFT matches a name or a dotted suffix)."""
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if _LINEAR.search(type(m).__name__) and n})
        raise MethodError(f"lora.target_modules: {missing} not found in the model; its linear modules are "
                          f"{', '.join(linear)} (or use all-linear)")


def peft_config(cfg: RunConfig, model, base_dir: Path):
    """The PEFT config of the method, or None for full fine-tuning."""
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if cfg.method in ("lora", "qlora"):
        lc = cfg.lora
        layers = _layer_indices(lc.layers, model.config.num_hidden_layers)
        # One name in YAML (`target_modules: q_proj`) means that module, not a PEFT regex that matches nothing.
        targets = lc.target_modules if lc.target_modules == "all-linear" or not isinstance(lc.target_modules, str) \
            else [lc.target_modules]
        if targets != "all-linear":
            _check_targets(targets, model)
        if layers is not None and targets == "all-linear":
            # PEFT only combines layers_to_transform with explicit module names: the linear modules (GPT-2's
            # are Conv1D) inside numbered decoder layers, whatever the list is called (`layers`, `h`, `blocks`).
            targets = sorted(
                {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                 if _LINEAR.search(type(mod).__name__) and re.search(r"\.\d+\.", name)}
            )
        return LoraConfig(
            r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=targets,
            layers_to_transform=layers, use_dora=lc.use_dora, use_rslora=lc.use_rslora,
            task_type=TaskType.CAUSAL_LM,
        )
    if cfg.method == "prompt_tuning":
        pt = cfg.prompt_tuning
        kw = {}
        if pt.init_text:
            kw = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": pt.init_text,
                  "tokenizer_name_or_path": str(base_dir)}
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pt.num_virtual_tokens, **kw)
    if cfg.method == "prefix_tuning":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.prompt_tuning.num_virtual_tokens)
    return None
