"""The worker's main loop (stdlib only, part of the worker package: see its __init__).

It reads one job per line, runs each program in a fresh program process (runner.py), enforces the
deadlines, turns what P and T report into raw outcomes, and after each program kills everything the
run left behind. Isolation (isolation.py) is set up in `main`, before the first job is read.
"""

import gc
import json
import os
import secrets
import select
import shutil
import signal
import sys
import time
import traceback

from . import isolation
from .runner import GRACE, RES_FD, describe_exit, program_process, send, snapshot_builtins

OUTPUT_KEPT = 1024  # bytes of stdout/stderr kept per test
RESULT_STREAM_MAX = 32 << 20  # bytes of result messages read per program run

# Modules imported once in the worker so that forked programs find them ready.
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "random", "datetime", "json", "typing", "decimal", "fractions", "copy", "cmath", "array",
           "operator", "sys", "os", "time", "io")


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
            os.chown(tmpdir, isolation.NOBODY, isolation.NOBODY)
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
                program_process(job, indices, keys, tmpdir, self.cfg, self.drop_to_nobody)
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
                code, why = describe_exit(st)
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


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = json.loads(sys.stdin.buffer.readline())
    status = {"namespaces": False, "readonly_root": False, "uid_nobody": False, "cgroup": False,
              "hidden": [], "problems": []}
    pid_namespace = False
    jobs_root = None
    if cfg["isolate"]:
        try:
            status["cgroup"] = isolation.enter_namespaces(cfg, status)
            status["namespaces"] = True
            pid_namespace = os.getpid() == 1
            isolation.die_with_parent()
            try:
                jobs_root = isolation.setup_mounts(cfg, status)
            except OSError as e:
                status["problems"].append(f"mount setup failed: {e}")
        except OSError as e:
            status["problems"].append(f"namespaces unavailable: {e}")
        except isolation.UidMapError as e:  # unshare already happened: no way back to limits only
            send(1, {"ready": False, "error": str(e)})
            os._exit(1)
    else:
        status["problems"].append("isolation switched off")
    if jobs_root is None:
        import tempfile
        jobs_root = tempfile.mkdtemp(prefix="cocos-sandbox-")
        os.chmod(jobs_root, 0o711)
    if not pid_namespace:
        isolation.become_subreaper()
    drop = os.geteuid() == 0 and (not status["namespaces"] or status["uid_nobody"])
    status["uid_nobody"] = drop
    for name in PRELOAD + tuple(cfg.get("preload", ())):
        try:
            __import__(name)
        except Exception as e:
            status["problems"].append(f"preload {name}: {e}")
    snapshot_builtins()
    # Forks stay cheap when the collector never walks (and so copies) the objects they inherit.
    gc.collect()
    gc.freeze()
    worker = Worker(cfg, pid_namespace, jobs_root, drop)
    send(1, {"ready": True, "status": status})
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
        send(1, reply)
    worker.kill_all()
    if not status["namespaces"]:
        shutil.rmtree(jobs_root, ignore_errors=True)
