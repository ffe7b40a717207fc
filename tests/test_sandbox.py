"""cocos.sandbox: normal cases, bad input, isolation settings and the worker pool's life (the hostile
programs, one per guarantee the sandbox makes, are in test_sandbox_hostile.py)."""

import secrets
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from _sandbox_util import ALWAYS_EQUAL, FORGER, T, gone, statuses

from cocos import sandbox
from cocos.errors import UserError
from cocos.sandbox import SandboxJob, TestOutcome, run_batch, run_tests


# ---- normal cases ------------------------------------------------------------------------------

def test_passed_failed_error_one_outcome_per_test():
    code = "def div(a, b):\n    return a // b\n"
    tests = ["assert div(6, 3) == 2", "assert div(6, 3) == 3", "assert div(1, 0) == 0",
             "assert div(7, 2) in (3, 4)", "assert not div(1, 2)"]
    out = run_tests(code, tests)
    assert statuses(out) == ["passed", "failed", "error", "passed", "passed"]
    assert out[0] == TestOutcome("passed", None, "", "")
    # a failure names the value the program gave (the caller compared it); an error names the exception
    assert out[1].message == "the tested expression gave 2" and out[1].error_type is None
    assert out[2].error_type == "ZeroDivisionError" and "by zero" in out[2].message


def test_huge_wrong_values_fail_without_breaking_the_caller():
    # an int past Python's 4,300-digit str limit once made the caller's failure message raise
    out = run_tests("def f(n):\n    return 10 ** n\n", ["assert f(5000) == 7", "assert f(3) == 1000", "assert f(9000) > 0"])
    assert statuses(out) == ["failed", "passed", "passed"]
    assert "digits" in out[0].message


def test_block_tests_setup_and_comparisons_with_program_values():
    setup = "import math\nBASE = 10"
    code = "def area(r):\n    return math.pi * r * r\ndef shift(x):\n    return x + BASE\n"
    tests = ["assert math.isclose(area(1), math.pi)",
             "x = shift(1)\ny = shift(2)\nassert y - x == 1\nassert [x, y] == [11, 12]",
             "assert shift(0) == shift(0)",
             "assert abs(area(2) - 12.566) < 0.001",
             "assert shift(1) == 12, 'wrong'"]
    out = run_tests(code, tests, setup=setup)
    assert statuses(out) == ["passed", "passed", "passed", "passed", "failed"]


def test_syntax_error_in_program_makes_every_test_error():
    out = run_tests("def f(:\n  return 1", ["assert f() == 1", "assert f() == 2"])
    assert statuses(out) == ["error", "error"]
    assert {o.error_type for o in out} == {"SyntaxError"}


def test_missing_library_is_reported_as_import_error():
    out = run_tests("import not_a_real_library_xyz\ndef f():\n    return 1", ["assert f() == 1"])
    assert out[0].status == "error" and out[0].error_type == "ModuleNotFoundError"
    out = run_tests("def f():\n    import not_a_real_library_xyz\n    return 1", ["assert f() == 1"])
    assert out[0].error_type == "ModuleNotFoundError"
    # A program's own class named like the builtin is not taken for a missing library.
    fake = "class ModuleNotFoundError(Exception):\n    pass\ndef f():\n    raise ModuleNotFoundError('numpy')"
    assert run_tests(fake, ["assert f() == 1"])[0].error_type == "__main__.ModuleNotFoundError"


def test_tests_share_the_program_state_by_default_and_not_with_fork_per_test(monkeypatch):
    code = "state = []\ndef push(x):\n    state.append(x)\n    return len(state)"
    tests = ["assert push(1) == 1", "assert push(2) == 1", "assert push(3) == 3"]
    # Default: one process runs the tests in order after the program, as MBPP's own harness does.
    assert statuses(run_tests(code, tests)) == ["passed", "failed", "passed"]
    sandbox.shutdown()
    monkeypatch.setenv("COCOS_SANDBOX_FORK_PER_TEST", "1")
    try:
        assert statuses(run_tests(code, tests)) == ["passed", "passed", "failed"]
        # The hostile cases hold in this mode too.
        out = run_tests(FORGER, ["assert f() == 1", "x = f()\nassert x == 1"])
        assert not any(o.passed for o in out)
        out = run_tests(ALWAYS_EQUAL, ["assert lint() == 5", "x = any_()\nassert x == 5"])
        assert statuses(out) == ["failed", "failed"]
        loop = "def f(x):\n    while x:\n        pass\n    return 0"
        assert statuses(run_tests(loop, ["assert f(1) == 0", "assert f(0) == 0"], timeout=T)) == ["timeout", "passed"]
        out = run_tests("import os, signal\ndef k():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1",
                        ["assert k() == 1", "assert 1 == 1"])
        assert statuses(out) == ["error", "passed"]
    finally:
        sandbox.shutdown()


