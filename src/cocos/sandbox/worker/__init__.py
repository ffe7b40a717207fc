"""The sandbox worker: a separate process that runs untrusted programs (stdlib only; docs/sandbox.md).

Process tree, one per worker:

    caller --pipes--> outer (host root: cgroup, uid maps)
                        `-> worker, pid 1 of fresh user/pid/net/mount/ipc/uts namespaces (trusted)
                              `-> program process P, one per program run (uid 65534, limits)
                                    `-> test process T, one per test (fork of P after setup + program)

The worker reads one job per line (JSON) on stdin and answers one line on stdout. Untrusted code
runs only in P and T. Verdicts: T reports each test's result on a pipe with a per-test random key;
for tests of the form `assert <expr> <op> <constant>` it reports only the *value* of <expr>, and the
caller, which alone holds the constant, compares (see docs/sandbox.md, "Threat model").

The caller (cocos/sandbox/pool.py) never imports this package: it runs `python -I __main__.py` by
file path, with a clean environment, and __main__.py loads this folder as `cocos_sandbox_worker`
without importing any `cocos` package. So the modules here import only the standard library and each
other (relatively): P and T are forks of the worker, and what the worker imported, untrusted code
inherits. Files: loop.py (the main loop, one program run, cleanup), isolation.py (namespaces, mounts,
limits), runner.py (P and T).
"""
