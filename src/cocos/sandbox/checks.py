"""The caller's side of the sandbox's test protocol: tests in, verdicts out (part of `cocos.sandbox`).

`prepare_job` validates one job and turns each test into a spec for the worker plus a check the
caller keeps: `assert <expr> <op> <constant>` becomes a "value" test (the test process reports only
the value of <expr>; the constant never leaves the caller), anything else a "block" with every
comparison guarded against program-defined classes. `outcome` turns the worker's raw report of one
test into (status, error_type, message, output), deciding "value" tests on plain data only.
"""

from __future__ import annotations

import ast
import operator
import secrets
import textwrap
from typing import Any

from cocos.errors import UserError

STATUSES = ("passed", "failed", "error", "timeout")
_HELPER = "__cocos_compare_" + secrets.token_hex(6)  # name of the guarded comparison in tests


# ---------------------------------------------------------------------------------------------
# Preparing tests: validation, and which comparisons the caller itself decides
# ---------------------------------------------------------------------------------------------

_OPNAMES = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
            ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge, "in": lambda a, b: a in b,
        "not in": lambda a, b: a not in b, "is": operator.is_, "is not": operator.is_not}


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


class _GuardCompares(ast.NodeTransformer):
    """`a == b` -> `helper(("==",), a, b)`: the helper refuses program-defined classes."""

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            return node  # identity cannot be faked
        ops = ast.Tuple([ast.Constant(_OPNAMES[type(op)]) for op in node.ops], ast.Load())
        call = ast.Call(ast.Name(_HELPER, ast.Load()), [ops, node.left, *node.comparators], [])
        return ast.copy_location(call, node)


def _prepare_test(src: str, where: str) -> tuple[dict, dict]:
    """(spec sent to the worker, check kept by the caller).

    Kind "value": the test is one `assert <expr> <op> <constant>` (or `assert [not] <expr>` with
    no comparison inside): the test process reports only the value of <expr>, and the caller,
    which alone holds the constant, decides. Kind "block": anything else runs as written, with
    every comparison guarded, and passes when the test process reports that it returned."""
    if not isinstance(src, str):
        raise UserError(f"{where} must be a string of Python code, got {type(src).__name__}")
    text = textwrap.dedent(src).strip("\n")
    if not text.strip():
        raise UserError(f"{where} is empty; give one assert statement or block per test")
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise UserError(f"{where} is not valid Python ({e.msg}, line {e.lineno}): {src.strip()[:120]!r}") from None
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
        t = tree.body[0].test
        if isinstance(t, ast.Compare) and len(t.ops) == 1:
            op = _OPNAMES[type(t.ops[0])]
            for side, const_node, expr_node in (("right", t.comparators[0], t.left),
                                                ("left", t.left, t.comparators[0])):
                ok, const = _literal(const_node)
                if ok and not _literal(expr_node)[0]:
                    if op in ("is", "is not") and not any(const is c for c in (None, True, False)):
                        break
                    return ({"kind": "value", "src": ast.unparse(expr_node)},
                            {"op": op, "side": side, "const": const})
        elif not any(isinstance(n, ast.Compare) for n in ast.walk(t)):
            negate = isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not)
            inner = t.operand if negate else t
            return {"kind": "value", "src": ast.unparse(inner)}, {"op": "truth", "negate": negate}
    tree = ast.fix_missing_locations(_GuardCompares().visit(tree))
    return {"kind": "block", "src": ast.unparse(tree), "helper": _HELPER}, {"op": "block"}


def prepare_job(job: Any, index: int) -> tuple[dict, list[dict]]:
    where = f"job {index}"
    if hasattr(job, "code") and hasattr(job, "tests"):  # a SandboxJob, or a record like it
        code, tests, setup = job.code, job.tests, getattr(job, "setup", "")
    elif isinstance(job, dict):
        code, tests, setup = job.get("code"), job.get("tests"), job.get("setup", "")
    elif isinstance(job, (tuple, list)) and len(job) in (2, 3):
        code, tests, setup = (*job, "") if len(job) == 2 else job
    else:
        raise UserError(f"{where} must be a (code, tests, setup) tuple or a SandboxJob, got {type(job).__name__}")
    if not isinstance(code, str):
        raise UserError(f"{where}: code must be a string, got {type(code).__name__}")
    if setup is None:
        setup = ""
    if not isinstance(setup, str):
        raise UserError(f"{where}: setup must be a string of Python code, got {type(setup).__name__}")
    if isinstance(tests, str) or not isinstance(tests, (list, tuple)):
        raise UserError(f"{where}: tests must be a list of strings, got {type(tests).__name__}")
    if not tests:
        raise UserError(f"{where}: tests is empty; give at least one test")
    try:
        ast.parse(textwrap.dedent(setup))
    except SyntaxError as e:
        raise UserError(f"{where}: setup is not valid Python ({e.msg}, line {e.lineno})") from None
    specs, checks = [], []
    for k, t in enumerate(tests):
        spec, check = _prepare_test(t, f"{where}, test {k}")
        specs.append(spec)
        checks.append(check)
    return {"code": code, "setup": textwrap.dedent(setup), "tests": specs}, checks


