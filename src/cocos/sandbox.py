"""Run untrusted generated code against unit tests: isolated, fast, one outcome per test.

This is the only place in CoCoS where generated code runs (README: "Running generated code").

    from cocos.sandbox import run_tests, run_batch, TestOutcome
    run_tests(code, tests, *, setup="", timeout=3.0) -> list[TestOutcome]
    run_batch(jobs, *, timeout=3.0, workers=None) -> list[list[TestOutcome]]

A pool of warm worker processes (cocos/_sandbox_worker.py), each inside its own user, pid, network,
mount, ipc and uts namespaces, forks one process per program (setup + program run once) that runs the
tests one after another, each under its own time limit (a test that hangs or ends that process makes the
worker start a fresh one for the remaining tests). Settings (environment variables):

    COCOS_SANDBOX_REQUIRE_ISOLATION=1   refuse to run without full isolation
    COCOS_SANDBOX_ISOLATION=0           run with limits only (debugging)
    COCOS_SANDBOX_MEMORY_MB=2048        address-space limit per process
    COCOS_SANDBOX_PRELOAD=numpy,pandas  modules each worker imports once (ODEX speed)
    COCOS_SANDBOX_FORK_PER_TEST=1       one forked process per test (no test sees another's side effects)
"""

from __future__ import annotations

import ast
import atexit
import json
import logging
import math
import operator
import os
import secrets
import selectors
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cocos.errors import UserError

__all__ = ["TestOutcome", "SandboxJob", "SandboxIsolationError", "run_tests", "run_batch",
           "isolation_status", "isolation_active", "shutdown"]

log = logging.getLogger(__name__)
STATUSES = ("passed", "failed", "error", "timeout")
_WORKER_SCRIPT = Path(__file__).with_name("_sandbox_worker.py")
_HELPER = "__cocos_compare_" + secrets.token_hex(6)  # name of the guarded comparison in tests


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


class SandboxIsolationError(RuntimeError):
    """Full isolation was demanded (COCOS_SANDBOX_REQUIRE_ISOLATION=1) but is not available."""


# ---------------------------------------------------------------------------------------------
# Preparing tests: validation, and which comparisons the caller itself decides
# ---------------------------------------------------------------------------------------------

_OPNAMES = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
            ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge, "in": lambda a, b: a in b,
        "not in": lambda a, b: a not in b, "is": operator.is_, "is not": operator.is_not}


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


class _GuardCompares(ast.NodeTransformer):
    """`a == b` -> `helper(("==",), a, b)`: the helper refuses program-defined classes."""

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            return node  # identity cannot be faked
        ops = ast.Tuple([ast.Constant(_OPNAMES[type(op)]) for op in node.ops], ast.Load())
        call = ast.Call(ast.Name(_HELPER, ast.Load()), [ops, node.left, *node.comparators], [])
        return ast.copy_location(call, node)


def _prepare_test(src: str, where: str) -> tuple[dict, dict]:
    """(spec sent to the worker, check kept by the caller).

    Kind "value": the test is one `assert <expr> <op> <constant>` (or `assert [not] <expr>` with
    no comparison inside): the test process reports only the value of <expr>, and the caller,
    which alone holds the constant, decides. Kind "block": anything else runs as written, with
    every comparison guarded, and passes when the test process reports that it returned."""
    if not isinstance(src, str):
        raise UserError(f"{where} must be a string of Python code, got {type(src).__name__}")
    text = textwrap.dedent(src).strip("\n")
    if not text.strip():
        raise UserError(f"{where} is empty; give one assert statement or block per test")
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise UserError(f"{where} is not valid Python ({e.msg}, line {e.lineno}): {src.strip()[:120]!r}") from None
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
        t = tree.body[0].test
        if isinstance(t, ast.Compare) and len(t.ops) == 1:
            op = _OPNAMES[type(t.ops[0])]
            for side, const_node, expr_node in (("right", t.comparators[0], t.left),
                                                ("left", t.left, t.comparators[0])):
                ok, const = _literal(const_node)
                if ok and not _literal(expr_node)[0]:
                    if op in ("is", "is not") and not any(const is c for c in (None, True, False)):
                        break
                    return ({"kind": "value", "src": ast.unparse(expr_node)},
                            {"op": op, "side": side, "const": const})
        elif not any(isinstance(n, ast.Compare) for n in ast.walk(t)):
            negate = isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not)
            inner = t.operand if negate else t
            return {"kind": "value", "src": ast.unparse(inner)}, {"op": "truth", "negate": negate}
    tree = ast.fix_missing_locations(_GuardCompares().visit(tree))
    return {"kind": "block", "src": ast.unparse(tree), "helper": _HELPER}, {"op": "block"}