def test_run_batch_keeps_input_order_and_accepts_job_records():
    jobs = [(f"def f():\n    return {i}", [f"assert f() == {i}", "assert f() == -1"], "") for i in range(12)]
    jobs[3] = SandboxJob(code="def f():\n    return 3", tests=["assert f() == 3", "assert f() == -1"])
    jobs[5] = ("def f():\n    return 5", ["assert f() == 5", "assert f() == -1"])
    results = run_batch(jobs, workers=2)
    assert len(results) == 12
    for i, res in enumerate(results):  # every job passes the same way: its failing test tells them apart
        assert statuses(res) == ["passed", "failed"]
        assert res[1].message == f"the tested expression gave {i}"
    assert run_batch([]) == []


def test_numpy_and_stdlib_values_compare_as_their_plain_value():
    code = textwrap.dedent("""
        from collections import OrderedDict, Counter, namedtuple
        from fractions import Fraction
        def f():
            return OrderedDict(a=1), Counter("aab"), Fraction(1, 2)
        def big():
            return 2 ** 12000
    """)
    tests = ["assert f()[0] == {'a': 1}", "assert f()[1] == {'a': 2, 'b': 1}", "assert f()[2] == 0.5",
             f"assert big() == {2 ** 12000}"]
    assert statuses(run_tests(code, tests)) == ["passed"] * 4


# ---- bad input: clear exceptions before anything runs ------------------------------------------

@pytest.mark.parametrize("call, words", [
    (lambda: run_tests(123, ["assert True"]), "code must be a string"),
    (lambda: run_tests("x = 1", []), "tests is empty"),
    (lambda: run_tests("x = 1", "assert x == 1"), "tests must be a list"),
    (lambda: run_tests("x = 1", ["assert x ==="]), "test 0 is not valid Python"),
    (lambda: run_tests("x = 1", ["assert x == 1", 5]), "test 1 must be a string"),
    (lambda: run_tests("x = 1", ["assert x == 1"], setup="import ("), "setup is not valid Python"),
    (lambda: run_tests("x = 1", ["assert x == 1"], timeout=0), "timeout"),
    (lambda: run_batch([("x = 1", ["assert x == 1"])], workers=0), "workers"),
    (lambda: run_batch([("x = 1", ["assert x == 1"]), ("y", ["assert ("])]), "job 1, test 0"),
])
def test_bad_input_raises_a_clear_error(call, words):
    with pytest.raises(UserError, match=words):
        call()


# ---- isolation settings --------------------------------------------------------------------------

PROBE = "import os\ndef ppid():\n    return os.getppid()\ndef nics():\n    import socket\n    return [n for _, n in socket.if_nameindex()]"


@pytest.mark.parametrize("switched_off", [False, True])
def test_isolation_claim_matches_what_a_program_sees(monkeypatch, switched_off):
    # isolation_active() decides which tests above run: check it against the program's own view. With
    # namespaces the program's parent (the worker) is pid 1 of its pid namespace and only loopback
    # exists; without, the worker is an ordinary child of this process.
    sandbox.shutdown()
    if switched_off:
        monkeypatch.setenv("COCOS_SANDBOX_ISOLATION", "0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the limits-only warning
            active, text = sandbox.isolation_active(), sandbox.isolation_status()
            out = run_tests(PROBE, ["assert ppid() == 1", "assert nics() == ['lo']"])
    finally:
        sandbox.shutdown()
    if active:
        assert statuses(out) == ["passed", "passed"], out
        assert text.startswith("full isolation: user, pid, network, mount, ipc and uts namespaces"), text
    else:
        assert out[0].status == "failed", out
        assert text.startswith("limits only (NOT isolated: "), text
    if switched_off:
        assert not active and "isolation switched off" in text


def test_limits_only_mode_warns_and_demanding_isolation_refuses(monkeypatch):
    sandbox.shutdown()
    monkeypatch.setenv("COCOS_SANDBOX_ISOLATION", "0")
    monkeypatch.setenv("COCOS_SANDBOX_REQUIRE_ISOLATION", "1")
    try:
        with pytest.raises(sandbox.SandboxIsolationError, match="COCOS_SANDBOX_REQUIRE_ISOLATION"):
            run_tests("x = 1", ["assert x == 1"])
        sandbox.shutdown()
        monkeypatch.delenv("COCOS_SANDBOX_REQUIRE_ISOLATION")
        marker = f"9{secrets.randbelow(10**6)}.5"
        code = (f"import os\ndef spawn():\n    if os.fork() == 0:\n        os.setsid()\n"
                f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n    return 1\n"
                "def loop():\n    while True:\n        pass")
        with pytest.warns(RuntimeWarning, match="without full isolation"):
            out = run_tests(code, ["assert spawn() == 1", "assert loop() == 1", "assert spawn() == 2"], timeout=T)
        assert statuses(out) == ["passed", "timeout", "failed"]
        assert gone(marker)
        assert not sandbox.isolation_active()
    finally:
        sandbox.shutdown()


def test_caller_exit_stops_the_workers():
    script = "from cocos.sandbox import run_tests, _pool\nrun_tests('x = 1', ['assert x == 1'])\nprint(_pool.workers[0].proc.pid)"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(res.stdout.strip())
    end = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
