"""Isolation for the sandbox worker (stdlib only, part of the worker package: see its __init__).

The worker's outer process enters fresh user/pid/net/mount/ipc/uts namespaces (`enter_namespaces`,
which also puts the worker tree in a memory cgroup), pid 1 then makes the filesystem read-only with
a private /tmp and hidden home folders (`setup_mounts`), and each program process P confines itself
before any untrusted code runs (`confine_program`: rlimits, uid 65534, no new privileges, clean
environment).
"""

import ctypes
import os
import resource
import signal
import time

NOBODY = 65534

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


def die_with_parent():
    """SIGKILL this process when its parent (the outer process) dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def become_subreaper():
    """Orphans of this process's descendants come back to it (kill_all finds them without a pid namespace)."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class UidMapError(RuntimeError):
    """unshare() happened but the uid/gid maps could not be written: the worker cannot go on."""


HOST_ROOT = os.geteuid() == 0  # read before unshare: root in the host's user namespace


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


def enter_namespaces(cfg, status):
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
        # Without uid maps we cannot go on (unshare already happened): the worker tells the caller and stops.
        raise UidMapError("could not write the user namespace's uid/gid maps")
    status["uid_nobody"] = os.geteuid() == 0 and HOST_ROOT
    cgroup = _make_cgroup(cfg["cgroup_bytes"]) if HOST_ROOT and cfg.get("cgroup", True) else None
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
        if HOST_ROOT:
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


def setup_mounts(cfg, status):
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


def confine_program(cfg, cpu_seconds, tmpdir, drop_to_nobody):
    """In P, before any untrusted code runs: own session, first pick of the OOM killer, rlimits,
    uid/gid 65534 (when the worker is root), no new privileges, `tmpdir` as cwd and HOME, and a
    clean environment. Raises on failure (the caller reports it and exits)."""
    os.setsid()
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    mem, nproc = cfg["memory_bytes"], cfg["nproc"]
    for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_NPROC, nproc),
                     (resource.RLIMIT_FSIZE, cfg["fsize_bytes"]), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CPU, cpu_seconds)):
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