def _prepare_job(job: Any, index: int) -> tuple[dict, list[dict]]:
    where = f"job {index}"
    if isinstance(job, SandboxJob) or (hasattr(job, "code") and hasattr(job, "tests")):
        code, tests, setup = job.code, job.tests, getattr(job, "setup", "")
    elif isinstance(job, dict):
        code, tests, setup = job.get("code"), job.get("tests"), job.get("setup", "")
    elif isinstance(job, (tuple, list)) and len(job) in (2, 3):
        code, tests, setup = (*job, "") if len(job) == 2 else job
    else:
        raise UserError(f"{where} must be a (code, tests, setup) tuple or a SandboxJob, got {type(job).__name__}")
    if not isinstance(code, str):
        raise UserError(f"{where}: code must be a string, got {type(code).__name__}")
    if setup is None:
        setup = ""
    if not isinstance(setup, str):
        raise UserError(f"{where}: setup must be a string of Python code, got {type(setup).__name__}")
    if isinstance(tests, str) or not isinstance(tests, (list, tuple)):
        raise UserError(f"{where}: tests must be a list of strings, got {type(tests).__name__}")
    if not tests:
        raise UserError(f"{where}: tests is empty; give at least one test")
    try:
        ast.parse(textwrap.dedent(setup))
    except SyntaxError as e:
        raise UserError(f"{where}: setup is not valid Python ({e.msg}, line {e.lineno})") from None
    specs, checks = [], []
    for k, t in enumerate(tests):
        spec, check = _prepare_test(t, f"{where}, test {k}")
        specs.append(spec)
        checks.append(check)
    return {"code": code, "setup": textwrap.dedent(setup), "tests": specs}, checks


# ---------------------------------------------------------------------------------------------
# Deciding "value" tests in the caller, on plain data only
# ---------------------------------------------------------------------------------------------

class _NotComparable(Exception):
    pass


def _decode(node: Any, depth: int = 0) -> Any:
    """The test process's tagged value -> plain Python data (exact builtin types only)."""
    if depth > 250 or not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise _NotComparable("the test reported a malformed value")
    tag, args = node[0], node[1:]
    d = depth + 1
    if tag == "x":
        raise _NotComparable(f"the value is (or holds) an object of class {str(args[0])[:80]!r} defined "
                             "by the program; such objects never satisfy a test's comparison")
    if tag == "u":
        raise _NotComparable(f"the value is (or holds) a {str(args[0])[:80]}, which is not plain data "
                             "and cannot be compared outside the program's process")
    try:
        if tag == "n":
            return None
        if tag == "b":
            return bool(args[0])
        if tag == "i":
            return int(args[0], 16)
        if tag == "f":
            return float(args[0])
        if tag == "c":
            return complex(float(args[0]), float(args[1]))
        if tag == "s":
            return str(args[0])
        if tag == "y":
            return bytes.fromhex(args[0])
        if tag == "D":
            import decimal
            return decimal.Decimal(args[0])
        if tag == "Q":
            import fractions
            return fractions.Fraction(args[0])
        if tag in ("l", "t", "S", "F"):
            items = [_decode(e, d) for e in args[0]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d":
            return {_decode(k, d): _decode(v, d) for k, v in args[0]}
    except _NotComparable:
        raise
    except Exception:
        raise _NotComparable("the test reported a malformed value") from None
    raise _NotComparable("the test reported a malformed value")


def _decide(payload: Any, check: dict, output: str) -> TestOutcome:
    try:
        value = _decode(payload)
    except _NotComparable as e:
        return TestOutcome("failed", None, str(e), output)
    try:
        if check["op"] == "truth":
            ok = bool(value) != check["negate"]
        elif check["side"] == "right":
            ok = bool(_OPS[check["op"]](value, check["const"]))
        else:
            ok = bool(_OPS[check["op"]](check["const"], value))
    except Exception as e:  # e.g. TypeError for "abc" < 5, as plain Python would raise
        return TestOutcome("error", type(e).__name__, str(e)[:300], output)
    if ok:
        return TestOutcome("passed", None, "", output)
    return TestOutcome("failed", None, f"the tested expression gave {_shown(value)}", output)


def _shown(value) -> str:
    """A short repr that cannot raise (an int past Python's 4,300-digit str limit would)."""
    if isinstance(value, int) and value.bit_length() > 600:
        return f"<int of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        shown = repr(value)
    except Exception:
        return f"<{type(value).__name__} that cannot be shown>"
    return shown if len(shown) <= 200 else shown[:197] + "..."


def _outcome(raw: list, check: dict) -> TestOutcome:
    status, second, message, output = raw
    if status == "value":
        try:
            return _decide(second, check, output)
        except Exception as e:  # whatever the program's value does, the caller keeps going; it does not pass
            return TestOutcome("error", "SandboxError", f"could not check the value: {type(e).__name__}", output)
    if status not in STATUSES:
        return TestOutcome("error", "SandboxError", f"unknown status {status!r}", output)
    return TestOutcome(status, second, message, output)


# ---------------------------------------------------------------------------------------------
# The worker pool
# ---------------------------------------------------------------------------------------------

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


_pool = _Pool()
_lock = threading.RLock()
atexit.register(lambda: _pool.shutdown())


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


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
    prepared = [_prepare_job(job, i) for i, job in enumerate(jobs)]
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
    return [_outcome(raw, check) for raw, check in zip(reply["outcomes"], checks)]
