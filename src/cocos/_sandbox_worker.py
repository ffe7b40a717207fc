"""Warm sandbox worker for `cocos.sandbox` (stdlib only, run as a script, never imported).

Process tree, one per worker:

    caller --pipes--> outer (host root: cgroup, uid maps)
                        `-> worker, pid 1 of fresh user/pid/net/mount/ipc/uts namespaces (trusted)
                              `-> program process P, one per program run (uid 65534, limits)
                                    `-> test process T, one per test (fork of P after setup + program)

The worker reads one job per line (JSON) on stdin and answers one line on stdout. Untrusted code
runs only in P and T. Verdicts: T reports each test's result on a pipe with a per-test random key;
for tests of the form `assert <expr> <op> <constant>` it reports only the *value* of <expr>, and the
caller, which alone holds the constant, compares (see docs/sandbox.md, "Threat model").
"""

import builtins
import ctypes
import gc
import json
import operator
import os
import resource
import secrets
import select
import shutil
import signal
import sys
import time
import traceback

NOBODY = 65534
RES_FD = 3  # the result pipe in P and T (its number is no secret: the per-test key is)
GRACE = 0.5  # seconds a test process gets past its time limit before SIGKILL
OUTPUT_KEPT = 1024  # bytes of stdout/stderr kept per test
VALUE_MAX_NODES = 200_000  # largest value a test may report for comparison by the caller
RESULT_STREAM_MAX = 32 << 20  # bytes of result messages read per program run

# Modules imported once in the worker so that forked programs find them ready.
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "random", "datetime", "json", "typing", "decimal", "fractions", "copy", "cmath", "array",
           "operator", "sys", "os", "time", "io")

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36
SYS_MOUNT_SETATTR = 442  # x86_64 and aarch64 share this number
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, AT_RECURSIVE, AT_FDCWD = 1, 2, 0x8000, -100


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _send(fd, obj):
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


# ---------------------------------------------------------------------------------------------
# Isolation setup (outer process and pid 1)
# ---------------------------------------------------------------------------------------------

def _make_cgroup(memory_bytes):
    """A memory cgroup for the whole worker tree (a fork bomb times RLIMIT_AS stays bounded)."""
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        limit_file = "memory.limit_in_bytes" if base.endswith("memory") else "memory.max"
        if not os.path.exists(os.path.join(base, limit_file if base.endswith("memory")
                                           else "cgroup.controllers")):
            continue
        for name in os.listdir(base):  # folders of workers that were killed before cleaning up
            if name.startswith("cocos-sandbox-") and name[14:].isdigit() and not os.path.exists(f"/proc/{name[14:]}"):
                try:
                    os.rmdir(os.path.join(base, name))  # fails harmlessly while processes remain
                except OSError:
                    pass
        path = os.path.join(base, f"cocos-sandbox-{os.getpid()}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, limit_file), "w") as f:
                f.write(str(memory_bytes))
            return path
        except OSError:
            try:
                os.rmdir(path)
            except OSError:
                pass
    return None


def _enter_namespaces(cfg, status):
    """Called in the outer process. Returns in pid 1 of the new namespaces; the outer process
    waits for it and exits. Raises OSError (before forking) when namespaces are unavailable."""
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:  # still in the host user namespace: may write any uid map (we are root)
        os.close(w)
        os.read(r, 1)
        ppid = os.getppid()
        try:
            if os.geteuid() == 0:
                maps = f"0 0 1\n{NOBODY} {NOBODY} 1\n"
            else:  # unprivileged caller: only its own uid can be mapped
                maps = None
            if maps:
                for kind in ("uid_map", "gid_map"):
                    with open(f"/proc/{ppid}/{kind}", "w") as f:
                        f.write(maps)
            else:
                with open(f"/proc/{ppid}/setgroups", "w") as f:
                    f.write("deny")
                with open(f"/proc/{ppid}/uid_map", "w") as f:
                    f.write(f"0 {os.geteuid()} 1\n")
                with open(f"/proc/{ppid}/gid_map", "w") as f:
                    f.write(f"0 {os.getegid()} 1\n")
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(r)
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
    try:
        _check(_libc.unshare(flags), "unshare")
    except OSError:
        os.close(w)
        os.waitpid(helper, 0)
        raise
    os.write(w, b"x")
    os.close(w)
    _, st = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        # Without uid maps we cannot go on (unshare already happened): tell the caller and stop.
        _send(1, {"ready": False, "error": "could not write the user namespace's uid/gid maps"})
        os._exit(1)
    status["uid_nobody"] = os.geteuid() == 0 and _host_root
    cgroup = _make_cgroup(cfg["cgroup_bytes"]) if _host_root and cfg.get("cgroup", True) else None
    parent_fd = os.open(os.path.dirname(cgroup), os.O_RDONLY | os.O_DIRECTORY) if cgroup else None
    hr, hw = os.pipe()
    pid1 = os.fork()
    if pid1:  # outer: put pid 1 in the cgroup, protect it from the OOM killer, wait, clean up
        if cgroup:
            try:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(pid1))
            except OSError:
                cgroup = None
        if _host_root:
            try:
                with open(f"/proc/{pid1}/oom_score_adj", "w") as f:
                    f.write("-1000")
            except OSError:
                pass
        os.write(hw, b"C" if cgroup else b"N")  # pid 1 learns whether the cgroup holds it
        while True:
            try:
                _, st = os.waitpid(pid1, 0)
                break
            except InterruptedError:
                continue
        if cgroup:  # pid 1 has covered /sys by now (same mount namespace): go by the folder's fd
            for _ in range(50):
                try:
                    os.rmdir(os.path.basename(cgroup), dir_fd=parent_fd)
                    break
                except OSError:
                    time.sleep(0.05)
        os._exit(0)
    os.close(hw)
    if parent_fd is not None:
        os.close(parent_fd)
    in_cgroup = os.read(hr, 1) == b"C"
    os.close(hr)
    return in_cgroup