# ---------------------------------------------------------------------------------------------
# Deciding "value" tests in the caller, on plain data only
# ---------------------------------------------------------------------------------------------

class _NotComparable(Exception):
    pass


def _decode(node: Any, depth: int = 0) -> Any:
    """The test process's tagged value -> plain Python data (exact builtin types only)."""
    if depth > 250 or not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise _NotComparable("the test reported a malformed value")
    tag, args = node[0], node[1:]
    d = depth + 1
    if tag == "x":
        raise _NotComparable(f"the value is (or holds) an object of class {str(args[0])[:80]!r} defined "
                             "by the program; such objects never satisfy a test's comparison")
    if tag == "u":
        raise _NotComparable(f"the value is (or holds) a {str(args[0])[:80]}, which is not plain data "
                             "and cannot be compared outside the program's process")
    try:
        if tag == "n":
            return None
        if tag == "b":
            return bool(args[0])
        if tag == "i":
            return int(args[0], 16)
        if tag == "f":
            return float(args[0])
        if tag == "c":
            return complex(float(args[0]), float(args[1]))
        if tag == "s":
            return str(args[0])
        if tag == "y":
            return bytes.fromhex(args[0])
        if tag == "D":
            import decimal
            return decimal.Decimal(args[0])
        if tag == "Q":
            import fractions
            return fractions.Fraction(args[0])
        if tag in ("l", "t", "S", "F"):
            items = [_decode(e, d) for e in args[0]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d":
            return {_decode(k, d): _decode(v, d) for k, v in args[0]}
    except _NotComparable:
        raise
    except Exception:
        raise _NotComparable("the test reported a malformed value") from None
    raise _NotComparable("the test reported a malformed value")


def _decide(payload: Any, check: dict, output: str) -> tuple:
    try:
        value = _decode(payload)
    except _NotComparable as e:
        return ("failed", None, str(e), output)
    try:
        if check["op"] == "truth":
            ok = bool(value) != check["negate"]
        elif check["side"] == "right":
            ok = bool(_OPS[check["op"]](value, check["const"]))
        else:
            ok = bool(_OPS[check["op"]](check["const"], value))
    except Exception as e:  # e.g. TypeError for "abc" < 5, as plain Python would raise
        return ("error", type(e).__name__, str(e)[:300], output)
    if ok:
        return ("passed", None, "", output)
    return ("failed", None, f"the tested expression gave {_shown(value)}", output)


def _shown(value) -> str:
    """A short repr that cannot raise (an int past Python's 4,300-digit str limit would)."""
    if isinstance(value, int) and value.bit_length() > 600:
        return f"<int of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        shown = repr(value)
    except Exception:
        return f"<{type(value).__name__} that cannot be shown>"
    return shown if len(shown) <= 200 else shown[:197] + "..."


def outcome(raw: list, check: dict) -> tuple:
    """The worker's [status, error_type or value, message, output] for one test -> the TestOutcome's fields."""
    status, second, message, output = raw
    # Which kind of report fits is the caller's knowledge: an honest test process sends a value for
    # a value test and "done" (status passed) for a block, so anything else was forged.
    value_test = check["op"] != "block"
    if status == "value" and not value_test:
        return ("error", "SandboxError", "a block test reported a value", output)
    if status == "passed" and value_test:  # only the caller, which holds the constant, passes these
        return ("error", "SandboxError", "the test reported no value to compare", output)
    if status == "value":
        try:
            return _decide(second, check, output)
        except Exception as e:  # whatever the program's value does, the caller keeps going; it does not pass
            return ("error", "SandboxError", f"could not check the value: {type(e).__name__}", output)
    if status not in STATUSES:
        return ("error", "SandboxError", f"unknown status {status!r}", output)
    return (status, second, message, output)

