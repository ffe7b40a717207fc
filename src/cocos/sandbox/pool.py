"""The sandbox's worker processes (part of `cocos.sandbox`): their settings, start and stop.

Each `_Worker` is one `python -I .../sandbox/worker/__main__.py` process with a clean environment,
talking JSON lines over its stdin/stdout (run by file path, never imported here: the worker holds only
the standard library, see worker/__init__.py); the `_Pool` starts and replaces them, and warns (or refuses, with
COCOS_SANDBOX_REQUIRE_ISOLATION=1) when the sandbox runs without full isolation.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import warnings
from pathlib import Path

_WORKER_SCRIPT = Path(__file__).with_name("worker") / "__main__.py"  # run as a file: see its docstring


class SandboxIsolationError(RuntimeError):
    """Full isolation was demanded (COCOS_SANDBOX_REQUIRE_ISOLATION=1) but is not available."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _worker_config() -> dict:
    mem_mb = int(os.environ.get("COCOS_SANDBOX_MEMORY_MB", "2048"))
    home = os.path.expanduser("~")
    keep = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable)), str(_WORKER_SCRIPT.parent)}
    keep |= {p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)}
    hide = {"/root", "/home", "/run", "/var/tmp", "/sys", "/mnt", "/media", "/srv", "/opt/secrets"}
    if home and home != "/":
        hide.add(home)
    preload = [m.strip() for m in os.environ.get("COCOS_SANDBOX_PRELOAD", "").split(",") if m.strip()]
    return {"isolate": os.environ.get("COCOS_SANDBOX_ISOLATION", "1").strip() != "0",
            "keep": sorted(keep), "hide": sorted(hide), "memory_bytes": mem_mb << 20,
            "cgroup_bytes": (mem_mb + 1024) << 20, "tmp_bytes": 256 << 20, "fsize_bytes": 64 << 20,
            "nproc": int(os.environ.get("COCOS_SANDBOX_NPROC", "64")), "preload": preload,
            "fork_per_test": _env_flag("COCOS_SANDBOX_FORK_PER_TEST")}


def _describe(status: dict) -> tuple[bool, str]:
    full = status["namespaces"] and status["readonly_root"] and status["uid_nobody"] and not any(
        p.startswith("mount") for p in status["problems"])
    if full:
        parts = ["full isolation: user, pid, network, mount, ipc and uts namespaces",
                 "read-only filesystem with a private /tmp", "hidden " + ", ".join(status["hidden"]),
                 "clean environment", "uid 65534, no new privileges", "rlimits"]
        parts.append("memory cgroup" if status["cgroup"] else "no memory cgroup")
        return True, "; ".join(parts)
    return False, "limits only (NOT isolated: " + "; ".join(status["problems"] or ["unknown reason"]) + ")"


class _Worker:
    def __init__(self, cfg: dict):
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONDONTWRITEBYTECODE": "1"}  # the caller's secrets never reach the worker
        self.proc = subprocess.Popen([sys.executable, "-I", str(_WORKER_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True,
                                     cwd="/")
        self.proc.stdin.write((json.dumps(cfg) + "\n").encode())
        self.proc.stdin.flush()
        line = self._readline(timeout=120)
        reply = json.loads(line) if line else {}
        if not reply.get("ready"):
            self.close()
            raise RuntimeError(f"sandbox worker failed to start: {reply.get('error', 'no answer')}")
        self.status = reply["status"]
        self.job: tuple | None = None  # (batch index, checks, deadline)

    def _readline(self, timeout: float) -> bytes:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        return self.proc.stdout.readline() if ready else b""

    def send(self, job: dict) -> None:
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Pool:
    def __init__(self) -> None:
        self.workers: list[_Worker] = []
        self.cfg: dict | None = None
        self.full: bool | None = None
        self.description = ""
        self.warned = False

    def ensure(self, n: int) -> None:
        if self.cfg is None:
            self.cfg = _worker_config()
        while len(self.workers) < n:
            w = _Worker(self.cfg)
            self.workers.append(w)
            if self.full is None:
                self.full, self.description = _describe(w.status)
        while len(self.workers) > n:
            self.workers.pop().close()
        if not self.full:
            if _env_flag("COCOS_SANDBOX_REQUIRE_ISOLATION"):
                raise SandboxIsolationError(
                    "COCOS_SANDBOX_REQUIRE_ISOLATION=1 but the sandbox has " + self.description +
                    "; run on Linux with user namespaces enabled (see docs/sandbox.md) or unset the variable")
            if not self.warned:
                self.warned = True
                msg = ("\n" + "!" * 78 + "\ncocos.sandbox: generated code runs with " + self.description +
                       ".\nIt can read your files and environment and reach the network. "
                       "See docs/sandbox.md.\n" + "!" * 78)
                print(msg, file=sys.stderr, flush=True)
                warnings.warn("cocos.sandbox runs without full isolation: " + self.description,
                              RuntimeWarning, stacklevel=4)

    def replace(self, w: _Worker) -> _Worker:
        try:
            w.proc.kill()
        except OSError:
            pass
        w.close()
        new = _Worker(self.cfg)
        self.workers[self.workers.index(w)] = new
        return new

    def shutdown(self) -> None:
        while self.workers:
            self.workers.pop().close()
        self.__init__()  # settings are read again at the next start


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)