def _setup_mounts(cfg, status):
    """In pid 1: everything read-only and nosuid, a private writable /tmp, a minimal /dev, a fresh
    /proc, empty read-only folders over the home folders, /run, /sys; the Python install kept."""
    # A mount namespace of pid 1's own, so that the outer process keeps the host's view (cgroupfs).
    _check(_libc.unshare(CLONE_NEWNS), "unshare(mount namespace)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = sorted({os.path.realpath(p) for p in cfg["keep"] if os.path.isdir(p)})
    keep_fds = {p: os.open(p, os.O_PATH) for p in keep}
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr)), "mount_setattr(/, read-only)")
    status["readonly_root"] = True
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmp_bytes']},mode=755")
    os.mkdir("/tmp/.dev")
    _mount("tmpfs", "/tmp/.dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=16m,mode=755")
    for name in ("null", "zero", "full", "random", "urandom"):
        open(f"/tmp/.dev/{name}", "w").close()
        _mount(f"/dev/{name}", f"/tmp/.dev/{name}", None, MS_BIND)
    os.mkdir("/tmp/.dev/shm")
    os.chmod("/tmp/.dev/shm", 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/tmp/.dev/{name}")
    _mount("/tmp/.dev", "/dev", None, MS_MOVE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    hidden = []
    for d in sorted({os.path.realpath(p) for p in cfg["hide"]}):
        if not os.path.isdir(d) or d in ("/", "/tmp", "/proc", "/dev"):
            continue
        _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        for p, fd in keep_fds.items():  # re-expose the Python install if it lives in there
            if p.startswith(d + "/"):
                os.makedirs(p, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
        _mount(None, d, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        hidden.append(d)
    for fd in keep_fds.values():
        os.close(fd)
    status["hidden"] = hidden
    os.makedirs("/tmp/jobs", mode=0o711)
    return "/tmp/jobs"


# ---------------------------------------------------------------------------------------------
# In the program process P and the test processes T (untrusted code runs here)
# ---------------------------------------------------------------------------------------------

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
        _send(RES_FD, ["k", i, key] + msg)
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


def _describe_exit(st):
    if os.WIFSIGNALED(st):
        sig = os.WTERMSIG(st)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "Killed", f"the process was killed by {name}"
    return "ProcessExit", f"the process exited with status {os.WEXITSTATUS(st)} before the test finished"


def _program_process(job, indices, keys, tmpdir, cfg, drop_to_nobody):
    """In P: limits, privileges, setup + program once, then one forked T per test. Never returns."""
    timeout = job["timeout"]
    try:
        os.setsid()
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        mem, nproc = cfg["memory_bytes"], cfg["nproc"]
        cpu = int(job["timeout"] * (len(indices) + 1) * 2 + 5)
        for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_NPROC, nproc),
                         (resource.RLIMIT_FSIZE, cfg["fsize_bytes"]), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CPU, cpu)):
            soft, hard = resource.getrlimit(lim)
            val = val if hard == resource.RLIM_INFINITY else min(val, hard)
            resource.setrlimit(lim, (val, val))
        if drop_to_nobody:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        os.chdir(tmpdir)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmpdir, "TMPDIR": tmpdir,
                           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                           "MKL_NUM_THREADS": "1"})
        _untrusted_roots.append(os.path.realpath(tmpdir) + "/")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.setrecursionlimit(1000)
    except BaseException as e:
        _send(RES_FD, ["program_error", "SandboxError", f"could not apply limits: {_short(e)}"])
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
        _send(RES_FD, ["program_timeout"])
        _os_exit(0)
    except BaseException as e:
        _send(RES_FD, ["program_error", _error_type(e), _short(e)])
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
        _send(RES_FD, ["start", indices[0]])
        for i in indices:
            _send(RES_FD, ["k", i, keys[i]] + _test_message(g, job["tests"][i], timeout))
        _os_exit(0)
    gc.freeze()  # the program's objects too: each test's fork then copies only what it touches
    for i in indices:
        spec = job["tests"][i]
        _send(RES_FD, ["start", i])
        pid = os.fork()
        if pid == 0:
            _run_test(g, i, spec, keys[i], timeout)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        st = _wait_child(pid, timeout + GRACE)
        if st is None:
            _send(RES_FD, ["killed", i])
        else:
            _send(RES_FD, ["exited", i] + list(_describe_exit(st)))
        try:
            os.killpg(pid, signal.SIGKILL)  # what the test started, unless it escaped its group
        except OSError:
            pass
    _os_exit(0)


