"""What is trained: the model as loaded for a method (QLoRA quantizes it) and its PEFT adapter config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.config import RunConfig

VIRTUAL_TOKEN_METHODS = ("prompt_tuning", "prefix_tuning")


class MethodError(RuntimeError):
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
    from tunesmith.models import load_model

    if cfg.method != "qlora":
        model = load_model(base_dir, cfg.train.dtype, cfg.trust_remote_code)
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


def peft_config(cfg: RunConfig, model, base_dir: Path):
    """The PEFT config of the method, or None for full fine-tuning."""
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if cfg.method in ("lora", "qlora"):
        lc = cfg.lora
        layers = lc.layers
        if isinstance(layers, int):
            n = model.config.num_hidden_layers
            layers = list(range(n + layers, n)) if layers < 0 else [layers]
        targets = lc.target_modules
        if layers is not None and targets == "all-linear":
            # PEFT only combines layers_to_transform with explicit module names.
            targets = sorted(
                {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                 if "Linear" in type(mod).__name__ and ".layers." in name}
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
