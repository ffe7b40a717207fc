"""Wrong versions of a correct solution, for the boost model's "fix" lessons (`cocos.finetune.sft_data`).

    mutate(code, rng) -> (mutant, kind) | None

One random, syntactically valid change of one kind (MUTATION_KINDS): flip an operator, change an
integer by one, drop a line, or return something else. Whether a mutant is really wrong is decided
by running it against the tests (`sft_data.find_wrong`), not here.
"""

from __future__ import annotations

import ast
import io
import random
import tokenize

_OP_SWAP = {
    "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==",
    "+": "-", "-": "+", "*": "+", "//": "/", "%": "//", "+=": "-=", "-=": "+=",
}
_NAME_SWAP = {"and": "or", "or": "and", "True": "False", "False": "True", "min": "max", "max": "min", "is": "is not"}
MUTATION_KINDS = ("operator", "off_by_one", "drop_line", "wrong_return")


def _line_offsets(code: str) -> list[int]:
    offs, pos = [0], 0
    for line in code.splitlines(keepends=True):
        pos += len(line)
        offs.append(pos)
    return offs


def _replace(code: str, offs: list[int], start: tuple[int, int], end: tuple[int, int], new: str) -> str:
    a = offs[start[0] - 1] + start[1]
    b = offs[end[0] - 1] + end[1]
    return code[:a] + new + code[b:]


def _candidates(code: str) -> dict[str, list]:
    """Every mutation site of `code`, by kind. Sites are (start, end, replacement) in (line, col)."""
    tree = ast.parse(code)
    cands: dict[str, list] = {k: [] for k in MUTATION_KINDS}
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        toks = []
    for tok in toks:
        if tok.type == tokenize.OP and tok.string in _OP_SWAP:
            cands["operator"].append((tok.start, tok.end, _OP_SWAP[tok.string]))
        elif tok.type == tokenize.NAME and tok.string in _NAME_SWAP:
            cands["operator"].append((tok.start, tok.end, _NAME_SWAP[tok.string]))
        elif tok.type == tokenize.NUMBER and tok.string.isdigit():
            n = int(tok.string)
            cands["off_by_one"].append((tok.start, tok.end, str(n + 1)))
            if n > 0:
                cands["off_by_one"].append((tok.start, tok.end, str(n - 1)))
    lines = code.splitlines(keepends=True)
    for node in ast.walk(tree):
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(node, attr, None)
            if not isinstance(block, list) or len(block) < 2 or not all(isinstance(s, ast.stmt) for s in block):
                continue
            for s in block:
                is_doc = isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)
                if s.lineno == s.end_lineno and not is_doc and not isinstance(s, (ast.Import, ast.ImportFrom)):
                    ln = s.lineno
                    cands["drop_line"].append(((ln, 0), (ln, len(lines[ln - 1])), ""))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local = sorted({a.arg for a in node.args.args} | {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)})
            for r in ast.walk(node):
                if isinstance(r, ast.Return) and r.value is not None:
                    v = r.value
                    src = ast.get_source_segment(code, v) or ""
                    start, end = (v.lineno, v.col_offset), (v.end_lineno, v.end_col_offset)
                    if isinstance(v, (ast.Compare, ast.BoolOp)) or (isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.Not)):
                        cands["wrong_return"].append((start, end, f"not ({src})"))
                    others = [n for n in local if n != src]
                    if others:
                        cands["wrong_return"].append((start, end, others[len(src) % len(others)]))
                    if src != "None":
                        cands["wrong_return"].append((start, end, "None"))
    return cands


def mutate(code: str, rng: random.Random) -> tuple[str, str] | None:
    """One random syntactically valid mutant of `code` and its kind, or None when there is none."""
    try:
        cands = _candidates(code)
    except SyntaxError:
        return None
    offs = _line_offsets(code)
    kinds = [k for k in MUTATION_KINDS if cands[k]]
    rng.shuffle(kinds)
    for kind in kinds:  # a kind at random, then a site at random; retry on invalid mutants
        sites = cands[kind][:]
        rng.shuffle(sites)
        for start, end, new in sites[:10]:
            out = _replace(code, offs, start, end, new)
            if out.strip() == code.strip():
                continue
            try:
                ast.parse(out)
            except SyntaxError:
                continue
            return out, kind
    return None

