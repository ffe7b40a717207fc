"""The program process P and the test processes T of the sandbox worker: untrusted code runs here
(stdlib only, part of the worker package: see its __init__).

P (`program_process`, a fork of the worker) confines itself, runs setup + program once, then the
tests: one after another in P (default), or each in its own fork T. Each test reports one message on
the result pipe (fd 3), keyed with that test's random key: "done" for a block that returned, the
*value* of <expr> for `assert <expr> <op> <constant>` (the caller compares), or why it failed. Values
are sent as plain data only (`_encode`); comparisons inside blocks refuse program-defined classes
(`_guarded_compare`). P's own messages ("start", "killed", "exited", "program_error",
"program_timeout") tell the worker where the run is.
"""

import builtins
import gc
import json
import operator
import os
import select
import signal
import sys
import time

from .isolation import confine_program

RES_FD = 3  # the result pipe in P and T (its number is no secret: the per-test key is)
GRACE = 0.5  # seconds a test process gets past its time limit before SIGKILL
VALUE_MAX_NODES = 200_000  # largest value a test may report for comparison by the caller


def send(fd, obj):
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


# References taken before any untrusted code runs (P and T are forks of this process).
_type, _isinstance, _len, _repr, _id, _str, _issubclass = type, isinstance, len, repr, id, str, issubclass
_type_flags = type.__dict__["__flags__"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_os_write, _os_exit, _json_dumps = os.write, os._exit, json.dumps
_setitimer, _signal = signal.setitimer, signal.signal
_sys_modules = sys.modules
_ModuleType = type(sys)
_builtins_snapshot = dict(builtins.__dict__)
_HEAPTYPE = 1 << 9
_PLAIN = (type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset)
_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge, "in": lambda a, b: a in b,
        "not in": lambda a, b: a not in b, "is": operator.is_, "is not": operator.is_not}
_untrusted_roots = []  # folders whose modules the program may have written (its temp folder)


def snapshot_builtins():
    """Keep the builtins as they are now (after the worker's preloads): each test starts from them."""
    global _builtins_snapshot
    _builtins_snapshot = dict(builtins.__dict__)


class _Timeout(BaseException):
    pass


class _Untrusted(AssertionError):
    """A comparison involved an object whose class the generated code defined."""


def _is_plain(t):
    for p in _PLAIN:
        if t is p:
            return True
    return False


def _trusted_type(t):
    """Classes the program cannot have defined: builtins, C types, and classes of modules loaded
    from files outside the program's folder that really hold them under their name."""
    if _is_plain(t) or not (_type_flags(t) & _HEAPTYPE):
        return True
    try:
        mod = _sys_modules.get(_type_module(t))
        if _type(mod) is not _ModuleType:
            return False
        f = mod.__dict__.get("__file__")
        if not _isinstance(f, _str) or any(f.startswith(r) for r in _untrusted_roots):
            return False
        obj = mod
        for part in _type_qualname(t).split("."):
            obj = getattr(obj, part, None)
        return obj is t
    except Exception:
        return False


def _children(x):
    """Elements of a container, read through the builtin base class (not overridable methods)."""
    t = _type(x)
    for base, items in ((dict, lambda v: [e for kv in dict.items(v) for e in kv]),
                        (list, list.copy), (tuple, lambda v: tuple.__getitem__(v, slice(None))),
                        (set, lambda v: list(set.__iter__(v))),
                        (frozenset, lambda v: list(frozenset.__iter__(v)))):
        if t is base or any(b is base for b in _type_mro(t)):
            return items(x)
    return ()


def _find_untrusted(x):
    """Name of the first class the program defined found in x (walking containers), else None."""
    stack, seen, n = [x], set(), 0
    while stack:
        v = stack.pop()
        n += 1
        if n > 2_000_000:
            return "<value too large to check>"
        t = _type(v)
        if not _trusted_type(t):
            return _type_qualname(t)
        kids = _children(v)
        if kids:
            if _id(v) in seen:
                continue
            seen.add(_id(v))
            stack.extend(kids)
    return None


