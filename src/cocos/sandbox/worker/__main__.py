"""Start the sandbox worker: `python -I <this file>` (what cocos/sandbox/pool.py runs).

Isolated mode puts neither PYTHONPATH nor this file's folder on sys.path, so nothing the caller's
environment holds is importable by accident. This file loads its own folder, by location, as the
package `cocos_sandbox_worker` (the standard recipe for importing a source file directly), so that
its modules import each other relatively while the worker imports no `cocos` at all: not the caller's
side, and not whatever other `cocos` sys.path may hold (an installed or editable copy). The name is a
single top-level one on purpose: a relative `from . import x` imports the top-level package of a
dotted name. sys.path stays as Python set it, so programs see the usual one.
"""

import importlib.util
import os
import sys

PACKAGE = "cocos_sandbox_worker"  # in the worker process only; in the source tree: cocos.sandbox.worker


def _load_package():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package  # before running it: its submodules find their parent here
    spec.loader.exec_module(package)
    return package


if __name__ == "__main__":
    _load_package()
    from cocos_sandbox_worker.loop import main

    main()
