"""Generation stops on the chat template's end-of-turn token, not only on the tokenizer's EOS."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import PHI3
from tunesmith.evaluate.generate import generate


def _always_says(model, token_id):
    """Replace the LM head with one whose logits always pick `token_id`."""
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[token_id] = 10.0
    model.lm_head = head
    return model


def test_eval_generation_stops_at_the_turn_end_token(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>", "<|user|>", "<|assistant|>"]})
    tok.eos_token = "<|endoftext|>"  # Phi-3: the turn ends with <|end|>, which is not the EOS
    tok.chat_template = PHI3
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tok))
    _always_says(model, tok.convert_tokens_to_ids("<|end|>"))
    calls = []
    model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    out = generate(model, tok, [[{"role": "user", "content": "hi"}]], max_new_tokens=12, batch_size=1,
                   show_progress=False)
    assert out == [""] and len(calls) == 1  # one token, the turn end, and it stopped (12 without the fix)


def test_server_stops_at_the_turn_end_token(tiny_model_dir, tmp_path):
    from tunesmith.deploy.server import Engine, Job, ServeSettings

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>", "<|user|>", "<|assistant|>"]})
    tok.eos_token = "<|endoftext|>"
    tok.chat_template = PHI3
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(tmp_path / "phi3ish")
    tok.save_pretrained(tmp_path / "phi3ish")
    engine = Engine(str(tmp_path / "phi3ish"), str(tmp_path / "phi3ish"), ServeSettings())
    end = tok.convert_tokens_to_ids("<|end|>")
    assert engine.stops[:2] == [tok.eos_token_id, end]  # then the model generation_config's own EOS
    _always_says(engine.base_model, end)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    assert engine._generate([Job(None, list(ids), 12, 0.0, 1.0, None, [])]) == [([], True)]  # finish_reason stop