def _guarded_compare(ops, *operands):
    """Replaces each comparison in a test block: refuses program-defined classes, then compares."""
    for v in operands:
        bad = _find_untrusted(v)
        if bad is not None:
            raise _Untrusted(f"comparison involves an object of class {bad!r} defined by the program")
    result = True
    for i, op in enumerate(ops):
        result = _OPS[op](operands[i], operands[i + 1])
        if not result:
            return result
    return result


def _encode(x):
    """Plain data -> JSON-able tagged tree, for comparison by the caller. Program-defined classes
    become an 'x' marker (never equal to anything); other non-plain values a 'u' marker."""
    budget = [VALUE_MAX_NODES]

    def enc(v, depth):
        budget[0] -= 1
        if budget[0] < 0 or depth > 200:
            raise OverflowError("value too large")
        t = _type(v)
        if not _trusted_type(t):
            return ["x", _type_qualname(t)]
        if t is type(None):
            return ["n"]
        if t is bool:
            return ["b", int(v)]
        if not _is_plain(t):
            mro = _type_mro(t)
            if _type_module(t) == "numpy" and getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
                return enc(v.item(), depth)  # numpy scalars (a C type the program cannot define)
            for base in (bool, int, float, complex, str, bytes, dict, list, tuple, frozenset, set):
                if any(b is base for b in mro):
                    t = base
                    break
            else:
                name = _type_qualname(t)
                if name in ("Decimal", "Fraction") and _type_module(t) in ("decimal", "fractions", "_pydecimal"):
                    return ["D" if name == "Decimal" else "Q", _str(v)]
                return ["u", f"{_type_module(t)}.{name}"]
        if t is bool:
            return ["b", int(bool(v))]
        if t is int:
            return ["i", int.__format__(v, "x")]
        if t is float:
            return ["f", float.__repr__(v)]
        if t is complex:
            return ["c", float.__repr__(complex.__getattribute__(v, "real")),
                    float.__repr__(complex.__getattribute__(v, "imag"))]
        if t is str:
            return ["s", str.__str__(v)]
        if t is bytes:
            return ["y", bytes.hex(v)]
        if t is list:
            return ["l", [enc(e, depth + 1) for e in list.copy(v)]]
        if t is tuple:
            return ["t", [enc(e, depth + 1) for e in tuple.__getitem__(v, slice(None))]]
        if t is set:
            return ["S", [enc(e, depth + 1) for e in set.__iter__(v)]]
        if t is frozenset:
            return ["F", [enc(e, depth + 1) for e in frozenset.__iter__(v)]]
        return ["d", [[enc(k, depth + 1), enc(e, depth + 1)] for k, e in dict.items(v)]]

    try:
        return enc(x, 0)
    except (OverflowError, RecursionError):
        return ["u", "<value too large to compare>"]


def _short(e):
    try:
        msg = _str(e)
    except BaseException:
        msg = "<unprintable>"
    return msg if _len(msg) <= 300 else msg[:297] + "..."


def _error_type(e):
    """Builtin exception names as is; classes the program defined are qualified so that, e.g., a
    fake ModuleNotFoundError is not mistaken for a missing library."""
    t = _type(e)
    name = _type_qualname(t)
    if _type_flags(t) & _HEAPTYPE and not _trusted_type(t):
        return f"{_type_module(t)}.{name}"
    return name


def _raised_in(tb, filename):
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == filename


def _on_alarm(signum, frame):
    raise _Timeout()


