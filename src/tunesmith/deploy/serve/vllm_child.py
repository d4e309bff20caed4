"""One vLLM OpenAI server as a child process: started, waited for, watched, restarted, stopped.

The child listens on a free loopback port with a secret key of its own, so nothing reaches it except through
tunesmith's front (keys, registry, guard, request log). It runs in its own process group, so stopping it
also ends the engine-core processes vLLM starts; and it is told to die with the thread that started it
(PR_SET_PDEATHSIG), so a `tunesmith serve` killed hard leaves no vLLM behind. A supervisor thread owns it:
it starts the child, polls /health until vLLM answers, then watches for an exit, which it reports and
answers with a restart (a bounded number of times in a row).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import httpx

_log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


class ChildStartError(RuntimeError):
    """vLLM did not become ready; the message ends with the last lines of its log."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: stop() still ends the child; only a hard kill of tunesmith would orphan it
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmChild:
    """`argv` gets `--host 127.0.0.1 --port P` appended; `on_exit(reason)` is called from the supervisor thread
    whenever a running child exits unasked (before any restart)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, startup_timeout_s: float = 900,
                 max_restarts: int = 3, on_exit: Callable[[str], None] = lambda reason: None):
        self.argv, self.log_path = argv, log_path
        self.env = {**os.environ, **env}
        self.key = secrets.token_urlsafe(24)
        self.env["VLLM_API_KEY"] = self.key  # in the environment, not the argv that `ps` shows everyone
        self.startup_timeout_s, self.max_restarts, self.on_exit = startup_timeout_s, max_restarts, on_exit
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.state = "starting"  # starting | ready | dead | stopped
        self.error: str | None = None  # why it is not ready
        self.restarts = 0
        self.startup_s: float | None = None  # how long the last start took
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._supervise, name="tunesmith-vllm-child", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the child and return once it answers; ChildStartError (with its log's tail) if it never does."""
        self._thread.start()
        try:
            with self._changed:
                self._changed.wait_for(lambda: self.state != "starting")
        except BaseException:  # Ctrl-C while vLLM starts: take it down with us
            self.stop()
            raise
        if self.state != "ready":
            why = self.error or "vLLM did not start"
            self.stop()
            raise ChildStartError(why)

    def stop(self) -> None:
        self._stopping.set()
        self._kill()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        self._set("stopped", "stopped")

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- the supervisor thread -------------------------------------------------------------

    def _supervise(self) -> None:
        failures = 0  # starts in a row that did not reach ready, or ended in an exit
        while not self._stopping.is_set():
            ready = self._spawn_and_wait()
            if self._stopping.is_set():
                return
            if ready:
                code = self._watch()
                if self._stopping.is_set():
                    return
                reason = f"vLLM (pid {self.proc.pid}) {self._how_it_ended(code)}"
                self._kill()  # its engine-core processes may outlive it
                failures = 1
            else:
                reason = self.error or "vLLM did not start"
                failures += 1
                if self.restarts == 0 and self.startup_s is None:  # the first start failed: start() reports it
                    self._set("dead", reason)
                    return
            _log.error("%s", reason)
            self.on_exit(reason)
            if failures > self.max_restarts:
                self._set("dead", f"{reason}; gave up after {self.max_restarts} restarts (log: {self.log_path})")
                return
            self._set("dead", f"{reason}; restarting it ({failures} of {self.max_restarts})")
            if self._stopping.wait(min(30.0, 2.0 ** failures)):
                return
            self.restarts += 1

    def _spawn_and_wait(self) -> bool:
        self.port = free_port()
        argv = [*self.argv, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            log.write(f"\n---- tunesmith: starting {' '.join(argv)}\n".encode())
            self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            while not self._stopping.is_set():
                if self.proc.poll() is not None:
                    self.error = (f"vLLM exited with code {self.proc.returncode} while starting "
                                  f"(log: {self.log_path}):\n{self.tail()}")
                    return False
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        self.startup_s = time.monotonic() - started
                        self._set("ready", None)
                        return True
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() - started > self.startup_timeout_s:
                    self._kill()
                    self.error = (f"vLLM did not answer /health within {self.startup_timeout_s:g} s "
                                  f"(log: {self.log_path}):\n{self.tail()}")
                    return False
                self._stopping.wait(0.5)
        return False

    def _watch(self) -> int:
        assert self.proc is not None
        while not self._stopping.is_set():
            try:
                return self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        return self.proc.returncode or 0

    def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of its group: vLLM's engine-core processes
        proc.wait()

    def _how_it_ended(self, code: int) -> str:
        if code < 0:  # a signal (the OOM killer's SIGKILL, say): its last log line is not the cause
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}: {self._last_line()}"

    def _last_line(self) -> str:
        lines = [ln for ln in self.tail(40).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "(no output)"

    def _set(self, state: str, error: str | None) -> None:
        with self._changed:
            self.state, self.error = state, error
            self._changed.notify_all()
