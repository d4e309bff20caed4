"""Evaluate a run: base vs prompted baseline vs tuned, on the sealed test split.

- `base`: the base model, zero-shot, with the conversation's system prompt.
- `prompted`: the base model with the system prompt and k few-shot examples from train
  (the baseline a fine-tune must beat: "a fine-tune that does not beat prompting is wasted compute").
- `tuned`: the base model with the run's adapter (merged into the weights while it generates).
- any OpenAI-compatible endpoint named in eval.systems (evaluate/endpoint.py): the production prompt on a
  hosted model, say. The gate compares tuned with `prompted` or with any of them (eval.gate_against).

One base model is loaded; the adapter is merged for `tuned` and unmerged afterwards.
Generations are cached per system under eval/generations/ (each answer with whether it ended on a stop token:
results.json `stops` counts those that ran to the limit), keyed by the test file's hash and
the generation settings, so re-scoring never regenerates; the regression suite's answers likewise,
keyed by the suite's hash, the model (adapter hash) and the chat template; eval.lm_eval's task results
(tunesmith.evaluate.lm_eval_backend) by each task's content, the model and the tokenizer. The base model's
answers (base, prompted, the suite's base side) are also shared between the runs of one base model
(tunesmith.evaluate.gencache), so a sweep generates them once.

An answer is given at most as many new tokens as the longest reference needs, with 25% slack:
anything longer has already missed the reference's form, and on a CPU every token costs.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

from tunesmith.config import RunConfig
from tunesmith.eval_settings import LOCAL_SYSTEMS
from tunesmith.data.records import Conversation
from tunesmith.evaluate import gencache, metrics
from tunesmith.evaluate.endpoint import ask_endpoint, endpoint_messages, endpoint_record, token_counter, usage_record
from tunesmith.evaluate.gate import decide, primary_metric
from tunesmith.evaluate.prompts import few_shot_messages, few_shot_pool, system_prompts, token_limit
from tunesmith.rules import RuleSet, load_rules, parse_json_answer
from tunesmith.data.formats import sha256_file
from tunesmith.train.dataset import read_conversations
from tunesmith.rundir import EvalResults, RunDir, RunInfo

SYSTEMS = LOCAL_SYSTEMS


def task_of(tests: list[Conversation], rules: RuleSet | None) -> str:
    if tests and all(c.label is not None for c in tests):
        return "classification"
    answers = [c.assistant_turns()[-1] for c in tests]
    if answers and all(_is_json_object(a) for a in answers):
        return "extraction"
    return "compliance" if rules is not None else "generation"


def _is_json_object(text: str) -> bool:
    ok, value = parse_json_answer(text)
    return ok and isinstance(value, dict)


def score_system(task: str, outputs: list[str], tests: list[Conversation], rules: RuleSet | None) -> dict[str, Any]:
    refs = [c.assistant_turns()[-1] for c in tests]
    result: dict[str, Any] = {"n": len(outputs)}
    if task == "classification":
        result |= metrics.classification(outputs, [c.label for c in tests])
    elif task == "extraction":
        result |= metrics.extraction(outputs, [metrics.as_object(r, "reference") for r in refs])
    result |= metrics.generation(outputs, refs)
    if rules is not None:
        result["compliance"] = metrics.compliance(outputs, [c.last_user() for c in tests], rules)
    return result


def _template_text(tokenizer_dir: str | Path, spec: str | None) -> Any:
    """The chat template every system is prompted with, read without loading the tokenizer: a cache key part,
    so generations are redone when only the template changed."""
    from tunesmith.models import chat_template_text

    if spec:
        return chat_template_text(spec)
    d = Path(tokenizer_dir)
    if (d / "chat_template.jinja").is_file():
        return (d / "chat_template.jinja").read_text(encoding="utf-8")
    try:
        return json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None


def _cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_run(
    run_dir: str | Path,
    *,
    test_path: str | None = None,
    systems: tuple[str, ...] | list[str] | None = None,
    rules_path: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    margin: float = 0.0,
    regression: bool | None = None,
    against: str | None = None,
) -> dict[str, Any]:
    """Generate with each system (default: the config's eval.systems) on the test split, score, gate tuned
    against `against` (default: eval.gate_against), and write eval/results.json."""
    import torch
    from peft import PeftModel

    from tunesmith.evaluate.generate import generate_counted
    from tunesmith.models import load_model, load_tokenizer

    console = console or Console(stderr=True)
    run = RunDir(run_dir)
    info = run.info() if run.is_run() else RunInfo()
    if info.status != "finished":
        raise ValueError(f"{run.path}: not a finished run (run.json status: {info.status or 'missing'})")
    from tunesmith.config import load_config

    cfg: RunConfig = load_config(run.path / "config.yaml")
    ev = cfg.eval
    systems = list(ev.names() if systems is None else systems)
    endpoints = {name: e for name, e in ev.endpoints().items() if name in systems}
    unknown = [s for s in systems if s not in SYSTEMS and s not in endpoints]
    if unknown:
        raise ValueError(f"unknown system {', '.join(unknown)}; choose from {', '.join([*SYSTEMS, *ev.endpoints()])}")
    if against is not None and (against not in systems or against == "tuned"):
        raise ValueError(f"--against {against}: not a baseline among the systems evaluated ({', '.join(systems)})")
    against = against or ev.gate_against  # the config's, when not among the systems evaluated: no gate
    local = [s for s in systems if s in SYSTEMS]
    test_path = test_path or cfg.data.test
    if not test_path:
        raise ValueError("no test file: set data.test in the config or pass --test")
    rules_path = rules_path or cfg.data.rules
    rules = load_rules(rules_path) if rules_path else None
    tests = read_conversations(test_path, cfg.data.format, cfg.data.system_prompt)
    if not tests:
        raise ValueError(f"{test_path}: no test examples")
    if ev.max_examples:
        tests = tests[: ev.max_examples]
    train = few_shot_pool(cfg) if "prompted" in systems or any(e.few_shot for e in endpoints.values()) else []
    shots = few_shot_messages(train, ev.few_shot, ev.few_shot_seed)
    prompts = {s: system_prompts(tests, s, shots) for s in local}
    prompts |= {n: endpoint_messages(tests, e, few_shot_messages(train, e.few_shot, ev.few_shot_seed))
                for n, e in endpoints.items()}
    task = task_of(tests, rules)

    full_model = run.path / "model"
    tuned_sha = None
    if "tuned" in systems:
        if run.adapter.is_dir():
            weights = run.adapter / "adapter_model.safetensors"
        elif full_model.is_dir():
            weights = next(full_model.glob("*.safetensors"))
        else:
            raise ValueError(f"{run.path}: no adapter/ or model/ to evaluate as the tuned system")
        tuned_sha = sha256_file(weights)
    test_sha = sha256_file(test_path)
    gen_dir = run.eval_dir / "generations"
    gen_dir.mkdir(parents=True, exist_ok=True)

    # the run's own tokenizer carries the chat template it was trained with (data.chat_template for a base
    # model that has none); every system is prompted with it
    own = run.adapter if run.adapter.is_dir() else full_model if full_model.is_dir() else info.base_model
    template = _template_text(own, cfg.data.chat_template)
    limit = token_limit(own, tests, ev.max_new_tokens, cfg.trust_remote_code)
    outputs: dict[str, list[str]] = {}
    stopped: dict[str, list[bool] | None] = {}  # per answer: ended on a stop token (None: cached before it was kept)
    caches: dict[str, Path] = {}
    base_id = gencache.base_identity(info.base_model)
    for system in local:
        key = _cache_key(system, test_sha, limit, len(tests), prompts[system],
                         tuned_sha if system == "tuned" else base_id, template)
        caches[system] = gen_dir / f"{system}-{key}.json"
        if caches[system].is_file() or (system != "tuned" and gencache.fetch(caches[system])):
            outputs[system], stopped[system] = _read_generations(caches[system])
            console.print(f"[dim]{system}: {len(outputs[system])} generations from cache[/]")
    wants_regression = (ev.regression if regression is None else regression) and {"base", "tuned"} <= set(systems)
    suite_answers: dict[str, dict[str, str]] = {}
    suite_caches: dict[str, Path] = {}
    if wants_regression:
        from tunesmith.evaluate.regression import suite_sha

        for system in ("base", "tuned"):
            key = _cache_key("regression", suite_sha(), tuned_sha if system == "tuned" else base_id, template)
            suite_caches[system] = gen_dir / f"regression-{system}-{key}.json"
            if suite_caches[system].is_file() or (system == "base" and gencache.fetch(suite_caches[system])):
                suite_answers[system] = json.loads(suite_caches[system].read_text(encoding="utf-8"))
                console.print(f"[dim]regression {system}: {len(suite_answers[system])} answers from cache[/]")

    lm = None
    if ev.lm_eval is not None:  # its tasks are built now, so one whose data is not here fails before any model loads
        if not {"base", "tuned"} <= set(systems):
            raise ValueError("eval.lm_eval compares base with tuned; the systems evaluated need both")
        from tunesmith.evaluate.lm_eval_backend import LmEvalPlan

        lm = LmEvalPlan.prepare(ev.lm_eval, run, info.base_model, tuned_sha, own, template, cfg.train.dtype, gen_dir,
                                console)

    # seconds per stage that ran (cached stages are absent): where an evaluation's time goes
    timings: dict[str, float] = {}
    loaded: list[Any] = []

    def tokenizer() -> Any:  # loaded once, and only when something is generated or counted
        if not loaded:
            loaded.append(load_tokenizer(own, cfg.trust_remote_code, chat_template=cfg.data.chat_template))
        return loaded[0]

    def token_count(messages: list[dict[str, str]], text: str) -> tuple[int, int]:
        return token_counter(tokenizer())(messages, text)

    asked: dict[str, list[dict[str, Any]]] = {}
    for name, e in endpoints.items():
        t = time.time()
        max_tokens = e.max_tokens or limit
        key = _cache_key("endpoint", e.url, e.model, prompts[name], e.temperature, max_tokens)
        asked[name] = ask_endpoint(e, prompts[name], max_tokens=max_tokens, cache=gen_dir / f"{name}-{key}.json",
                                   count_tokens=token_count, console=console, show_progress=show_progress)
        outputs[name] = [it.get("text", "") for it in asked[name]]  # a failed request scores as no answer
        timings[f"generate.{name}"] = time.time() - t
    # re-scoring from the cache (new rules, say) must not pay for loading a model it will not run
    if len(outputs) < len(systems) or len(suite_answers) < len(suite_caches):
        t = time.time()
        if Path(info.base_model).is_absolute() and not Path(info.base_model).is_dir():
            # else the hub client reports a local path as a malformed repo id
            raise ValueError(f"{run.info_path}: base model {info.base_model} is not there any more")
        model = load_model(info.base_model, cfg.train.dtype, cfg.trust_remote_code)
        tuned_model = None  # a fully fine-tuned model is a second model; an adapter shares the base
        if "tuned" in systems:
            if run.adapter.is_dir():
                model = PeftModel.from_pretrained(model, str(run.adapter))
            else:
                tuned_model = load_model(full_model, cfg.train.dtype, cfg.trust_remote_code)
        # LoRA merges into the weights for fast generation; virtual-token adapters cannot merge.
        can_merge = isinstance(model, PeftModel) and model.peft_config["default"].peft_type.value in ("LORA",)
        timings["load"] = time.time() - t
        for system in local:
            if system in outputs:
                continue
            t = time.time()
            with _as_system(model, tuned_model, system, can_merge) as gen_model, torch.inference_mode():
                outputs[system], counted, stopped[system] = generate_counted(
                    gen_model, tokenizer(), prompts[system], max_new_tokens=limit, batch_size=ev.batch_size,
                    label=f"generate {system:<8}", console=console, show_progress=show_progress)
            caches[system].write_text(json.dumps({"outputs": outputs[system], "stopped": stopped[system]},
                                                 ensure_ascii=False), encoding="utf-8")
            # beside the generations, so re-scoring from the cache loads no tokenizer to count them
            caches[system].with_suffix(".tokens.json").write_text(json.dumps(counted), encoding="utf-8")
            if system != "tuned":
                gencache.share(caches[system])
            timings[f"generate.{system}"] = time.time() - t
        for system in suite_caches:
            if system in suite_answers:
                continue
            from tunesmith.evaluate.regression import answer_suite

            t = time.time()
            with _as_system(model, tuned_model, system, can_merge) as gen_model, torch.inference_mode():
                suite_answers[system] = answer_suite(gen_model, tokenizer(), batch_size=ev.batch_size,
                                                     label=f"regression {system:<6}", console=console,
                                                     show_progress=show_progress)
            suite_caches[system].write_text(json.dumps(suite_answers[system], ensure_ascii=False), encoding="utf-8")
            if system == "base":
                gencache.share(suite_caches[system])
            timings[f"regression.{system}"] = time.time() - t

    lm_results = lm.run(timings, console) if lm else None

    scores = {s: score_system(task, outputs[s], tests, rules) for s in systems}
    forgetting = None
    # the lm-eval tasks are more categories of the same check: paired by item, Bonferroni over all categories
    paired = {s: [] for s in ("base", "tuned")}
    if wants_regression:
        from tunesmith.evaluate.regression import score_regression

        paired = {s: score_regression(suite_answers[s])["items"] for s in paired}
    if lm_results:
        from tunesmith.evaluate.lm_eval_backend import as_suite_scores

        paired = {s: paired[s] + as_suite_scores(lm_results[s])["items"] for s in paired}
    if paired["base"]:
        from tunesmith.evaluate.regression import compare_regression, rates

        forgetting = compare_regression(rates(paired["base"]), rates(paired["tuned"]))
    examples = []
    for i, conv in enumerate(tests):
        examples.append({
            "id": i + 1,
            "line": conv.origin.line if conv.origin else None,
            "prompt": conv.last_user(),
            "reference": conv.assistant_turns()[-1],
            "outputs": {s: outputs[s][i] for s in systems},
            "passes": {s: rules.check_answer(outputs[s][i], conv.last_user()) for s in systems} if rules else {},
        })
    gate = None
    if {"tuned", against} <= set(systems):
        # compliance is a per-example pass, so the systems pair up by example; for macro F1 and field accuracy
        # the gate resamples examples from the outputs (classification with rules is still gated on macro F1)
        on_rules = primary_metric(task, scores["tuned"]) == "compliance.all"
        pairs = [(all(ex["passes"][against].values()), all(ex["passes"]["tuned"].values())) for ex in examples] \
            if on_rules and rules is not None else None
        references = [c.label for c in tests] if task == "classification" else [c.assistant_turns()[-1] for c in tests]
        gate = decide(task, scores, forgetting, margin=margin, baseline=against, pairs=pairs,
                      outputs={s: outputs[s] for s in ("tuned", against)}, references=references)
    entries: dict[str, dict[str, Any]] = {s: {"metrics": scores[s]} for s in systems}
    for s in local:
        entries[s]["usage"] = usage_record(*_local_tokens(caches[s], prompts[s], outputs[s], token_count))
    for name, items in asked.items():
        entries[name]["usage"] = usage_record(
            [(it["prompt_tokens"], it["completion_tokens"]) if "text" in it else None for it in items],
            {it["usage"] for it in items if "text" in it})
        entries[name]["endpoint"] = endpoint_record(endpoints[name], items)
        if entries[name]["endpoint"]["summary"]:
            console.print(f"[yellow]{escape(entries[name]['endpoint']['summary'])}[/]")
    results = {
        "task": task,
        "title": f"{info.name or run.path.name}: {' vs '.join(systems)}",
        "test": {"path": str(test_path), "sha256": test_sha, "n": len(tests)},
        "rules": rules_path,
        "few_shot": ev.few_shot,
        "systems": entries,
        "examples": examples,
        "regression": forgetting,
        "lm_eval": lm.summary() if lm else None,
        "gate": gate,
        "model": info.model_spec,
        "base_model_kind": info.base_model_kind,
        "stops": {s: {"n": len(v), "ran_to_limit": v.count(False), "limit": limit}
                  for s, v in stopped.items() if v is not None},
        "loss_curve": run.read_metrics(),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    run.write_results(EvalResults.model_validate(results))
    return results


def _local_tokens(cache: Path, prompts: list[list[dict[str, str]]], outputs: list[str],
                  count: Callable[[list[dict[str, str]], str], tuple[int, int]]) -> tuple[list[Any], set[str]]:
    """(prompt, completion) tokens per request of a local system as generation counted them, and their source;
    generations cached before counts were kept are counted from their text ("estimated": the special tokens
    and whitespace the decoded answer dropped are missing)."""
    kept = cache.with_suffix(".tokens.json")
    if kept.is_file():
        return [tuple(c) for c in json.loads(kept.read_text(encoding="utf-8"))], {"tokenizer"}
    return [count(m, o) for m, o in zip(prompts, outputs)], {"estimated"}


def _read_generations(path: Path) -> tuple[list[str], list[bool] | None]:
    """A system's cached answers and whether each ended on a stop token; a cache written before the endings
    were kept is a bare list of answers (endings unknown)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(raw, list):
        return raw, None
    return raw["outputs"], raw["stopped"]


@contextmanager
def _as_system(model, tuned_model, system: str, can_merge: bool):
    """The model that answers as `system`: a full fine-tune's own model for tuned, else the shared
    base with its adapter off (base, prompted) or on, merged when it is LoRA (tuned)."""
    from peft import PeftModel

    if system == "tuned" and tuned_model is not None:
        yield tuned_model
    elif not isinstance(model, PeftModel):
        yield model
    elif system != "tuned":
        with model.disable_adapter():
            yield model
    elif can_merge:
        model.merge_adapter()  # merged weights generate at base-model speed
        try:
            yield model
        finally:
            model.unmerge_adapter()
    else:
        yield model
