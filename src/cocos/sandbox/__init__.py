"""Run untrusted generated code against unit tests: isolated, fast, one outcome per test.

This is the only place in CoCoS where generated code runs (docs/sandbox.md).

    from cocos.sandbox import run_tests, run_batch, TestOutcome
    run_tests(code, tests, *, setup="", timeout=3.0) -> list[TestOutcome]
    run_batch(jobs, *, timeout=3.0, workers=None) -> list[list[TestOutcome]]

A pool of warm worker processes, each inside its own user, pid, network, mount, ipc and uts
namespaces, forks one process per program (setup + program run once) that runs the tests one after
another, each under its own time limit (a test that hangs or ends that process makes the worker start
a fresh one for the remaining tests). Settings (environment variables):

    COCOS_SANDBOX_REQUIRE_ISOLATION=1   refuse to run without full isolation
    COCOS_SANDBOX_ISOLATION=0           run with limits only (debugging)
    COCOS_SANDBOX_MEMORY_MB=2048        address-space limit per process
    COCOS_SANDBOX_PRELOAD=numpy,pandas  modules each worker imports once (ODEX speed)
    COCOS_SANDBOX_FORK_PER_TEST=1       one forked process per test (no test sees another's side effects)

This file is the public interface only. The caller's side: batch.py (the records, the calls, handing
jobs to workers), checks.py (tests in, verdicts out), pool.py (the worker processes). The worker
itself runs in another process (stdlib only): the parent starts it by file path, never imports it.
"""

from cocos.sandbox.batch import (SandboxJob, TestOutcome, isolation_active, isolation_status, run_batch, run_tests,
                                 shutdown)
from cocos.sandbox.batch import _pool  # noqa: F401 (the live pool: tests look at its worker processes)
from cocos.sandbox.checks import STATUSES  # noqa: F401 (what TestOutcome.status can be)
from cocos.sandbox.pool import SandboxIsolationError

__all__ = ["TestOutcome", "SandboxJob", "SandboxIsolationError", "run_tests", "run_batch",
           "isolation_status", "isolation_active", "shutdown"]
