"""The fast path for sft/pretrain with lora, qlora or full: token-budget rows, document-masked attention,
loss only where a token is trained, and (on a CUDA GPU) FlexAttention and per-layer torch.compile.

Where the time of the plain path goes (../shared/bench profile of the TRL stack): the GPU idles
~60% of each step on thousands of small kernel launches and on attention re-planned for every
new batch length, while packed attention runs dense over whole rows. So, each lever kept only
because it measured faster (benchmarks/train_throughput.py):
  rows        every micro-batch is one row of `row_tokens` slots (train/packing.py): one shape,
              so compiled kernels are reused and nothing is re-planned
  attention   a document-causal mask (train/attention.py): FlexAttention skips the blocks across
              documents on GPUs that have it; a dense mask elsewhere (same result, more work)
  compile     each decoder layer compiled once (`layer.compile()`: state-dict keys unchanged,
              gradient checkpointing stays outside the compiled region)
  loss        hidden states of trained positions only go through the LM head, fused with the
              cross-entropy (Liger's kernel when installed, else checkpointed chunks), so the
              rows × vocabulary logits tensor never exists
  memory      gradient checkpointing only when `tunesmith plan memory`'s estimate says the row does not fit
Everything stays on transformers/PEFT/Trainer: the model is called through its own modules,
the mask goes in as `attention_mask`, and checkpoints, resume, eval and callbacks are the
Trainer's. `train.performance: off` is the plain TRL path; what this path turns off on a
machine is printed (`FastPlan.notes`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import Trainer

from tunesmith.train.attention import dense_document_mask, document_block_mask

# Model types whose logits are exactly lm_head(final hidden state): no soft-capping or scaling that the
# direct decoder + fused loss call would skip. Others go through the model's own forward.
PLAIN_LM_HEAD = {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "olmo2", "smollm3"}

MEMORY_HEADROOM = 0.9  # fraction of the GPU's memory a run may plan to use (plan/memory.py's total_gib)


@dataclass
class FastPlan:
    attention: str = "dense"  # flex | dense
    compile_layers: bool = False
    loss: str = "chunked"  # liger | chunked
    direct: bool = True  # decoder + fused loss; False: the model's own forward with logits_to_keep
    gradient_checkpointing: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"attention": self.attention, "compile_layers": self.compile_layers, "loss": self.loss,
                "direct": self.direct, "gradient_checkpointing": self.gradient_checkpointing, "notes": self.notes}


def needs_checkpointing(model_config: dict, method: str, row_tokens: int, lora_r: int,
                        gpu_bytes: int) -> tuple[bool, float]:
    """Whether one row without gradient checkpointing would overflow the GPU, by `tunesmith plan memory`'s
    estimate (conservative: it assumes eager activations; compiled layers keep fewer). Returns (on, GiB)."""
    from tunesmith.plan.memory import GIB, estimate_memory, shape_from_config

    est = estimate_memory(shape_from_config(model_config), "full" if method == "full" else "lora",
                          seq_len=row_tokens, batch=1, grad_checkpointing=False, lora_r=lora_r)
    return est.total_gib * GIB > MEMORY_HEADROOM * gpu_bytes, est.total_gib


def plan(model, row_tokens: int, gradient_checkpointing: bool | str, method: str, lora_r: int = 16) -> FastPlan:
    """What the fast path uses on this machine, and a note for each lever it turns off."""
    p = FastPlan()
    cuda = torch.cuda.is_available()
    if not cuda:
        p.notes.append("no CUDA GPU: dense document mask (FlexAttention has no CPU backward), no torch.compile, "
                       "chunked cross-entropy")
    elif torch.cuda.get_device_capability() < (8, 0):
        p.notes.append(f"{torch.cuda.get_device_name()} is older than Ampere (sm_80): dense document mask, "
                       "no torch.compile")
    else:
        p.attention, p.compile_layers = "flex", True
    if cuda:
        if importlib.util.find_spec("liger_kernel") is not None:
            p.loss = "liger"
        else:
            p.notes.append("liger-kernel not installed (pip install 'tunesmith[gpu]'): chunked cross-entropy")
    head = PackedTrainer.causal_lm(model).get_output_embeddings()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        p.direct = False
        p.notes.append("several processes: the wrapped model's own forward (its loss on trained positions only)")
    elif type(head) is not torch.nn.Linear:
        p.direct = False  # an adapter on the LM head (e.g. LoRA on lm_head) lives outside its .weight
        p.notes.append(f"the LM head is a {type(head).__name__}, not a plain Linear: the model's own forward is used")
    elif model.config.model_type not in PLAIN_LM_HEAD:
        p.direct = False
        p.notes.append(f"model type {model.config.model_type!r} is not known to have a plain LM head: "
                       "its own forward is used")
    if gradient_checkpointing != "auto":
        p.gradient_checkpointing = bool(gradient_checkpointing)
    elif method == "qlora":
        p.gradient_checkpointing = True  # memory is the reason to choose QLoRA
    elif cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        p.gradient_checkpointing, need = needs_checkpointing(model.config.to_dict(), method, row_tokens, lora_r, total)
        p.notes.append(f"gradient checkpointing {'on' if p.gradient_checkpointing else 'off'}: a {row_tokens}-token "
                       f"row needs ~{need:.1f} GiB of {total / 2**30:.0f} GiB without it (plan memory's estimate)")
    return p


def _chunk_ce_sum(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(h, weight).float(), targets, reduction="sum")


def chunked_ce_sum(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Summed cross-entropy of lm_head(h); each chunk's logits are recomputed in backward, not kept."""
    total = h.new_zeros((), dtype=torch.float32)
    for s in range(0, h.shape[0], chunk):
        total = total + checkpoint(_chunk_ce_sum, h[s:s + chunk], weight, targets[s:s + chunk], use_reentrant=False)
    return total