# ---------------------------------------------------------------------------------------------
# The worker (trusted): runs jobs, enforces deadlines, kills everything after each run
# ---------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, cfg, pid_namespace, jobs_root, drop_to_nobody):
        self.cfg = cfg
        self.pid_namespace = pid_namespace
        self.jobs_root = jobs_root
        self.drop_to_nobody = drop_to_nobody
        self.counter = 0

    def kill_all(self):
        """Kill every process this worker started, detached ones included, and reap them."""
        if self.pid_namespace and os.getpid() == 1:  # kill(-1) from pid 1 reaches only the namespace
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            while True:
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    return
                except InterruptedError:
                    continue
        # Without a pid namespace: this worker is a child subreaper, orphans come back to it.
        me = str(os.getpid())
        for _ in range(10_000):
            kids = []
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        with open(f"/proc/{name}/stat") as f:
                            if f.read().rsplit(")", 1)[1].split()[1] == me:
                                kids.append(int(name))
                    except (OSError, IndexError):
                        pass
            for pid in kids:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            reaped = False
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                if not pid:
                    break
                reaped = True
            if not kids and not reaped:
                return
            time.sleep(0.001)

    def run_job(self, job):
        n = len(job["tests"])
        timeout = job["timeout"]
        outcomes = [None] * n
        outputs = [bytearray() for _ in range(n)]
        keys = [secrets.token_hex(16) for _ in range(n)]
        self.counter += 1
        tmpdir = os.path.join(self.jobs_root, f"job{self.counter}")
        os.mkdir(tmpdir, 0o700)
        if self.drop_to_nobody:
            os.chown(tmpdir, NOBODY, NOBODY)
        job_end = time.monotonic() + (n + 1) * (timeout + 2 * GRACE) * 2 + 2
        try:
            pending = list(range(n))
            while pending:
                self.run_program(job, pending, keys, tmpdir, outcomes, outputs, job_end)
                self.kill_all()
                left = [i for i in pending if outcomes[i] is None]
                if len(left) == len(pending) or time.monotonic() >= job_end:
                    for i in left:
                        outcomes[i] = outcomes[i] or ["timeout", None, "the program's overall time limit passed"]
                    break
                pending = left
        finally:
            self.kill_all()
            shutil.rmtree(tmpdir, ignore_errors=True)
        return [o + [outputs[i][:OUTPUT_KEPT].decode("utf-8", "replace")] for i, o in enumerate(outcomes)]

    def run_program(self, job, indices, keys, tmpdir, outcomes, outputs, job_end):
        timeout = job["timeout"]
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                devnull = os.open("/dev/null", os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                os.dup2(res_w, RES_FD)
                os.closerange(RES_FD + 1, 65536)
                _program_process(job, indices, keys, tmpdir, self.cfg, self.drop_to_nobody)
            finally:
                os._exit(0)
        os.close(res_w)
        os.close(out_w)
        try:
            pfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pfd = None
        for fd in (res_r, out_r):
            os.set_blocking(fd, False)
        valid = {i: keys[i] for i in indices}
        buf, received = b"", 0
        current, started = None, False
        finished = set()  # tests whose process P saw end
        phase_end = time.monotonic() + timeout + 2 * GRACE + 0.5
        exited = False

        def settle(i, outcome):
            if outcomes[i] is None:
                outcomes[i] = outcome

        inline = not self.cfg["fork_per_test"]

        def handle(msg):
            nonlocal current, started, phase_end
            kind = msg[0]
            if kind == "k":  # a test's own report: only with that test's key
                if len(msg) >= 4 and isinstance(msg[1], int) and valid.get(msg[1]) == msg[2]:
                    i, body = msg[1], msg[3:]
                    if inline and i == current:  # the program process reported: next test starts
                        finished.add(i)
                        k = indices.index(i) + 1
                        current = indices[k] if k < len(indices) else None
                        phase_end = time.monotonic() + timeout + 2 * GRACE + 0.5
                    if body[0] == "done":
                        settle(i, ["passed", None, ""])
                    elif body[0] == "value" and len(body) == 2:
                        settle(i, ["value", body[1], ""])
                    elif body[0] == "failed" and len(body) == 2:
                        settle(i, ["failed", None, str(body[1])[:300]])
                    elif body[0] == "timeout":
                        settle(i, ["timeout", None, f"the test ran longer than {timeout:g} s"])
                    elif body[0] == "error" and len(body) == 3:
                        settle(i, ["error", str(body[1])[:100], str(body[2])[:300]])
            elif kind == "start" and msg[1] in valid:
                current, started = msg[1], True
                phase_end = time.monotonic() + timeout + 2 * GRACE + 0.5
            elif kind == "killed" and msg[1] in valid:
                finished.add(msg[1])
                settle(msg[1], ["timeout", None, f"the test ran longer than {timeout:g} s (killed)"])
            elif kind == "exited" and msg[1] in valid and len(msg) == 4:
                finished.add(msg[1])
                settle(msg[1], ["error", str(msg[2])[:100], str(msg[3])[:300]])
            elif kind == "program_error" and not started and len(msg) == 3:
                for i in indices:
                    settle(i, ["error", str(msg[1])[:100], str(msg[2])[:300]])
            elif kind == "program_timeout" and not started:
                for i in indices:
                    settle(i, ["timeout", None, f"the program's own code ran longer than {timeout:g} s"])

        open_pipes = {res_r, out_r}  # a pipe leaves the watch list at EOF (else select spins on it)
        while True:
            now = time.monotonic()
            if exited or now >= min(phase_end, job_end):
                break
            watch = list(open_pipes) + ([pfd] if pfd is not None else [])
            ready, _, _ = select.select(watch, [], [], min(phase_end, job_end) - now if pfd is not None
                                        else min(0.01, min(phase_end, job_end) - now))
            if out_r in ready:
                data, eof = _drain(out_r)
                if eof:
                    open_pipes.discard(out_r)
                if current is not None and len(outputs[current]) < OUTPUT_KEPT:
                    outputs[current] += data[:OUTPUT_KEPT]
            if res_r in ready:
                data, eof = _drain(res_r)
                if eof:
                    open_pipes.discard(res_r)
                if received < RESULT_STREAM_MAX:  # past it, drained and dropped (a flood cannot stall us)
                    received += len(data)
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        try:
                            msg = json.loads(line)
                            if isinstance(msg, list) and msg:
                                handle(msg)
                        except Exception:
                            pass  # forged or torn lines are ignored
            if pfd is None or pfd in ready:
                done, st = os.waitpid(pid, os.WNOHANG)
                exited = bool(done)
        if exited:  # P is gone; what the tests wrote before is in the pipe now
            data = _drain(res_r)[0] if received < RESULT_STREAM_MAX else b""
            for line in (buf + data).split(b"\n"):
                try:
                    msg = json.loads(line)
                    if isinstance(msg, list) and msg:
                        handle(msg)
                except Exception:
                    pass
            if not started:
                code, why = _describe_exit(st)
                if os.WIFEXITED(st):
                    why = f"the program exited with status {os.WEXITSTATUS(st)} before the tests ran"
                for i in indices:
                    settle(i, ["error", code, why])
            elif current is not None and current not in finished:
                # The test killed the program's process (its parent): whatever it reported, it broke
                # the harness, so it does not pass.
                outcomes[current] = ["error", "ProcessExit", "the program's process ended during this test"]
        else:  # a deadline passed: the phase in progress timed out
            if not started:
                for i in indices:
                    settle(i, ["timeout", None, f"the program's own code ran longer than {timeout:g} s"])
            elif current is not None:
                settle(current, ["timeout", None, f"the test ran longer than {timeout:g} s"])
        for fd in (res_r, out_r) + ((pfd,) if pfd is not None else ()):
            os.close(fd)


def _drain(fd):
    """Read what a non-blocking pipe holds now (up to 4 MiB): (data, reached EOF)."""
    chunks, size = [], 0
    while size <= (4 << 20):
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks), False
        if not data:
            return b"".join(chunks), True
        chunks.append(data)
        size += len(data)
    return b"".join(chunks), False


