"""Test-wide settings: never reach the Hugging Face Hub; share one tiny model and one deploy
environment per session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-weight Llama-shaped model + locally trained tokenizer, built once (about a second)."""
    from tunesmith.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run ~20x faster on one thread than fighting for two busy cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _own_shared_generations(tmp_path, monkeypatch):
    """Each test its own store of base-model answers (evaluate/gencache.py): one test's cached baseline must
    not answer for another's (tests of the store itself share one on purpose)."""
    from tunesmith.evaluate import gencache

    monkeypatch.setattr(gencache, "store", lambda: tmp_path / "shared-generations")


@pytest.fixture(scope="session")
def deploy_env(tmp_path_factory):
    """A tiny base and three finished runs of one family (about 5 s), shared by the deploy and e2e tests."""
    from tests.helpers import DeployEnv

    return DeployEnv(tmp_path_factory.mktemp("deploy"))