def _liger_ce_sum():
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    return lambda h, weight, targets: loss(weight, h, targets)


class _Stop(Exception):
    pass


def _layer_io(decoder, row: dict, mask, call, grads: bool) -> list[torch.Tensor]:
    """Output of decoder layer 0 on the row, its arguments built by the decoder itself, and with `grads` the
    gradients of the layer's trainable parameters (cleared again), or of its input if it has none."""
    got: dict = {}

    def grab(module, args, kwargs):
        got["args"], got["kwargs"] = args, kwargs
        raise _Stop  # the arguments are all that is needed; the rest of the decoder does not run

    layer = decoder.layers[0]
    hook = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            decoder(input_ids=row["input_ids"], position_ids=row["position_ids"], attention_mask=mask)
    except _Stop:
        pass
    finally:
        hook.remove()
    params = [p for p in layer.parameters() if p.requires_grad]
    args, kwargs = list(got["args"]), dict(got["kwargs"])
    # As in training: the input needs no gradient when the layer has trainable weights (LoRA on a frozen
    # embedding), so the compiled graph checked here is the one training reuses.
    hidden = (args[0] if args else kwargs["hidden_states"]).detach().clone().requires_grad_(grads and not params)
    if args:
        args[0] = hidden
    else:
        kwargs["hidden_states"] = hidden
    with torch.set_grad_enabled(grads):
        out = call(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        if not grads:
            return [out.detach().float()]
        weights = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(0), device=out.device)
        (out.float() * weights).sum().backward()
    if not params:
        return [out.detach().float(), hidden.grad.float()]
    flat = torch.cat([p.grad.float().flatten() for p in params])
    for p in params:
        p.grad = None  # the check must not leak into the first optimizer step
    return [out.detach().float(), flat]


