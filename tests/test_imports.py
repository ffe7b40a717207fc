"""The package's import graph has no circle: every `import cocos...` (at module level or inside a function) and
every importlib.import_module("cocos...") is an edge; imports for type checkers only (`if TYPE_CHECKING:`) are not.
Its folders are layers, and no edge points upward (LAYERS below). The sandbox's layers: importing it loads no model
library, and its worker process holds the standard library only."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (SRC / "cocos").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                       for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from cocos.eval import runs` imports the module cocos.eval.runs; `from cocos.x import f`: cocos.x
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                            for a in node.names}
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                targets.add(node.args[0].value)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph()
    # the walk sees function-level imports
    assert len(graph) > 20 and "cocos.generation.policy" in graph["cocos.eval.evaluate"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# ---- the layers: data flows one way, and so do imports ---------------------------------------------------------
# Lowest first. A module imports (at module level or inside a function) only modules of its own folder or of a lower
# layer; two folders of one layer import neither the other (data/ and sandbox/, rl/ and finetune/). The flat modules
# of the bottom and top layers may import each other (one way: the circle check above). The actors' registry
# (cocos.episodes.actors.ACTORS) names baselines as "module:factory" strings, loaded when asked for: not an import.
LAYERS = [
    ["cocos", "cocos.errors", "cocos.config"],  # the package, its one exception, the YAML loader and CHOICES
    ["cocos.data", "cocos.sandbox"],  # problems, prompts, hub | running untrusted code
    ["cocos.generation"],  # sampling, models, policy, backends, device
    ["cocos.episodes"],  # records, actors, rollout, rewards
    ["cocos.eval"],  # evaluate, metrics, runs, reports, claims
    ["cocos.rl", "cocos.finetune"],  # the RL trainer | SFT and the TRL fine-tunes' settings
    ["cocos.baselines"],  # Self-Refine, Self-Corrector, ReVISE: actors and their training
    # entry points: the command, the demo, and the forwarding modules of documented `python -m` paths
    ["cocos.cli", "cocos.demo", "cocos.models", "cocos.policy"],
]
FLAT = {0, len(LAYERS) - 1}  # layers of single modules, not folders


def unit_of(module: str) -> tuple[int, str]:
    """(layer, the folder or flat module of LAYERS it belongs to)."""
    for i, units in enumerate(LAYERS):
        for u in units:
            if module == u or (module.startswith(u + ".") and u != "cocos"):
                return i, u
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS in tests/test_imports.py")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(graph.items()):
        (ls, us) = unit_of(source)
        for target in sorted(targets):
            lt, ut = unit_of(target)
            if lt > ls or (lt == ls and ut != us and ls not in FLAT):
                bad.append(f"{source} -> {target}")
    return bad


def test_no_module_imports_upward():
    graph = import_graph()
    assert "cocos.eval.evaluate" in graph["cocos.rl.trainer"]  # a downward edge, seen inside a function
    bad = upward_imports(graph)
    assert not bad, "imports against the layers (tests/test_imports.py, LAYERS): " + "; ".join(bad)


def test_the_layer_check_finds_an_upward_import():
    graph = {"cocos.data.prompts": {"cocos.rl.trainer"}, "cocos.rl.trainer": {"cocos.finetune.sft"},
             "cocos.finetune.sft": set(), "cocos.cli": {"cocos.demo"}, "cocos.demo": {"cocos.errors"},
             "cocos.errors": set()}
    assert upward_imports(graph) == ["cocos.data.prompts -> cocos.rl.trainer", "cocos.rl.trainer -> cocos.finetune.sft"]


def test_every_folder_is_a_package_and_the_kernel_source_ships():
    # setuptools' packages.find takes only folders with an __init__.py; the engine's C++ source is package data
    tomllib = pytest.importorskip("tomllib")
    folders = {p.parent for p in (SRC / "cocos").rglob("*.py")}
    assert [str(f) for f in sorted(folders) if not (f / "__init__.py").exists()] == []
    data = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {SRC.joinpath(*pkg.split(".")) / pattern for pkg, patterns in data.items() for pattern in patterns}
    cpp = set((SRC / "cocos").rglob("*.cpp"))
    assert cpp and all(any(f.match(str(pattern)) for pattern in shipped) for f in cpp), (cpp, shipped)


# ---- the sandbox: its caller's side loads no model library, its worker process only the standard library ----

WORKER = SRC / "cocos" / "sandbox" / "worker"


def test_the_sandbox_worker_is_standard_library_only():
    # The worker is started by file path and loads its folder as `cocos_sandbox_worker` (worker/__main__.py):
    # its modules import the standard library and each other (relatively), and never touch sys.path.
    files = sorted(WORKER.glob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "__main__.py", "loop.py", "isolation.py", "runner.py"}
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name}: imports from outside the worker package"
                names = [node.module] if node.level == 0 else []
            else:
                if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                    raise AssertionError(f"{path.name} line {node.lineno}: the worker leaves sys.path alone")
                continue
            for name in names:
                top = name.split(".")[0]
                ours = path.name == "__main__.py" and top == "cocos_sandbox_worker"
                assert top in sys.stdlib_module_names or ours, f"{path.name} imports {name}"


def test_importing_the_sandbox_loads_no_model_library():
    script = ("import sys, cocos.sandbox\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_the_worker_process_holds_only_its_own_package_and_the_usual_sys_path():
    # What the worker imported, every program inherits: no cocos (the caller's side, or another copy on sys.path)
    from cocos.sandbox import run_tests

    ours = ["cocos_sandbox_worker"] + sorted(f"cocos_sandbox_worker.{p.stem}" for p in WORKER.glob("*.py")
                                             if p.stem not in ("__init__", "__main__"))
    usual = subprocess.run([sys.executable, "-I", "-c", "import sys; print(repr(sys.path))"], capture_output=True,
                           text=True, env={}, cwd="/", timeout=60).stdout.strip()
    code = ("import sys\ndef mods():\n    return sorted(m for m in sys.modules if m.split('.')[0] in "
            "('cocos', 'cocos_sandbox_worker', 'torch', 'transformers'))\ndef path():\n    return sys.path\n")
    out = run_tests(code, [f"assert mods() == {ours!r}", f"assert path() == {usual}"])
    assert [o.status for o in out] == ["passed", "passed"], out
