"""The run config: one pydantic model, every default documented here and nowhere else.

A YAML file a TRL or axolotl user can read without docs:

    name: legal-bot
    model: smollm2-135m-instruct      # or a local model dir, or ORG/NAME from the Hugging Face cache
    method: lora
    data:
      train: data/train.jsonl
      val: data/val.jsonl
      test: data/test.jsonl
      rules: data/rules.yaml
    lora: {r: 16, alpha: 32, target_modules: all-linear}
    train: {epochs: 2, batch_size: 8, lr: 2.0e-4}

`tunesmith config example` prints a complete file with every field and its comment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from tunesmith.errors import UserError
from tunesmith.eval_settings import EvalSettings
from tunesmith.sections import Section as _Section
from tunesmith.templates import is_template_name
from tunesmith.train.objectives import REGISTRY as OBJECTIVES


class MixSource(_Section):
    path: str = Field(description="Extra chat data mixed into training (e.g. general chat against forgetting).")
    weight: float = Field(0.1, gt=0, le=1, description="Fraction of the final training set drawn from this source.")


class DataConfig(_Section):
    train: str | None = Field(None, description="Training file (any format `tunesmith data check` reads).")
    val: str | None = Field(None, description="Validation file for eval loss and early stopping.")
    test: str | None = Field(None, description="Sealed test file used by `tunesmith eval`.")
    format: str = Field("auto", description="auto|chat|alpaca|sharegpt|classification|preference|text.")
    rules: str | None = Field(None, description="Rules file: the format contract checked in data, eval and serving.")
    system_prompt: str | None = Field(
        None, description="Added to every conversation that has none. Conversations that carry one keep theirs."
    )
    chat_template: str | None = Field(
        None, description="For a tokenizer without a chat template (base models), or to replace its own: 'chatml' "
        "(ChatML turns, each ended by the tokenizer's EOS token so the model stops where it learned to), the name of "
        "a template TRL ships (gemma3, llama3, qwen2_5, phi3…: the family's own turn tokens) or a .jinja file. It is "
        "saved with the trained model, so eval, merge and serving use it too.",
    )
    max_seq_len: int = Field(1024, ge=16, description="Token limit per example, chat template applied.")
    over_length: Literal["truncate", "drop", "error"] = Field(
        "truncate",
        description="What happens to longer examples: counted and reported either way. An example that truncation "
        "leaves with no trained token is dropped and counted; one with none before truncation stops training.",
    )
    mix: list[MixSource] = Field(default_factory=list, description="Extra sources mixed in by weight.")


class LoraSettings(_Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: str | list[str] = Field("all-linear", description="'all-linear' or a list of module names.")
    layers: list[int] | int | None = Field(
        None,
        description="Only adapt these layer indices; a negative int N adapts the last |N| layers. "
        "Fewer, later layers make backward cheaper (the quickstart uses this on CPU).",
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r).")


class PromptTuningSettings(_Section):
    num_virtual_tokens: int = Field(20, ge=1, description="Trainable virtual tokens (prompt/prefix tuning).")
    init_text: str | None = Field(None, description="Initialise prompt tuning from this text (prompt_tuning only).")


class QloraSettings(_Section):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights.")
    double_quant: bool = Field(True, description="Also quantize the quantization constants (saves ~0.4 bit/param).")
    compute_dtype: Literal["bfloat16", "float16"] = Field(
        "bfloat16", description="Dtype the 4-bit weights are dequantized to for matmuls (float16 on pre-Ampere GPUs)."
    )


class DpoSettings(_Section):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model (higher: closer).")
    loss_type: Literal[  # the losses TRL's DPOTrainer computes (it names a wrong one only at the first step)
        "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
        "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
    ] = Field("sigmoid", description="TRL DPO loss: sigmoid (DPO), ipo, hinge, robust, apo_zero, …")


class GrpoSettings(_Section):
    num_generations: int = Field(
        4, ge=2, description="Completions sampled per prompt; rewards are compared within them."
    )
    max_completion_length: int = Field(256, ge=1, description="Token limit per sampled completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for the completions.")
    beta: float = Field(0.0, ge=0, description="KL penalty towards the reference model (0: no reference model kept).")


class TrainSettings(_Section):
    epochs: float = Field(1.0, gt=0, description="Passes over the training data.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    batch_size: int = Field(4, ge=1, description="Examples per device per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    scheduler: Literal[  # transformers' schedulers that need no extra arguments
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
        "reduce_lr_on_plateau",
    ] = Field("cosine", description="Learning-rate schedule after warmup: cosine, linear, constant_with_warmup…")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    seed: int = Field(0, description="Seed for weights init, data order and dropout.")
    packing: bool = Field(
        True,
        description="Padding-free packing: examples of a batch concatenated, no cross-example attention. "
        "Turned off automatically for prompt_tuning/prefix_tuning (virtual tokens are prepended per example).",
    )
    logging_steps: int = Field(5, ge=1, description="Log train loss every N steps.")
    eval_every: int | None = Field(None, ge=1, description="Eval loss on val every N steps (None: once per epoch).")
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N steps (None: no checkpoints).")
    save_total_limit: int | None = Field(
        3, ge=1, description="Checkpoints kept on disk (oldest deleted first; the best one is never deleted)."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evals without improvement (needs data.val; implies keep_best)."
    )
    keep_best: bool = Field(
        False, description="Checkpoint at every eval and end with the lowest-val-loss weights (needs data.val)."
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Trade compute for activation memory. auto: off on CPU; on a GPU, on for the plain path and "
        "QLoRA, and on the fast path only when a row's estimated memory does not fit the GPU.",
    )
    performance: Literal["auto", "on", "off"] = Field(
        "auto",
        description="The fast path for sft/pretrain with lora/qlora/full (token-budget rows, document-masked "
        "attention, loss on trained tokens only; FlexAttention, per-layer torch.compile and Liger's fused loss "
        "on a CUDA GPU). auto/on: wherever the run qualifies, CPU included (the quickstart trains 1.5x faster "
        "on it on 2 CPU cores) | off: the plain TRL SFTTrainer path.",
    )
    row_tokens: int | None = Field(
        None,
        ge=128,
        multiple_of=128,
        description="Fast path: token slots per micro-batch row (a multiple of 128). None: about batch_size "
        "examples of the mean length, never fewer than the longest example.",
    )
    @field_validator("performance", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `on`/`off` as true/false: take them as the words the user wrote.
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    liger: bool = Field(
        False,
        description="Plain path: Liger's RMSNorm/SwiGLU/RoPE kernels through TRL (CUDA, liger-kernel installed). "
        "The fast path uses Liger's fused cross-entropy whenever liger-kernel is installed.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Training dtype. auto: bf16 on a GPU and on a CPU with AMX (Sapphire Rapids and later), "
        "fp32 on other CPUs; evaluation loads fp32 on any CPU | float32 | bfloat16 | float16."
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Experiment trackers fed by transformers (their packages must be installed)."
    )


class RunConfig(_Section):
    name: str = Field("run", description="Run name; the run directory is output_dir/name.")
    model: str = Field(
        "smollm2-135m-instruct",
        description="Local model dir, a .gguf file (dequantized once into the model cache), a Hugging Face repo id "
        "already in the local cache (`hf download ORG/NAME`; nothing is downloaded), an embedded model's name "
        "(smollm2-135m-instruct, gemma3-270m), or a finished run dir (two-stage recipes: its base model with its "
        "adapter merged in, or its full model).",
    )
    trust_remote_code: bool = Field(False, description="Never on unless you trust the model's code.")
    method: Literal["lora", "qlora", "full", "prompt_tuning", "prefix_tuning"] = Field(
        "lora", description="What is trained."
    )
    objective: Literal[tuple(OBJECTIVES)] = Field(  # type: ignore[valid-type]  # one registry owns the names
        "sft",
        description="sft: chat, loss on assistant turns | dpo: preference pairs | pretrain: raw text, every token "
        "| grpo: sampled answers rewarded by the fraction of data.rules they pass.",
    )
    output_dir: str = Field("runs", description="Parent directory of run directories.")
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    prompt_tuning: PromptTuningSettings = Field(default_factory=PromptTuningSettings)
    qlora: QloraSettings = Field(default_factory=QloraSettings)
    dpo: DpoSettings = Field(default_factory=DpoSettings)
    grpo: GrpoSettings = Field(default_factory=GrpoSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_validator("name")
    @classmethod
    def _one_directory(cls, v: str) -> str:
        # A name with a slash or `..` would put the run directory outside output_dir.
        if not v or v in (".", "..") or "/" in v or "\\" in v:
            raise ValueError(f"{v!r} must be one directory name (no '/', not '.' or '..')")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        t = self.train
        if sum(m.weight for m in self.data.mix) >= 1:
            raise ValueError("data.mix weights must add up to less than 1 (the rest is the main training set)")
        if self.objective == "grpo" and (t.early_stopping_patience or t.keep_best):
            raise ValueError("train.early_stopping_patience / train.keep_best need a val loss, which objective "
                             "grpo does not compute")
        if (t.early_stopping_patience or t.keep_best) and self.data.train and not self.data.val:
            raise ValueError("train.early_stopping_patience / train.keep_best need data.val (a validation file)")
        if self.objective == "grpo":
            if self.data.train and not self.data.rules:
                raise ValueError(
                    "objective grpo needs data.rules: the reward is the fraction of rules an answer passes"
                )
            if (t.batch_size * t.grad_accum) % self.grpo.num_generations:
                raise ValueError(
                    f"objective grpo: train.batch_size × train.grad_accum ({t.batch_size * t.grad_accum}) must be a "
                    f"multiple of grpo.num_generations ({self.grpo.num_generations})"
                )
        if self.method in ("prompt_tuning", "prefix_tuning") and self.objective in ("dpo", "grpo"):
            raise ValueError(f"method {self.method} is supported with objective sft or pretrain only")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


class ConfigError(UserError):
    """A config that cannot be used; the message names the file and the field."""


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {dotted}=…: expected a dotted field name such as train.lr")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
    d[keys[-1]] = value


def _override_value(text: str) -> Any:
    """A --set value read as YAML (numbers, booleans, [lists], {maps}, null), except that text which only YAML's
    block syntax turns into something else stays the text: `Answer: yes`, `- item`, `#1 rule` (a comment: null)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    flow = text.lstrip()[:1] in ("[", "{")
    if (isinstance(value, (dict, list)) and not flow) or (value is None and text.strip() not in ("", "null", "~")):
        return text
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice is an error: YAML would silently keep only the last `train:`."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`, whose keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (the first would be silently ignored)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_PATH_FIELDS = ("data.train", "data.val", "data.test", "data.rules", "data.chat_template", "output_dir", "model")