class PackedTrainer(Trainer):
    """transformers' Trainer over packed rows (one row per micro-batch); only the loss is computed here."""

    def __init__(self, *args, fast_plan: FastPlan, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast_plan = fast_plan
        self.ce_sum = _liger_ce_sum() if fast_plan.loss == "liger" else chunked_ce_sum
        base = self.causal_lm(self.model)
        reference = base.config._attn_implementation
        if fast_plan.attention == "flex":
            base.set_attn_implementation("flex_attention")
        if fast_plan.compile_layers:
            for layer in base.get_decoder().layers:
                layer.compile()
        if (fast_plan.attention == "flex" or fast_plan.compile_layers) and self.train_dataset is not None:
            self._check_against_reference(base, reference)
        # Models that run eager attention (e.g. Gemma 2 for its score soft-capping) add the mask to the scores.
        eager = fast_plan.attention == "dense" and base.config._attn_implementation != "sdpa"
        self.mask_dtype = base.dtype if eager else None

    def _check_against_reference(self, base, reference: str) -> None:
        """Decoder layer 0 as the plan runs it (FlexAttention with the BlockMask, compiled) against the model's
        own attention with the dense mask, eager, on the first training row: outputs and (on a GPU) the gradients
        of the layer's trainable parameters. Compiled flex kernels have had silent stride bugs (fused-QKV models
        such as Phi-3 give wrong outputs under inductor on CPU), so a mismatch turns both levers off instead of
        training on garbage."""
        from tunesmith.train.packing import collate_rows

        row = {k: v.to(self.args.device) if torch.is_tensor(v) else v
               for k, v in collate_rows([self.train_dataset[0]]).items()}
        decoder, grads = base.get_decoder(), torch.cuda.is_available()
        layer = decoder.layers[0]
        dense = dense_document_mask(row["doc_ids"], additive=base.dtype if reference != "sdpa" else None)
        flex = self.fast_plan.attention == "flex"
        planned = _layer_io(decoder, row, document_block_mask(row["doc_ids"]) if flex else dense, layer.__call__, grads)
        base.set_attn_implementation(reference)
        expected = _layer_io(decoder, row, dense, layer.forward, grads)
        diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)) for a, b in zip(planned, expected))
        tol = 1e-3 if base.dtype == torch.float32 else 5e-2
        if diff <= tol:
            if flex:
                base.set_attn_implementation("flex_attention")
            self.fast_plan.notes.append(f"self-check passed: decoder layer 0 as planned = reference (rel. diff "
                                        f"{diff:.1e}{', outputs and gradients' if grads else ', outputs'})")
            return
        for one in decoder.layers:
            one._compiled_call_impl = None  # undoes Module.compile()
        self.fast_plan.attention, self.fast_plan.compile_layers = "dense", False
        self.fast_plan.notes.append(f"self-check FAILED: decoder layer 0 with FlexAttention/torch.compile differs "
                                    f"from the reference by {diff:.1e} (relative); both turned off for this run")

    @staticmethod
    def causal_lm(model):
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Example tokens only (tail padding excluded), saved with checkpoints: the throughput count.
        self.state.num_input_tokens_seen += inputs.pop("real_tokens")
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, *args, **kwargs):
        inputs = {k: v for k, v in inputs.items() if k != "real_tokens"}
        return super().prediction_step(model, inputs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, positions = inputs["input_ids"], inputs["position_ids"]
        doc_ids = inputs["doc_ids"]
        if self.fast_plan.attention == "flex":
            mask = document_block_mask(doc_ids)
        else:
            mask = dense_document_mask(doc_ids, additive=self.mask_dtype)
        keep, targets = inputs["keep"], inputs["targets"]
        if self.fast_plan.direct:
            lm = self.causal_lm(self.accelerator.unwrap_model(model))
            hidden = lm.get_decoder()(input_ids=ids, position_ids=positions, attention_mask=mask).last_hidden_state
            h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)
            loss = self.ce_sum(h, lm.get_output_embeddings().weight, targets)
        else:
            # One row per micro-batch, so the trained positions of the row are the logits to keep.
            out = model(input_ids=ids, position_ids=positions, attention_mask=mask, logits_to_keep=keep)
            loss = F.cross_entropy(out.logits[0].float(), targets, reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else max(keep.numel(), 1))
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: DDP averages the gradients
        return (loss, {"loss": loss}) if return_outputs else loss
