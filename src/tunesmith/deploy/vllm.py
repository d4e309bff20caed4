"""What vLLM can serve of a registry, and the `vllm serve` command for people who run vLLM themselves.

`tunesmith serve --engine vllm` runs vLLM as a child behind its own front (serve/vllm_engine.py) and
only needs the servability checks here: vLLM loads LoRA weights on attention and MLP layers only, up to
the rank it was started with. `vllm_command` (`--print`) freezes the aliases into a command line: every
alias becomes a `--lora-modules` entry under its own name (pointing at its main version) and every
version an alias touches is also exposed under its id, so canary traffic can be routed to it by name.
vLLM has no traffic splits; `notes` says which splits a router in front has to do.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.deploy.registry import Registry, RegistryError, Version
from tunesmith.deploy.servability import VLLM_RANKS, lora_rank, vllm_findings


def vllm_rank(rank: int) -> int:
    """The --max-lora-rank that holds `rank`."""
    fit = next((r for r in VLLM_RANKS if r >= rank), None)
    if fit is None:
        raise RegistryError(f"LoRA rank {rank} is above vLLM's maximum of {VLLM_RANKS[-1]}")
    return fit


def unservable(v: Version, max_rank: int | None = None) -> str | None:
    """Why vLLM cannot serve this version (a sentence naming it), or None."""
    found = vllm_findings(v, max_rank)
    return found[0].message if found else None


def vllm_command(registry: Registry, host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None) -> tuple[list[str], list[str]]:
    """(argv, notes) for `vllm serve BASE --enable-lora --lora-modules ...`."""
    aliases = registry.aliases()
    if not aliases:
        raise RegistryError(f"registry {registry.path} has no aliases; create one: tunesmith registry alias NAME@LABEL VERSION")
    modules: dict[str, Path] = {}
    versions = {}
    notes = []
    for a in aliases:
        for vid, _ in a.targets:
            versions[vid] = registry.version(vid)
        modules[a.alias] = versions[a.targets[0][0]].adapter_dir
        if len(a.targets) > 1:
            shares = ", ".join(f"{v} {w:.0%}" for v, w in a.targets)
            notes.append(f"{a.alias} splits traffic ({shares}); vLLM serves only {a.targets[0][0]} under "
                         f"{a.alias} -- send the other shares to the version names from your router")
        if a.guard != "off":
            notes.append(f"{a.alias} has a rules guard ({a.guard}); vLLM does not apply it")
    for vid, v in versions.items():
        if v.peft_type not in (None, "LORA"):
            raise RegistryError(f"version {vid} is a {v.peft_type.lower()} adapter; vLLM serves LoRA adapters only "
                                "(use `tunesmith serve`)")
        modules[vid] = v.adapter_dir
    bases = {str(Path(v.base_model).resolve()) for v in versions.values()}
    if len(bases) != 1:
        raise RegistryError(f"aliases point at versions of {len(bases)} different base models; one vLLM server holds one")
    for v in versions.values():
        v.check_files()  # vLLM would fail at start-up on a deleted adapter; say which one here
    rank = vllm_rank(max(lora_rank(v) for v in versions.values()))
    argv = ["vllm", "serve", bases.pop(), "--served-model-name", "base", "--host", host, "--port", str(port),
            "--enable-lora", "--max-lora-rank", str(rank),
            # vLLM gives every module name its own LoRA slot, even two names for one adapter directory
            "--max-loras", str(len(modules))]
    if api_key:  # without it the vLLM server would answer anyone, unlike the embedded one asked for
        argv += ["--api-key", api_key]
    # vLLM renders chats with the base's template; a run may have trained with its own (data.chat_template).
    own = {t: v.adapter_dir / "chat_template.jinja" for v in versions.values() if (t := _template(v.adapter_dir))}
    if own and set(own) != {_template(Path(argv[2]))}:
        if len(own) == 1:
            argv += ["--chat-template", str(next(iter(own.values())))]
        else:
            notes.append("the versions were trained with different chat templates; one vLLM server applies one")
    prompted = sorted(vid for vid, v in versions.items() if v.lineage.get("system_prompt"))
    if prompted:
        notes.append(f"{', '.join(prompted)} trained with a system prompt that vLLM does not add; send it in "
                     "each request")
    argv += ["--lora-modules"] + [f"{name}={path}" for name, path in modules.items()]
    return argv, notes


def _template(model_dir: Path) -> str | None:
    path = model_dir / "chat_template.jinja"
    return path.read_text(encoding="utf-8") if path.is_file() else None