def looks_like_task_path(entry: str) -> bool:
    """An eval.lm_eval.tasks entry naming a file or folder rather than a built-in task (names have no slash)."""
    return "/" in entry or entry.endswith((".yaml", ".yml")) or entry in (".", "..")


def _from_cwd(key: str, value: Any) -> Any:
    """A relative path given on the command line is relative to where the command runs (paths in the file stay
    relative to the file). `model` and `chat_template` only when such a path exists (else a name: repo id, chatml)."""
    if key == "data.mix" and isinstance(value, list):
        return [{**m, "path": _from_cwd("data.train", m["path"])} if isinstance(m, dict) and "path" in m else m
                for m in value]
    if key in ("eval.lm_eval.tasks", "eval.lm_eval") and value:
        tasks = value.get("tasks") if isinstance(value, dict) else value
        if isinstance(tasks, list):
            tasks = [os.path.abspath(t) if isinstance(t, str) and looks_like_task_path(t) else t for t in tasks]
            return {**value, "tasks": tasks} if isinstance(value, dict) else tasks
        return value
    if key not in _PATH_FIELDS or not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    here = Path(os.path.abspath(value))
    if key in ("model", "data.chat_template") and not here.exists():
        return value
    return str(here)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (relative paths resolved against its folder) and apply `key=value` overrides (relative
    paths there resolved against the working directory)."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        _set_path(raw, key.strip(), _from_cwd(key.strip(), _override_value(value)))
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        msgs = "; ".join(
            # A cross-field check has no location; pydantic prefixes our own checks' messages with "Value error, ".
            ".".join(map(str, err["loc"])) + ": " * bool(err["loc"]) + err["msg"].removeprefix("Value error, ")
            for err in e.errors()
        )
        raise ConfigError(f"{source}: {msgs}") from None
    if path is not None:
        base = Path(path).resolve().parent

        def near(v: str) -> str:  # "runs/x", not "conf/../runs/x", in run.json and messages
            return os.path.normpath(base / v)

        d = cfg.data
        for field in ("train", "val", "test", "rules"):
            v = getattr(d, field)
            if v and not Path(v).is_absolute():
                setattr(d, field, near(v))
        if d.chat_template and not is_template_name(d.chat_template) and not Path(d.chat_template).is_absolute():
            d.chat_template = near(d.chat_template)
        for m in d.mix:
            if not Path(m.path).is_absolute():
                m.path = near(m.path)
        if not Path(cfg.output_dir).is_absolute():
            cfg.output_dir = near(cfg.output_dir)
        if cfg.eval.lm_eval is not None:
            cfg.eval.lm_eval.tasks = [near(t) if looks_like_task_path(t) and not Path(t).is_absolute() else t
                                      for t in cfg.eval.lm_eval.tasks]
        blocking = next((p for p in (cfg.run_dir, *cfg.run_dir.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(f"{path}: output_dir: {blocking} is a file, so the run directory {cfg.run_dir} "
                              "cannot be made")
        model = Path(cfg.model).expanduser()
        if not model.is_absolute():
            # like the data paths: relative to the config's folder first; an existing directory or GGUF file
            # relative to the working directory next. Stored absolute, so the run's config.yaml works from anywhere.
            if (base / model).exists() or (model.suffix.lower() == ".gguf" and not model.exists()):
                cfg.model = near(str(model))
            elif model.exists():
                cfg.model = str(model.resolve())
    return cfg


def check_model(cfg: RunConfig, source: str) -> list[str]:
    """Resolve `model:` as `train` does, short of loading weights or merging a previous run: an unknown name, a
    GGUF of an architecture transformers cannot load, or a tokenizer without the chat template the objective
    needs fails here. A GGUF is converted into the model cache (once; `train` reuses it). Returns the notes the
    CLI prints about the model (quantization, a pretrained base). A repo id missing from this machine's Hugging
    Face cache is a note, not an error: the config may be meant for the machine that has it."""
    from tunesmith.models import (ModelError, hub_cache_snapshot, load_tokenizer, looks_like_repo_id, model_notes,
                                  resolve_model)
    from tunesmith.train.base import is_run_dir, tokenizer_dir

    spec = cfg.model
    if looks_like_repo_id(spec) and not Path(spec).expanduser().exists() and hub_cache_snapshot(spec) is None:
        return [f"{spec} is not in this machine's Hugging Face cache: `hf download {spec}` before training "
                "(tunesmith never downloads)"]
    try:
        path = tokenizer_dir(spec) if is_run_dir(spec) else resolve_model(spec)
        load_tokenizer(path, cfg.trust_remote_code, chat=cfg.objective != "pretrain",
                       chat_template=cfg.data.chat_template)
    except ModelError as e:
        raise ConfigError(f"{source}: model: {e}") from None
    return [] if is_run_dir(spec) else model_notes(path)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
