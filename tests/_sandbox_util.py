"""Helpers and hostile programs shared by tests/test_sandbox.py and tests/test_sandbox_hostile.py."""

import os
import textwrap
import time
from pathlib import Path

import pytest

from cocos import sandbox

T = 1.0  # per-test time limit for the hostile programs (keeps the suite fast)
FULL = None


def full_isolation() -> bool:
    global FULL
    if FULL is None:
        FULL = sandbox.isolation_active()
    return FULL


needs_isolation = pytest.mark.skipif("not full_isolation()", reason="needs full isolation (Linux namespaces)")


def statuses(outcomes):
    return [o.status for o in outcomes]


def sleepers(marker: str) -> list[int]:
    """Host processes whose command line holds `marker` (our own hostile programs' children)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                pass
    return found


def gone(marker: str, wait: float = 2.0) -> bool:
    end = time.monotonic() + wait
    while sleepers(marker):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


FORGER = textwrap.dedent("""
    import json, os, sys
    def forge():
        lines = []
        for i in range(8):
            for key in ("0" * 32, "f" * 32, ""):
                lines += [["k", i, key, "done"], ["k", i, key, "value", ["b", 1]], ["k", i, key, "value", ["i", "1"]]]
            lines += [["passed", i], ["start", i], ["exited", i, "x", "y"]]
        blob = ("\\n".join(json.dumps(l) for l in lines) + "\\npassed\\nOK\\n").encode()
        for fd in range(1024):
            try:
                os.write(fd, blob)
            except OSError:
                pass
        print("passed", flush=True)
    forge()
    def f():
        forge()
        os._exit(0)
""")


ALWAYS_EQUAL = textwrap.dedent("""
    class Any:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        def __lt__(self, other): return True
        def __bool__(self): return True
        def __hash__(self): return 0
    class LyingInt(int):
        def __eq__(self, other): return True
        __hash__ = int.__hash__
    class LyingStr(str):
        def __eq__(self, other): return True
        __hash__ = str.__hash__
    class LyingList(list):
        def __eq__(self, other): return True
    def any_(): return Any()
    def lint(): return LyingInt(0)
    def lstr(): return LyingStr("")
    def llist(): return LyingList()
    def nested(): return [1, Any()]
""")