def _run_test(g, i, spec, key, timeout):
    """In T: run one test, report one keyed message, exit. Never returns."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    msg = _test_message(g, spec, timeout)
    try:
        send(RES_FD, ["k", i, key] + msg)
    finally:
        _os_exit(0)


def _test_message(g, spec, timeout):
    """Run one test in the program's namespace `g`; the message that reports its result."""
    builtins.__dict__.update(_builtins_snapshot)  # undo the program's edits of builtins
    g[spec.get("helper", "__cocos_compare")] = _guarded_compare
    msg = ["error", "HarnessError", "no result"]
    try:
        code = compile(spec["src"], "<test>", "exec" if spec["kind"] == "block" else "eval")
        _signal(signal.SIGALRM, _on_alarm)
        _setitimer(signal.ITIMER_REAL, timeout)
        try:
            if spec["kind"] == "block":
                exec(code, g)
                value = None
            else:
                value = eval(code, g)
        finally:
            _setitimer(signal.ITIMER_REAL, 0)
        msg = ["done"] if spec["kind"] == "block" else ["value", _encode(value)]
    except _Timeout:
        msg = ["timeout"]
    except _Untrusted as e:
        msg = ["failed", _short(e)]
    except AssertionError as e:
        if _raised_in(e.__traceback__, "<test>"):
            msg = ["failed", _short(e) or "assertion failed"]
        else:
            msg = ["error", "AssertionError", _short(e)]
    except BaseException as e:  # SystemExit and KeyboardInterrupt included
        msg = ["error", _error_type(e), _short(e)]
    return msg


def _wait_child(pid, limit):
    """Wait for pid up to `limit` seconds; SIGKILL its group after. Returns (exit status|None)."""
    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = None
    end = time.monotonic() + limit
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        if pfd is not None:
            select.select([pfd], [], [], left)
        else:
            time.sleep(min(0.005, left))
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            if pfd is not None:
                os.close(pfd)
            return st
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass
    os.waitpid(pid, 0)
    if pfd is not None:
        os.close(pfd)
    return None


def describe_exit(st):
    if os.WIFSIGNALED(st):
        sig = os.WTERMSIG(st)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "Killed", f"the process was killed by {name}"
    return "ProcessExit", f"the process exited with status {os.WEXITSTATUS(st)} before the test finished"


def program_process(job, indices, keys, tmpdir, cfg, drop_to_nobody):
    """In P: limits, privileges, setup + program once, then one forked T per test. Never returns."""
    timeout = job["timeout"]
    try:
        confine_program(cfg, int(job["timeout"] * (len(indices) + 1) * 2 + 5), tmpdir, drop_to_nobody)
        _untrusted_roots.append(os.path.realpath(tmpdir) + "/")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.setrecursionlimit(1000)
    except BaseException as e:
        send(RES_FD, ["program_error", "SandboxError", f"could not apply limits: {_short(e)}"])
        _os_exit(0)

    g = {"__name__": "__main__", "__builtins__": builtins}
    try:
        setup_code = compile(job["setup"], "<setup>", "exec")
        program = compile(job["code"], "<program>", "exec")
        _signal(signal.SIGALRM, _on_alarm)
        _setitimer(signal.ITIMER_REAL, timeout)
        try:
            exec(setup_code, g)
            exec(program, g)
        finally:
            _setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        send(RES_FD, ["program_timeout"])
        _os_exit(0)
    except BaseException as e:
        send(RES_FD, ["program_error", _error_type(e), _short(e)])
        _os_exit(0)
    for fd in (1, 2):  # flush what the program printed before the tests fork copies of it
        try:
            (sys.stdout if fd == 1 else sys.stderr).flush()
        except BaseException:
            pass
    _signal(signal.SIGALRM, signal.SIG_DFL)
    if not cfg["fork_per_test"]:
        # Tests one after another in this process, as MBPP's own harness does (fewer forks and
        # messages: the worker takes each report as the start of the next test). A test that
        # hangs past its limit or ends this process makes the worker start a new one for the rest.
        send(RES_FD, ["start", indices[0]])
        for i in indices:
            send(RES_FD, ["k", i, keys[i]] + _test_message(g, job["tests"][i], timeout))
        _os_exit(0)
    gc.freeze()  # the program's objects too: each test's fork then copies only what it touches
    for i in indices:
        spec = job["tests"][i]
        send(RES_FD, ["start", i])
        pid = os.fork()
        if pid == 0:
            _run_test(g, i, spec, keys[i], timeout)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        st = _wait_child(pid, timeout + GRACE)
        if st is None:
            send(RES_FD, ["killed", i])
        else:
            send(RES_FD, ["exited", i] + list(describe_exit(st)))
        try:
            os.killpg(pid, signal.SIGKILL)  # what the test started, unless it escaped its group
        except OSError:
            pass
    _os_exit(0)

