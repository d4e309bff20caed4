"""The fast path (train/fast.py): packed rows lose nothing, masks keep documents apart, and the loss curve
equals the plain TRL path's when both see the same examples in each step."""

import json

import pytest
import torch

from tests.helpers import QUIET, losses, make_cfg, write_chat
from tunesmith.train import fast
from tunesmith.train.attention import _document_mask_mod, dense_document_mask, document_block_mask
from tunesmith.train.packing import auto_row_tokens, best_fit_decreasing, build_row, collate_rows, pack_rows
from tunesmith.train.recipe import train
from tunesmith.train.tokenize import IGNORE, Encoded


def test_best_fit_decreasing_fills_the_tightest_row():
    # 7 → row A (3 left); 5 → row B (5 left); 4 → B (1 left); 3 → A exactly (0 left); 2 fits nowhere → row C;
    # 1 → B, the tightest fit (1 left) rather than C (8 left)
    bins = best_fit_decreasing([3, 7, 2, 5, 1, 4], 10)
    assert bins == [[1, 0], [3, 5, 4], [2]]
    assert best_fit_decreasing([3, 7, 2, 5, 1, 4], 10) == bins  # deterministic
    with pytest.raises(ValueError, match="11 tokens does not fit a row of 10"):
        best_fit_decreasing([11, 2], 10)


def test_row_targets_stay_inside_each_example():
    a = Encoded([10, 11, 12, 13], [IGNORE, IGNORE, 12, 13])
    b = Encoded([20, 21, 22], [IGNORE, 21, 22])
    row = build_row([a, b], row_tokens=12, pad_id=0, max_segment=3)
    assert row["input_ids"] == [10, 11, 12, 13, 20, 21, 22, 0, 0, 0, 0, 0]
    # next token's label; the last token of an example predicts nothing (not the next example's first token)
    assert row["shift_labels"] == [IGNORE, 12, 13, IGNORE, 21, 22, IGNORE] + [IGNORE] * 5
    assert row["position_ids"] == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 0, 1]  # tail cut into segments of ≤ 3
    assert row["doc_ids"] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]


