"""lm-evaluation-harness tasks as more categories of the regression check (`eval.lm_eval`).

Each task is run with lm-eval's own Python API (`simple_evaluate`, its "hf" model: the base model
alone, then with the run's adapter through lm-eval's peft support) with per-sample logging on, so base
and tuned pair up item by item exactly like the built-in suite: an item passes when its per-sample
metric (the first of the task's metrics whose per-sample values are 0/1: acc, acc_norm, exact_match)
is 1. The items become category "lm-eval:TASK" of tunesmith.evaluate.regression, which judges them.

Tasks are built before any model loads, so a task whose data is not on this machine fails first:
HF_HUB_OFFLINE / HF_DATASETS_OFFLINE hold, nothing is downloaded. A task YAML's
`dataset_kwargs.data_files` may be relative to the YAML.

lm-eval is an optional dependency (scripts/install.sh --dev or --with-lm-eval): imported here only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from tunesmith.config import looks_like_task_path
from tunesmith.eval_settings import LmEvalSettings
from tunesmith.errors import UserError
from tunesmith.evaluate.regression import rates

CATEGORY = "lm-eval:"
INSTALL = ("pip install --no-deps lm-eval==0.4.13 && pip install sacrebleu==2.6.0 sqlitedict==2.1.0 "
           "more-itertools==11.2.1 (or scripts/install.sh --with-lm-eval)")
_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas"}


class LmEvalError(UserError):
    """An eval.lm_eval task that cannot run here; the message names it and says what to do."""


def _lm_eval():
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets.config
    import huggingface_hub.constants

    # both read the variables when first imported, which may have been before this: set where they keep them too
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LmEvalError(f"eval.lm_eval needs lm-evaluation-harness, which is not installed: {INSTALL}") from None
    for name in ("lm-eval", "lm_eval"):  # its INFO lines would drown tunesmith's own progress
        logging.getLogger(name).setLevel(logging.WARNING)
    return lm_eval, TaskManager


def _absolute_data_files(files: Any, folder: Path) -> Any:
    if isinstance(files, str):
        return files if "://" in files or Path(files).is_absolute() else str(folder / files)
    if isinstance(files, list):
        return [_absolute_data_files(f, folder) for f in files]
    if isinstance(files, dict):
        return {k: _absolute_data_files(v, folder) for k, v in files.items()}
    return files


def _yaml_spec(path: Path) -> dict[str, Any]:
    """A task YAML as lm-eval reads it (includes, !function), its data files made absolute against its folder
    (datasets would read them against the working directory)."""
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader TaskManager itself uses

    try:
        cfg = load_yaml(path)
    except (OSError, ValueError, ImportError, AttributeError) as e:
        raise LmEvalError(f"cannot read the task: {e}", file=str(path)) from None
    except Exception as e:  # yaml's errors carry the line
        raise LmEvalError(f"not a valid task YAML: {e}", file=str(path)) from None
    if "task" not in cfg:
        raise LmEvalError("no `task:` name (task groups are not supported here; list their tasks)", file=str(path))
    kwargs = cfg.get("dataset_kwargs") or {}
    if "data_files" in kwargs:
        cfg["dataset_kwargs"] = {**kwargs, "data_files": _absolute_data_files(kwargs["data_files"], path.parent)}
    return cfg


def _builtin_yaml(name: str) -> Path | None:
    """The YAML of a built-in lm-eval task, found by its `task:` line (indexing all ~14,000 built-in YAMLs through
    TaskManager takes a minute; reading them as text a few seconds)."""
    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    line = re.compile(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.M)
    for path in sorted(root.rglob(f"{name}.yaml")) + sorted(root.rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if name in text and line.search(text):
            return path
    return None


def _specs(entry: str) -> list[tuple[str, Any]]:
    """(what the user named, an lm-eval task spec) for one eval.lm_eval.tasks entry."""
    if looks_like_task_path(entry):
        path = Path(entry).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
            specs = [(str(p), _yaml_spec(p)) for p in files if "task:" in p.read_text(encoding="utf-8", errors="replace")]
            if not specs:
                raise LmEvalError("a folder without any task YAML (a file with a `task:` name)", file=entry,
                                  field="eval.lm_eval.tasks")
            return specs
        if not path.is_file():
            raise LmEvalError("no such task YAML file or folder", file=entry, field="eval.lm_eval.tasks")
        return [(entry, _yaml_spec(path))]
    yaml_path = _builtin_yaml(entry)
    if yaml_path is None:
        raise LmEvalError(f"eval.lm_eval.tasks: {entry!r} is neither a task YAML path nor a built-in lm-eval task; "
                          "give the path of a task YAML file (README: lm-eval tasks)")
    return [(entry, yaml_path)]


def load_tasks(settings: LmEvalSettings) -> dict[str, Any]:
    """name -> lm-eval Task for every entry, data loaded (from local files or the local Hugging Face cache only).
    Raises LmEvalError naming the task and what to do when its data is not on this machine."""
    _, TaskManager = _lm_eval()
    tasks: dict[str, Any] = {}
    for entry in settings.tasks:
        for named, spec in _specs(entry):
            if isinstance(spec, Path):  # a built-in: its folder holds what it includes
                manager, load, dataset = TaskManager(include_defaults=False, include_path=str(spec.parent)), named, \
                    _dataset_of(spec)
            else:
                manager, load, dataset = TaskManager(include_defaults=False), spec, spec.get("dataset_path")
            try:
                built = manager.load([load])["tasks"]
            except Exception as e:  # lm-eval and datasets raise anything from KeyError to ConnectionError
                raise _unavailable(named, dataset, e) from None
            for name, task in built.items():
                if name in tasks:
                    raise LmEvalError(f"eval.lm_eval.tasks: task {name!r} is given twice ({named})")
                tasks[name] = task
    return tasks


def _dataset_of(path: Path) -> str | None:
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        return load_yaml(path, resolve_func=False).get("dataset_path")
    except Exception:
        return None


def _unavailable(named: str, dataset: str | None, error: Exception) -> LmEvalError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hub = dataset and dataset not in _LOCAL_BUILDERS and not Path(dataset).expanduser().exists()
    if hub:
        return LmEvalError(
            f"lm-eval task {named!r} reads data set {dataset!r} from the Hugging Face Hub, which is not in the "
            f"local cache ({reason}); tunesmith downloads nothing: fetch it once beforehand (`hf download "
            f"--repo-type dataset {dataset}`) or write a local task YAML over a JSONL file (`dataset_path: json`, "
            "`dataset_kwargs: {data_files: ...}`; README: lm-eval tasks)")
    return LmEvalError(f"lm-eval task {named!r} cannot be loaded: {reason}")


def task_fingerprint(task: Any) -> str:
    """Hash of what a task's scores depend on: its config and its documents (the data, not the file's name)."""
    def plain(o: Any) -> str:  # a !function is its name, not its address in memory
        return getattr(o, "__qualname__", None) or type(o).__name__

    docs = list(task.eval_docs)
    fewshot = task.fewshot_docs() if (task.get_config("num_fewshot") or 0) > 0 else None
    blob = json.dumps([task.dump_config(), docs, list(fewshot) if fewshot is not None else None],
                      sort_keys=True, default=plain)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_args(base_model: str, tokenizer: str | Path, dtype: str, adapter: Path | None = None,
               full_model: Path | None = None) -> dict[str, Any]:
    """lm-eval "hf" model arguments: the base (or a full fine-tune's own model), the run's adapter through
    lm-eval's peft support, the run's tokenizer for both, safetensors only, no remote code."""
    import torch

    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    args: dict[str, Any] = {"pretrained": str(full_model or base_model), "tokenizer": str(tokenizer), "dtype": dtype,
                            "device": "cuda" if torch.cuda.is_available() else "cpu", "trust_remote_code": False,
                            "use_safetensors": True}
    if adapter is not None:
        args["peft"] = str(adapter)
    return args


def run_tasks(tasks: dict[str, Any], args: dict[str, Any], settings: LmEvalSettings) -> dict[str, Any]:
    """One model on every task: {task: {"metrics": lm-eval's aggregate scores, "metric": the per-item pass metric
    (None when the task has no 0/1 metric), "n", "items": [{"doc_id", "prompt", "output", "target", "scores"}]}}."""
    lm_eval, TaskManager = _lm_eval()
    out = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=list(tasks.values()), limit=settings.limit,
                                  num_fewshot=settings.num_fewshot, batch_size=settings.batch_size,
                                  log_samples=True, bootstrap_iters=0, task_manager=TaskManager(include_defaults=False))
    results = {}
    for name in tasks:
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        metric_names = [m for m in samples[0]["metrics"] if m in samples[0]] if samples else []
        metric = next((m for m in metric_names if all(_binary(s[m]) for s in samples)), None)
        metrics = {k.split(",")[0]: v for k, v in out["results"][name].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and "_stderr" not in k
                   and k != "sample_len"}
        results[name] = {"metrics": metrics, "metric": metric, "n": len(samples),
                         "items": [_item(s, metric_names) for s in samples]}
    return results


def _binary(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) and float(value) in (0.0, 1.0)


def _item(sample: dict[str, Any], metric_names: list[str]) -> dict[str, Any]:
    """The few fields of an lm-eval sample a reader needs: the prompt, the model's answer (the most likely
    choice for a multiple-choice task, else the filtered generation) and the per-item scores."""
    args = sample["arguments"]
    resps = sample["filtered_resps"]
    first = args[0] if args else None
    if first and len(first) == 2 and all(isinstance(x, str) for x in first) and len(resps) == len(args) \
            and all(isinstance(r, (list, tuple)) and r for r in resps):
        best = max(range(len(resps)), key=lambda i: resps[i][0])  # loglikelihood per choice: the pick
        prompt, output = first[0], args[best][1].strip()
    else:
        prompt = first[0] if first else ""
        output = resps[0] if resps and isinstance(resps[0], str) else json.dumps(resps, default=str)
    return {"doc_id": sample["doc_id"], "prompt": prompt, "output": output, "target": str(sample["target"]),
            "scores": {m: float(sample[m]) for m in metric_names}}


def as_suite_scores(results: dict[str, Any]) -> dict[str, Any]:
    """One model's task results in the shape of regression.score_regression (items with id, category, prompt,
    output, passed, failed_checks): tasks with a per-item pass metric only."""
    items = []
    for name, res in results.items():
        metric = res["metric"]
        if metric is None:
            continue
        for it in res["items"]:
            passed = it["scores"][metric] == 1.0
            items.append({"id": f"{CATEGORY}{name}:{it['doc_id']}", "category": f"{CATEGORY}{name}",
                          "prompt": it["prompt"], "output": it["output"], "passed": passed,
                          "failed_checks": [] if passed else [f"{metric} 0 (target {it['target']})"]})
    return rates(items)


def _summary(base: dict[str, Any], tuned: dict[str, Any], settings: LmEvalSettings, version: str) -> dict[str, Any]:
    """results.json `lm_eval`: per task the metric that pairs items, n, and both systems' lm-eval scores."""
    return {"version": version, "limit": settings.limit, "num_fewshot": settings.num_fewshot,
            "tasks": {name: {"metric": base[name]["metric"], "n": base[name]["n"], "category": f"{CATEGORY}{name}"
                             if base[name]["metric"] else None,
                             "base": base[name]["metrics"], "tuned": tuned[name]["metrics"]} for name in base}}


