"""The `eval:` section of a run config: the systems compared (local, or OpenAI-compatible endpoints), the
gate's baseline and lm-evaluation-harness tasks. Loaded as part of tunesmith.config.RunConfig."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from tunesmith.sections import Section as _Section


class LmEvalSettings(_Section):
    tasks: list[str] = Field(
        min_length=1,
        description="lm-evaluation-harness tasks run on base and tuned: a task YAML file, a folder of them (data "
        "files relative to each YAML), or a built-in lm-eval task name (its data must already be in the local "
        "Hugging Face cache: nothing is downloaded).",
    )
    limit: int | None = Field(None, ge=1, description="Score only the first N items of each task (all when unset).")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples per item (default: the task's own).")
    batch_size: int = Field(8, ge=1, description="Requests lm-eval scores together.")


LOCAL_SYSTEMS = ("base", "prompted", "tuned")


class EndpointSystem(_Section):
    """An eval system answered by an OpenAI-compatible endpoint (a hosted model with the production prompt, a
    vLLM server, `tunesmith serve`), generated and scored like the local systems."""

    name: str = Field(description="Name of the system in results, report and gate (not base/prompted/tuned).")
    url: str = Field(description="OpenAI-compatible API root, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name as the endpoint knows it.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (read at run "
                             "time, never stored); unset is fine for local servers.")
    system_prompt: str | None = Field(None, description="System prompt sent instead of the test conversation's own "
                                      "(e.g. the production prompt); null: the conversation's.")
    few_shot: int = Field(0, ge=0, description="Few-shot examples from train put before each question, drawn like "
                          "the prompted baseline's.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Answer length limit; null: the one the local systems "
                                   "get (longest reference + 25%, at most eval.max_new_tokens).")
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one reply.")
    retries: int = Field(3, ge=0, description="Retries with backoff after a 429, a 5xx, a timeout or a lost "
                         "connection; then the item counts as failed to generate (scored as an empty answer).")
    rate_limit: float | None = Field(None, gt=0, description="Requests per minute at most; null: no limit.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")

    @field_validator("name")
    @classmethod
    def _not_local(cls, v: str) -> str:
        # the other names are keys beside the systems' in `eval RUN --json`
        taken = (*LOCAL_SYSTEMS, "task", "gate", "regression", "judge", "report", "run_dir", "usage", "endpoints")
        if v in taken or not v.strip() or "/" in v:
            raise ValueError(f"endpoint name {v!r}: must be non-empty, without '/', and not one of {', '.join(taken)}")
        return v

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r}: expected an http:// or https:// URL, the API's root (e.g. "
                             "http://127.0.0.1:8000/v1)")
        return v


# a name is a local system, a mapping an endpoint: errors then name the one kind the entry meant
SystemEntry = Annotated[
    Union[Annotated[Literal["base", "prompted", "tuned"], Tag("local")], Annotated[EndpointSystem, Tag("endpoint")]],
    Discriminator(lambda v: "local" if isinstance(v, str) else "endpoint"),
]


class EvalSettings(_Section):
    systems: list[SystemEntry] = Field(
        default_factory=lambda: ["base", "prompted", "tuned"],
        description="Systems compared on the test split: base, prompted, tuned, and any OpenAI-compatible "
        "endpoint as {name, url, model, api_key_env, system_prompt, few_shot, rate_limit, concurrency, retries}.",
    )
    few_shot: int = Field(3, ge=0, description="Few-shot examples from train in the prompted baseline.")
    few_shot_seed: int = Field(0, description="Which few-shot examples are drawn. The eval's own, not train.seed: "
                               "runs that differ only in their training seed face the same prompted baseline "
                               "(and share its cached answers).")
    max_new_tokens: int = Field(256, ge=1, description="Generation limit per answer.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together (left padding, KV cache).")
    max_examples: int | None = Field(None, ge=1, description="Evaluate only the first N test examples.")
    regression: bool = Field(False, description="Also run the built-in general-prompt regression suite.")
    lm_eval: LmEvalSettings | None = Field(
        None, description="Also run lm-evaluation-harness tasks on base and tuned; each task is one more category "
        "of the regression check, paired item by item (pip extra tunesmith[lm-eval], see README).",
    )
    gate_against: str = Field("prompted", description="System the gate compares tuned with: prompted or an "
                              "endpoint system's name (`eval run --against NAME` overrides it).")

    @model_validator(mode="after")
    def _names(self) -> "EvalSettings":
        names = self.names()
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"eval.systems: {', '.join(twice)} listed twice")
        if self.gate_against != "prompted" and self.gate_against not in names:
            raise ValueError(f"eval.gate_against: {self.gate_against!r} is not in eval.systems "
                             f"({', '.join(names)})")
        return self

    def names(self) -> list[str]:
        return [s if isinstance(s, str) else s.name for s in self.systems]

    def endpoints(self) -> dict[str, EndpointSystem]:
        return {s.name: s for s in self.systems if isinstance(s, EndpointSystem)}
