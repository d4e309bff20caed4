"""The embedded server's import path from before it was split into layers (tunesmith.deploy.serve)."""

from tunesmith.deploy.serve.app import create_app
from tunesmith.deploy.serve.embedded import EmbeddedEngine as Engine
from tunesmith.deploy.serve.engine import Job
from tunesmith.deploy.serve.settings import ServeSettings
from tunesmith.deploy.serve.state import Server

__all__ = ["Engine", "Job", "ServeSettings", "Server", "create_app"]