def test_pack_rows_keeps_every_token_and_counts():
    import random

    rng = random.Random(0)
    encoded = []
    for _ in range(50):
        n = rng.randint(4, 200)
        encoded.append(Encoded([rng.randint(3, 99) for _ in range(n)], [IGNORE] * (n // 3) + [5] * (n - n // 3)))
    row_tokens = auto_row_tokens(encoded, examples_per_row=4)
    assert row_tokens % 128 == 0 and row_tokens >= max(len(e.input_ids) for e in encoded)
    ds, stats = pack_rows(encoded, row_tokens, pad_id=0)
    assert stats.rows == len(ds) and stats.examples == 50
    assert stats.real_tokens == sum(len(e.input_ids) for e in encoded)
    assert stats.length_sq == sum(len(e.input_ids) ** 2 for e in encoded)
    # every trained token except each example's first label survives as a next-token target
    assert stats.trained_tokens == sum(sum(1 for x in e.labels[1:] if x != IGNORE) for e in encoded)
    found = sorted(tuple(r["input_ids"][i] for i in range(len(r["doc_ids"])) if r["doc_ids"][i] == d)
                   for r in ds for d in range(len(set(r["doc_ids"]))))
    for e in encoded:
        assert tuple(e.input_ids) in found
    batch = collate_rows([ds[0]])
    assert batch["input_ids"].shape == (1, row_tokens) and batch["labels"] is batch["shift_labels"]


def test_block_mask_equals_the_document_causal_mask():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    encoded = [Encoded(list(range(n)), list(range(n))) for n in (300, 90, 17, 200, 150, 5, 260)]
    ds, _ = pack_rows(encoded, 512, pad_id=0)
    doc_ids = torch.tensor(ds["doc_ids"])
    ours = document_block_mask(doc_ids)
    reference = create_block_mask(_document_mask_mod(doc_ids), len(ds), None, 512, 512, device="cpu")
    assert torch.equal(ours.to_dense(), reference.to_dense())
    # blocks across documents are skipped: fewer visited blocks than the causal lower triangle (10 per row)
    assert ours.to_dense().sum() < len(ds) * 10
    dense = dense_document_mask(doc_ids)
    q, k, v = (torch.randn(len(ds), h, 512, 16, generator=torch.Generator().manual_seed(i))
               for i, h in enumerate((4, 2, 2)))
    with pytest.warns(UserWarning):  # eager flex on CPU: unfused, still exact
        out = flex_attention(q, k, v, block_mask=ours, enable_gqa=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                           attn_mask=dense)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_checkpointing_planner_uses_the_plan_memory_estimate():
    from transformers import LlamaConfig

    llama_1b = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                           num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True).to_dict()
    # the same as `tunesmith plan memory --model llama-3.2-1b --method lora --seq-len 16384 --batch 1
    # --no-grad-checkpointing`: 43.8 GiB in all (conservative: measured eager 32.2, compiled 23.5 GiB allocated)
    on_80, need = fast.needs_checkpointing(llama_1b, "lora", 16384, 16, gpu_bytes=80 * 2**30)
    assert (on_80, need) == (False, pytest.approx(43.795, abs=0.01))
    assert fast.needs_checkpointing(llama_1b, "lora", 16384, 16, gpu_bytes=48 * 2**30)[0] is True  # 43.8 > 0.9·48
    assert fast.needs_checkpointing(llama_1b, "lora", 8192, 16, gpu_bytes=48 * 2**30)[0] is False
    assert fast.needs_checkpointing(llama_1b, "full", 8192, 16, gpu_bytes=24 * 2**30)[0] is True


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast-data")
    write_chat(d / "train.jsonl", 8)
    write_chat(d / "val.jsonl", 4, seed=1)
    (d / "text.txt").write_text("".join(f"the quick brown fox {i} jumps over the lazy dog\n" for i in range(8)))
    return d


def _run(tiny, data, tmp_path, name, performance, **over):
    # All 8 examples in each optimizer step on both paths: the same data, so the same loss curve.
    base = dict(train__performance=performance, train__batch_size=8, train__row_tokens=1024, train__max_steps=5,
                lora__dropout=0.0, data__val=str(data / "val.jsonl"), train__eval_every=5)
    cfg = make_cfg(tiny, data, tmp_path, name, **{**base, **over})
    result = train(cfg, console=QUIET, show_progress=False)
    return result, losses(result.run_dir), json.loads((result.run_dir / "run.json").read_text())


@pytest.mark.parametrize("case", ["lora", "full", "pretrain", "grad_accum"])
def test_fast_path_loss_curve_equals_plain_path(tiny_model_dir, eight, tmp_path, case):
    over = {}
    if case == "full":
        over["method"] = "full"
    if case == "pretrain":
        over.update(objective="pretrain", data__train=str(eight / "text.txt"), data__val=None,
                    train__eval_every=None)
    plain = _run(tiny_model_dir, eight, tmp_path, f"{case}-plain", "off", **over)
    if case == "grad_accum":  # the fast path's 8 examples in 2 rows × 2 accumulation steps
        over.update(train__row_tokens=256, train__grad_accum=2)
    fast_run = _run(tiny_model_dir, eight, tmp_path, f"{case}-fast", "on", **over)
    assert plain[2]["fast_path"] is None
    rows = fast_run[2]["fast_path"]["rows"]
    assert rows["examples"] == 8 and rows["rows"] == (2 if case == "grad_accum" else 1)
    assert len(plain[1]) == len(fast_run[1]) == 5
    assert fast_run[2]["fast_path"]["direct"] is True
    assert fast_run[1] == pytest.approx(plain[1], abs=1e-4)
    assert plain[1][-1] < plain[1][0] - 0.05  # it trained: the comparison is not between two flat lines
    if case != "pretrain":
        assert fast_run[0].final_eval_loss == pytest.approx(plain[0].final_eval_loss, abs=1e-4)


def test_an_example_longer_than_the_row_is_refused_naming_the_fields(tiny_model_dir, eight, tmp_path):
    from tunesmith.train.tokenize import DataError

    long = tmp_path / "long.jsonl"
    words = " ".join(["refund billing account court letter"] * 40)
    long.write_text(json.dumps({"messages": [{"role": "user", "content": words},
                                             {"role": "assistant", "content": "answer"}]}) + "\n")
    with pytest.raises(DataError, match=r"train.row_tokens: an example of \d+ tokens does not fit a row of 128 "
                                        r"slots; raise train.row_tokens or lower data.max_seq_len"):
        _run(tiny_model_dir, eight, tmp_path, "long", "on", data__train=str(long), data__max_seq_len=1024,
             data__val=None, train__eval_every=None, train__row_tokens=128)


def test_model_forward_fallback_equals_direct_loss(tiny_model_dir, eight, tmp_path, monkeypatch):
    direct = _run(tiny_model_dir, eight, tmp_path, "direct", "on")
    monkeypatch.setattr(fast, "PLAIN_LM_HEAD", set())  # an unknown architecture: its own forward and LM head
    own = _run(tiny_model_dir, eight, tmp_path, "own-forward", "on")
    assert own[2]["fast_path"]["direct"] is False and direct[2]["fast_path"]["direct"] is True
    assert own[1] == pytest.approx(direct[1], abs=1e-5)


def test_lora_on_the_lm_head_is_trained_through_the_model_forward(tiny_model_dir, eight, tmp_path):
    """An adapted LM head lives outside lm_head.weight: the direct fused loss would silently skip it."""
    from safetensors.torch import load_file

    run = _run(tiny_model_dir, eight, tmp_path, "head", "on", lora__target_modules=["q_proj", "lm_head"])
    assert run[2]["fast_path"]["direct"] is False
    assert any("not a plain Linear" in n for n in run[2]["fast_path"]["notes"])
    weights = load_file(run[0].run_dir / "adapter" / "adapter_model.safetensors")
    head_b = [v for k, v in weights.items() if "lm_head" in k and "lora_B" in k]
    assert head_b and head_b[0].abs().sum() > 0  # B starts at zero: non-zero means the head's adapter trained


def test_auto_takes_the_fast_path_on_cpu_and_says_what_it_turned_off(tiny_model_dir, eight, tmp_path):
    off = _run(tiny_model_dir, eight, tmp_path, "off", "off", train__max_steps=1)
    assert off[2]["fast_path"] is None
    assert _run(tiny_model_dir, eight, tmp_path, "auto", "auto", train__max_steps=1)[2]["fast_path"] is not None
    forced = _run(tiny_model_dir, eight, tmp_path, "forced", "on", train__max_steps=1)
    plan = forced[2]["fast_path"]
    assert plan["attention"] == "dense" and plan["compile_layers"] is False and plan["loss"] == "chunked"
    assert any("no CUDA GPU" in n for n in plan["notes"])
    assert plan["gradient_checkpointing"] is False
    # the throughput count is example tokens only: every train example once per epoch, no tail padding
    info = forced[2]
    rows = info["fast_path"]["rows"]
    assert info["real_tokens_per_s"] == pytest.approx(rows["real_tokens"] / forced[0].train_seconds, abs=0.1)
    assert forced[0].real_tokens_per_s == info["real_tokens_per_s"] and off[0].real_tokens_per_s is None


def test_compiled_layers_train_like_eager(tiny_model_dir, eight, tmp_path, monkeypatch):
    """The GPU plan compiles each decoder layer; on CPU inductor runs the same graphs: same losses, no breaks."""
    from torch._dynamo.utils import counters

    eager = _run(tiny_model_dir, eight, tmp_path, "eager", "on", train__max_steps=3)
    planned = fast.plan

    def compiled_plan(*args, **kwargs):
        p = planned(*args, **kwargs)
        p.compile_layers = p.gradient_checkpointing = True  # both GPU levers at once: checkpoint wraps compiled
        return p

    monkeypatch.setattr(fast, "plan", compiled_plan)
    counters.clear()
    compiled = _run(tiny_model_dir, eight, tmp_path, "compiled", "on", train__max_steps=3)
    assert compiled[2]["fast_path"]["compile_layers"] is True
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    assert compiled[1] == pytest.approx(eager[1], abs=1e-5)


def test_flex_attention_plan_evaluates_like_the_dense_mask(tiny_model_dir, tmp_path):
    """The GPU plan (transformers' flex_attention fed our BlockMask, inside per-layer compiled decoder layers)
    through PackedTrainer, forward only (FlexAttention has no backward on CPU): the dense mask's eval loss,
    and one compiled graph for rows of different document layouts, so a new mask never recompiles."""
    import random

    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM, TrainingArguments

    from tunesmith.train.packing import collate_rows

    rng = random.Random(0)
    examples = [Encoded([rng.randint(3, 200) for _ in range(n)], [IGNORE] * 3 + [5] * (n - 3))
                for n in (rng.randint(8, 100) for _ in range(40))]
    rows, _ = pack_rows(examples, 256, pad_id=0)
    assert len(rows) > 5 and len({tuple(r) for r in rows["doc_ids"]}) == len(rows)
    losses = {}
    for name, plan in (("dense", fast.FastPlan()), ("flex", fast.FastPlan(attention="flex", compile_layers=True))):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        args = TrainingArguments(output_dir=str(tmp_path / name), per_device_eval_batch_size=1,
                                 remove_unused_columns=False, prediction_loss_only=True, report_to="none",
                                 use_cpu=True, disable_tqdm=True)
        trainer = fast.PackedTrainer(model=model, args=args, eval_dataset=rows, data_collator=collate_rows,
                                     fast_plan=plan)
        assert model.config._attn_implementation == ("flex_attention" if name == "flex" else "sdpa")
        counters.clear()
        losses[name] = trainer.evaluate()["eval_loss"]
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert losses["flex"] == pytest.approx(losses["dense"], abs=1e-5)


def test_eager_attention_model_gets_an_additive_mask(eight, tmp_path):
    """Gemma 2 runs eager attention (score soft-capping), which adds the mask to the scores: a boolean mask
    there masks nothing, and the first loss already differed from the plain path's by 0.04."""
    import transformers as T

    from tunesmith.demo.tiny import build_tokenizer

    tok = build_tokenizer(tmp_path / "gemma2")
    torch.manual_seed(0)
    T.Gemma2ForCausalLM(T.Gemma2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).save_pretrained(tmp_path / "gemma2")
    plain = _run(tmp_path / "gemma2", eight, tmp_path, "g2-plain", "off")
    fast_run = _run(tmp_path / "gemma2", eight, tmp_path, "g2-fast", "on")
    assert fast_run[2]["fast_path"]["direct"] is False  # soft-capped head: its own forward
    assert fast_run[1] == pytest.approx(plain[1], abs=1e-4)
    assert fast_run[0].final_eval_loss == pytest.approx(plain[0].final_eval_loss, abs=1e-4)


def test_additive_document_mask_is_the_boolean_mask_as_scores():
    doc = torch.tensor([[0, 0, 1, 1, 1]])
    boolean = dense_document_mask(doc)
    scores = dense_document_mask(doc, additive=torch.bfloat16)
    assert scores.dtype == torch.bfloat16
    assert torch.equal(scores == 0, boolean)
    assert (scores[~boolean] == torch.finfo(torch.bfloat16).min).all()
    assert boolean[0, 0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0],
                                           [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]


def _phi3(tmp_path):
    import transformers as T

    from tunesmith.demo.tiny import build_tokenizer

    tok = build_tokenizer(tmp_path / "phi3")
    torch.manual_seed(0)
    T.Phi3ForCausalLM(T.Phi3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).save_pretrained(tmp_path / "phi3")
    return tmp_path / "phi3"


def _rows():
    import random

    rng = random.Random(0)
    examples = [Encoded([rng.randint(3, 200) for _ in range(n)], [IGNORE] * 3 + [5] * (n - 3))
                for n in (rng.randint(8, 100) for _ in range(12))]
    return pack_rows(examples, 256, pad_id=0)[0]


def test_self_check_turns_flex_and_compile_off_where_they_give_wrong_outputs(tmp_path):
    """Phi-3's fused QKV hands FlexAttention strided views; compiled on CPU that gives wrong outputs (relative
    error 0.86 on layer 0). The startup self-check sees it and trains with the reference attention instead."""
    from transformers import AutoModelForCausalLM, TrainingArguments

    from tunesmith.train.packing import collate_rows

    rows, losses = _rows(), {}
    for name, plan in (("dense", fast.FastPlan()), ("flex", fast.FastPlan(attention="flex", compile_layers=True))):
        model = AutoModelForCausalLM.from_pretrained(_phi3(tmp_path))
        args = TrainingArguments(output_dir=str(tmp_path / name), per_device_eval_batch_size=1, use_cpu=True,
                                 remove_unused_columns=False, prediction_loss_only=True, report_to="none")
        trainer = fast.PackedTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows,
                                     data_collator=collate_rows, fast_plan=plan)
        losses[name] = trainer.evaluate()["eval_loss"]
    assert (plan.attention, plan.compile_layers) == ("dense", False)
    assert "self-check FAILED" in plan.notes[-1] and model.config._attn_implementation == "sdpa"
    assert all(layer._compiled_call_impl is None for layer in model.model.layers)
    assert losses["flex"] == pytest.approx(losses["dense"], abs=1e-6)


def test_layer_check_compares_adapter_gradients_and_clears_them(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.train.packing import collate_rows

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    decoder, row = model.get_base_model().get_decoder(), collate_rows([_rows()[0]])
    layer = decoder.layers[0]
    mask = dense_document_mask(row["doc_ids"])
    a = fast._layer_io(decoder, row, mask, layer.__call__, grads=True)
    b = fast._layer_io(decoder, row, mask, layer.forward, grads=True)
    n_params = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert a[1].numel() == n_params and a[1].abs().sum() > 0  # the adapter's gradients, not the input's
    torch.testing.assert_close(a[0], b[0]) and torch.testing.assert_close(a[1], b[1])
    assert all(p.grad is None for p in model.parameters())  # nothing leaks into the first optimizer step
