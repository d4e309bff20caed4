"""Continuous batching: a row that joins, waits beside others and sees them leave gets the logits it would alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

from tunesmith.deploy.serve.batch import DecodeBatch, Row, sample

PAD = 0


def _llama():
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128)).eval()


def _gemma3():
    """Sliding-window layers with a window of 4, shorter than every prompt here, beside a global layer."""
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(Gemma3TextConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"], max_position_embeddings=128)).eval()


class _Recorder:
    """The batch's forward pass; keeps the logits of the last call."""

    def __init__(self, model, adapter_names: bool = False):
        self.model, self.adapter_names, self.last = model, adapter_names, None

    def __call__(self, *, adapters, **inputs):
        extra = {"adapter_names": [a or "__base__" for a in adapters]} if self.adapter_names else {}
        with torch.no_grad():
            self.last = self.model(**inputs, use_cache=True, logits_to_keep=1, **extra).logits[:, -1]
        return self.last


def _run(batch: DecodeBatch, rec: _Recorder, schedule: list[tuple[str, list[Row]]], seen: dict) -> None:
    """Admit / step / drop as scheduled; every row's picks are appended to it, its logits to seen[id(row)]."""
    for action, rows in schedule:
        if action == "drop":
            batch.keep([i for i, r in enumerate(batch.rows) if r not in rows])
            continue
        involved = rows if action == "admit" else list(batch.rows)
        picks = batch.admit(rows) if action == "admit" else batch.step()
        for i, (row, token) in enumerate(zip(involved, picks)):
            row.ids.append(token)
            seen.setdefault(id(row), []).append(rec.last[i].clone())


def _alone(model, row: Row) -> torch.Tensor:
    """The logits at each of the row's decoded positions, from one forward pass over its whole sequence."""
    ids = torch.tensor([row.prompt + row.ids[:-1]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, len(row.prompt) - 1:]


@pytest.mark.parametrize("make", [_llama, _gemma3], ids=["llama", "gemma3-sliding"])
def test_rows_joining_and_leaving_see_what_they_would_alone(make):
    model = make()
    rec = _Recorder(model)
    a, b, c = Row([5, 9, 13, 17, 21, 25, 29], None), Row([7, 8, 9], None), Row(list(range(30, 41)), None)
    batch = DecodeBatch(rec, PAD)
    seen: dict = {}
    _run(batch, rec, [("admit", [a]), ("step", []), ("step", []), ("admit", [b]), ("step", []),
                      ("admit", [c]), ("step", []), ("drop", [a]), ("step", []), ("step", []),
                      ("drop", [c]), ("step", [])], seen)
    assert [len(r.ids) for r in (a, b, c)] == [5, 6, 4]
    assert [r.prompt for r in batch.rows] == [b.prompt]
    assert batch._mask.shape[1] == len(b.prompt) + len(b.ids) - 1  # the columns only a and c used are gone
    for row in (a, b, c):
        torch.testing.assert_close(torch.stack(seen[id(row)]), _alone(model, row), atol=1e-4, rtol=1e-4)


def test_rows_of_different_adapters_share_one_forward_pass():
    from peft import LoraConfig, get_peft_model

    base = _llama()
    lora = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, LoraConfig(**lora), adapter_name="one").eval()
    model.add_adapter("two", LoraConfig(**lora))
    rows = [Row([5, 6, 7, 8], "one"), Row([9, 10], "two"), Row([11, 12, 13], None)]
    rec = _Recorder(model, adapter_names=True)
    batch = DecodeBatch(rec, PAD)
    seen: dict = {}
    _run(batch, rec, [("admit", rows[:2]), ("step", []), ("admit", rows[2:]), ("step", []), ("step", [])], seen)
    for row in rows:
        if row.adapter:
            model.set_adapter(row.adapter)
            expected = _alone(model, row)
        else:
            with model.disable_adapter():
                expected = _alone(model, row)
        torch.testing.assert_close(torch.stack(seen[id(row)]), expected, atol=1e-4, rtol=1e-4)
    model.set_adapter("one")
    assert not torch.allclose(_alone(model, rows[1])[0], seen[id(rows[1])][0], atol=1e-3)  # the adapters differ


def test_sampling_rows_follow_their_seed_and_greedy_rows_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [0.0, 3.0, 1.0, 2.9], [0.0, 3.0, 1.0, 2.9], [0.0, 3.0, 1.0, 2.9]])

    def rows():
        return [Row([1], None), Row([1], None, 1.0, 1.0, seed=7), Row([1], None, 1.0, 1.0, seed=8),
                Row([1], None, 5.0, 0.2, seed=9)]

    first, again = rows(), rows()
    draws = [sample(logits, first) for _ in range(40)]
    assert draws == [sample(logits, again) for _ in range(40)]  # a seed fixes the whole sequence of draws
    assert {d[0] for d in draws} == {1}
    assert {d[1] for d in draws} != {1} and [d[1] for d in draws] != [d[2] for d in draws]
    assert {d[3] for d in draws} == {1}  # top_p 0.2 keeps only the most likely token, however hot