_host_root = os.geteuid() == 0


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = json.loads(sys.stdin.buffer.readline())
    status = {"namespaces": False, "readonly_root": False, "uid_nobody": False, "cgroup": False,
              "hidden": [], "problems": []}
    pid_namespace = False
    jobs_root = None
    if cfg["isolate"]:
        try:
            status["cgroup"] = _enter_namespaces(cfg, status)
            status["namespaces"] = True
            pid_namespace = os.getpid() == 1
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            try:
                jobs_root = _setup_mounts(cfg, status)
            except OSError as e:
                status["problems"].append(f"mount setup failed: {e}")
        except OSError as e:
            status["problems"].append(f"namespaces unavailable: {e}")
    else:
        status["problems"].append("isolation switched off")
    if jobs_root is None:
        import tempfile
        jobs_root = tempfile.mkdtemp(prefix="cocos-sandbox-")
        os.chmod(jobs_root, 0o711)
    if not pid_namespace:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    drop = os.geteuid() == 0 and (not status["namespaces"] or status["uid_nobody"])
    status["uid_nobody"] = drop
    for name in PRELOAD + tuple(cfg.get("preload", ())):
        try:
            __import__(name)
        except Exception as e:
            status["problems"].append(f"preload {name}: {e}")
    globals()["_builtins_snapshot"] = dict(builtins.__dict__)
    # Forks stay cheap when the collector never walks (and so copies) the objects they inherit.
    gc.collect()
    gc.freeze()
    worker = Worker(cfg, pid_namespace, jobs_root, drop)
    _send(1, {"ready": True, "status": status})
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            break
        job = json.loads(line)
        try:
            outcomes = worker.run_job(job)
            reply = {"id": job["id"], "outcomes": outcomes}
        except Exception:
            reply = {"id": job["id"], "fatal": traceback.format_exc()[-2000:]}
        _send(1, reply)
    worker.kill_all()
    if not status["namespaces"]:
        shutil.rmtree(jobs_root, ignore_errors=True)


if __name__ == "__main__":
    main()