class LmEvalPlan:
    """eval.lm_eval for one run: its tasks built, both systems' lm-eval model arguments and cache files (under
    eval/generations/, keyed by the lm-eval version, each task's fingerprint, limit, few-shot, the model (the
    adapter's hash for tuned) and the tokenizer), and what the cache already holds."""

    def __init__(self, settings: LmEvalSettings, tasks: dict[str, Any], args: dict[str, dict[str, Any]],
                 caches: dict[str, Path], version: str):
        self.settings, self.tasks, self.args, self.caches, self.version = settings, tasks, args, caches, version
        self.results: dict[str, Any] = {s: json.loads(c.read_text(encoding="utf-8"))
                                        for s, c in caches.items() if c.is_file()}

    @classmethod
    def prepare(cls, settings: LmEvalSettings, run, base_model: str, tuned_sha: str | None, tokenizer: str | Path,
                template: Any, dtype: str, gen_dir: Path, console) -> "LmEvalPlan":
        adapter = run.adapter if run.adapter.is_dir() else None
        if adapter is not None:
            peft_type = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")
            if peft_type != "LORA":  # prompt/prefix tuning put virtual tokens before the ones lm-eval scores
                raise LmEvalError(f"eval.lm_eval scores LoRA adapters and full fine-tunes; {adapter} is a {peft_type} "
                                  "adapter")
        tasks = load_tasks(settings)
        lm_eval, _ = _lm_eval()
        prints = {name: task_fingerprint(t) for name, t in tasks.items()}
        args, caches = {}, {}
        for system in ("base", "tuned"):
            model = tuned_sha if system == "tuned" else base_model
            key = hashlib.sha256(json.dumps([lm_eval.__version__, prints, settings.limit, settings.num_fewshot, model,
                                             template, str(tokenizer)], sort_keys=True, default=str).encode())
            caches[system] = gen_dir / f"lm_eval-{system}-{key.hexdigest()[:16]}.json"
            args[system] = model_args(base_model, tokenizer, dtype, adapter=adapter if system == "tuned" else None,
                                      full_model=run.path / "model" if system == "tuned" and adapter is None else None)
        plan = cls(settings, tasks, args, caches, lm_eval.__version__)
        for system in plan.results:
            console.print(f"[dim]lm-eval {system}: {len(tasks)} task(s) from cache[/]")
        return plan

    def run(self, timings: dict[str, float], console) -> dict[str, Any]:
        """Both systems' task results ({"base": run_tasks(...), "tuned": ...}), running what is not cached."""
        import time

        for system in ("base", "tuned"):
            if system in self.results:
                continue
            console.print(f"lm-eval {system}: {', '.join(self.tasks)} (lm-eval's own progress bars follow)")
            t = time.time()
            self.results[system] = run_tasks(self.tasks, self.args[system], self.settings)
            self.caches[system].write_text(json.dumps(self.results[system], ensure_ascii=False), encoding="utf-8")
            timings[f"lm_eval.{system}"] = time.time() - t
        return self.results

    def summary(self) -> dict[str, Any]:
        return _summary(self.results["base"], self.results["tuned"], self.settings, self.version)
