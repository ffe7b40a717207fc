"""The caller's calls of `cocos.sandbox`: the records, `run_tests`/`run_batch`, handing jobs to workers.

One pool of warm workers per caller process (started on first use, stopped at exit), shared by every
call under one lock; `_dispatch` keeps each worker busy with one program at a time and replaces a
worker that dies or stops answering, so that one bad program costs only its own outcomes.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import selectors
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

from cocos.errors import UserError
from cocos.sandbox.checks import outcome, prepare_job
from cocos.sandbox.pool import _default_workers, _Pool, _Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestOutcome:
    """The result of one test. `error_type` names the exception for status "error" (builtin
    exceptions by their name, e.g. "ModuleNotFoundError"; classes the program defined are
    qualified, e.g. "__main__.ModuleNotFoundError")."""

    __test__ = False  # not a pytest test class

    status: str  # "passed" | "failed" | "error" | "timeout"
    error_type: str | None = None
    message: str = ""
    output: str = ""  # the first KiB of what the test printed

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class SandboxJob:
    """One program and its tests (run_batch also takes (code, tests[, setup]) tuples)."""

    code: str
    tests: list[str]
    setup: str = ""


_pool = _Pool()
_lock = threading.RLock()
atexit.register(lambda: _pool.shutdown())


def isolation_status() -> str:
    """A short description of the isolation the sandbox runs with (starts a worker if needed)."""
    with _lock:
        _pool.ensure(max(1, len(_pool.workers)))
        return _pool.description


def isolation_active() -> bool:
    """True when untrusted code runs with full isolation (namespaces, read-only filesystem, ...)."""
    with _lock:
        _pool.ensure(max(1, len(_pool.workers)))
        return bool(_pool.full)


def shutdown() -> None:
    """Stop the worker processes (they also stop when the caller exits)."""
    with _lock:
        _pool.shutdown()


def _check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or not 0 < timeout <= 3600:
        raise UserError(f"timeout must be a number of seconds in (0, 3600], got {timeout!r}")
    return float(timeout)


def run_tests(code: str, tests: list[str], *, setup: str = "", timeout: float = 3.0) -> list[TestOutcome]:
    """Run `setup`, then `code`, then each test on its own; one TestOutcome per test, in order."""
    return run_batch([(code, tests, setup)], timeout=timeout, workers=None)[0]


def run_batch(jobs: Iterable[Any], *, timeout: float = 3.0, workers: int | None = None) -> list[list[TestOutcome]]:
    """Run many programs through the worker pool; results in input order.

    jobs: (code, tests) or (code, tests, setup) tuples, SandboxJob records, or dicts with those keys.
    timeout: seconds per test; the program's own code gets as long again, and a whole program at
    most 2 * (tests + 1) * (timeout + 1) seconds. workers: pool size (default: the usable cores)."""
    timeout = _check_timeout(timeout)
    if jobs is None or isinstance(jobs, (str, bytes)):
        raise UserError("jobs must be an iterable of (code, tests, setup) tuples")
    prepared = [prepare_job(job, i) for i, job in enumerate(jobs)]
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers must be a positive integer or None, got {workers!r}")
    n_workers = min(workers or _default_workers(), max(1, len(prepared)))
    results: list[list[TestOutcome] | None] = [None] * len(prepared)
    if not prepared:
        return []
    with _lock:
        _pool.ensure(max(n_workers, len(_pool.workers) if workers is None else n_workers))
        _dispatch(prepared, results, timeout, _pool.workers[:n_workers])
    return results  # type: ignore[return-value]


def _dispatch(prepared, results, timeout, workers) -> None:
    queue = deque(range(len(prepared)))
    idle = list(workers)
    busy: dict[int, _Worker] = {}  # stdout fd -> worker
    sel = selectors.DefaultSelector()
    bar = None
    if len(prepared) >= 200:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(prepared), desc="sandbox", unit="prog", leave=False, disable=None)
        except ImportError:
            pass
    try:
        while queue or busy:
            while idle and queue:
                w, i = idle.pop(), queue.popleft()
                job, checks = prepared[i]
                limit = 2 * (len(checks) + 1) * (timeout + 1) + 15  # the worker stops well before
                w.job = (i, checks, time.monotonic() + limit)
                w.send({"id": i, "timeout": timeout, **job})
                busy[w.proc.stdout.fileno()] = w
                sel.register(w.proc.stdout, selectors.EVENT_READ)
            for key, _ in sel.select(timeout=0.5):
                w = busy.pop(key.fd)
                sel.unregister(w.proc.stdout)
                i, checks, _ = w.job
                line = w.proc.stdout.readline()
                results[i] = _collect(line, checks)
                if results[i] is None:  # the worker died: its job errs, a fresh worker takes over
                    results[i] = [TestOutcome("error", "SandboxError", "the sandbox worker stopped")] * len(checks)
                    w = _pool.replace(w)
                idle.append(w)
                if bar:
                    bar.update(1)
            now = time.monotonic()
            for fd, w in list(busy.items()):
                i, checks, deadline = w.job
                if now > deadline:
                    busy.pop(fd)
                    sel.unregister(w.proc.stdout)
                    results[i] = [TestOutcome("timeout", None, "the sandbox worker did not answer")] * len(checks)
                    idle.append(_pool.replace(w))
    finally:
        for fd, w in list(busy.items()):  # interrupted: these workers hold half-done jobs
            sel.unregister(w.proc.stdout)
            _pool.replace(w)
        sel.close()
        if bar:
            bar.close()


def _collect(line: bytes, checks: list[dict]) -> list[TestOutcome] | None:
    if not line:
        return None
    reply = json.loads(line)
    if "fatal" in reply:
        log.error("sandbox worker error: %s", reply["fatal"])
        return [TestOutcome("error", "SandboxError", "the sandbox failed on this program")] * len(checks)
    return [TestOutcome(*outcome(raw, check)) for raw, check in zip(reply["outcomes"], checks)]
