"""SFT examples: the boost model's data (KodCode, optionally MBPP train) and Turn-SFT's (the model's own first turns).

    examples, stats = build_examples(cfg, policy=None, fits=None)   # cfg: cocos.finetune.config.SFTRunConfig

Boost model (DESIGN.md): prompt/completion pairs in the paper's prompt format, first-turn and
second-turn examples 1:1, loss on the completion only. Each problem (a KodCode row whose reference
passes its own tests here, and with `mbpp_train` each MBPP-train problem) gives one first-turn example
(target: the reference) and one second-turn example, which teaches one of two lessons:
- fix (a share `fix_fraction`): the previous answer is wrong, the completion is the reference;
- keep: the previous answer is right, the completion repeats it.
Where the wrong and right previous answers come from is `wrong_answers`:
- own (default): the starting model's own answers, sampled `own_samples` times per problem at
  `own_temperature` and run in the sandbox. A fix shows one of its failing answers (one that parses and is
  not the reference), a keep one of its passing answers. Mutants of the reference stand in only where the
  model wrote no such wrong answer, the reference itself only where it wrote no right one; both are counted.
- mutants (the earlier boost): a one-line mutant of the reference (`cocos.finetune.mutants`) that fails
  at least one test in the sandbox; keep shows the reference itself.
A fix target nearly identical to its prompt's code teaches the model to copy its first answer (mutants:
~0.985 similar); the stats give the mean similarity of each lesson's previous answer to its target.

Turn-SFT (data: turn-sft): the model's own turn-1 answers on MBPP train, the wrong ones paired with
the reference solution as the second-turn completion (optionally plus the correct ones, kept).

A JSONL of prompt/completion pairs is used as is.
"""

from __future__ import annotations

import ast
import builtins
import glob
import json
import os
import random
from pathlib import Path

from cocos.data.problems import Problem
from cocos.data.prompts import DONE, paper_prompt
from cocos.errors import UserError
from cocos.finetune.config import SFTRunConfig
from cocos.finetune.mutants import MUTATION_KINDS, mutate


# ---- KodCode rows -> problems ---------------------------------------------------------------------
def load_kodcode_rows(cfg: SFTRunConfig) -> list[dict]:
    """KodCode SFT rows: from the Hub when reachable, else the local sample files."""
    rows = _kodcode_from_hub(cfg) if cfg.kodcode_dir is None else None
    if rows is None:
        d = cfg.kodcode_dir or os.path.join(os.environ.get("COCOS_DATA_DIR", ""), "kodcode_sft_sample")
        files = sorted(glob.glob(os.path.join(d, "*.json")) + glob.glob(os.path.join(d, "*.jsonl")))
        if not files:
            raise UserError(
                f"no KodCode data: the Hub ({cfg.kodcode_hub_id}) is unreachable and {d!r} has no *.json/*.jsonl files; "
                "set COCOS_DATA_DIR to the benchmark data folder or kodcode_dir to a folder of KodCode rows"
            )
        rows = []
        for f in files:
            rows += _read_rows(f)
    if cfg.max_rows:
        rows = rows[: cfg.max_rows]
    return rows


def _kodcode_from_hub(cfg: SFTRunConfig) -> list[dict] | None:
    from cocos.data import hub

    if not hub.reachable():
        return None
    try:
        from datasets import load_dataset

        ds = load_dataset(cfg.kodcode_hub_id, split="train", streaming=True)
        n = cfg.max_rows or 20000
        return [dict(r) for _, r in zip(range(n), ds)]
    except Exception:  # unreachable Hub, missing credentials, ...: fall back to the local sample
        return None


def _read_rows(path: str) -> list[dict]:
    with open(path) as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        data = json.load(f)
    return data if isinstance(data, list) else [data]


def _solution_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "solution":
            names |= {a.asname or a.name for a in node.names}
    return names


def kodcode_tests(test_code: str, n_prompt: int = 3) -> tuple[list[str], list[str]]:
    """KodCode's pytest file -> (standalone test cases, assert lines for the prompt).

    Each test case is the file's module-level helpers (minus `from solution import ...`: the program
    defines those names) + one test function + a call to it. Test functions that take arguments
    (fixtures) or carry decorators (parametrize) are skipped. Prompt asserts are one-line asserts of
    the test functions that only use the solution's names, builtins and literals.
    """
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        return [], []
    allowed = _solution_imports(tree) | set(dir(builtins))
    preamble, cases, shown = [], [], []
    for node in tree.body:
        seg = ast.get_source_segment(test_code, node) or ""
        if isinstance(node, ast.ImportFrom) and node.module == "solution":
            continue
        if isinstance(node, ast.Import) and any(a.name == "solution" for a in node.names):
            return [], []  # `solution.f(...)` style: not runnable as one program
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            if node.args.args or node.decorator_list or isinstance(node, ast.AsyncFunctionDef):
                continue
            cases.append((node.name, seg))
            for stmt in node.body:
                if isinstance(stmt, ast.Assert) and stmt.lineno == stmt.end_lineno and len(shown) < n_prompt:
                    used = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
                    text = ast.get_source_segment(test_code, stmt) or ""
                    if used <= allowed and len(text) <= 200 and text not in shown:
                        shown.append(text)
            continue
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            continue  # unittest/pytest classes: skipped
        preamble.append(seg)
    pre = "\n".join(preamble).strip()
    tests = [((pre + "\n\n") if pre else "") + f"{seg}\n\n{name}()\n" for name, seg in cases]
    return tests, shown


def kodcode_problem(row: dict, cfg: SFTRunConfig) -> Problem | None:
    """One KodCode row as a `Problem` (tests: standalone test cases; shown: asserts for the prompt)."""
    solution = row.get(cfg.solution_field) or row.get("solution")
    question = row.get("question")
    test_code = row.get("test_code") or row.get("test")
    if not (isinstance(solution, str) and isinstance(question, str) and isinstance(test_code, str)):
        return None
    tests, shown = kodcode_tests(test_code, cfg.prompt_tests)
    if not tests:
        return None
    if not shown:  # no self-contained assert: show the first test function instead
        shown = [tests[0].strip()]
    return Problem(
        task_id=str(row.get("question_id", "")), text=question.strip(), tests=tests, reference=solution.strip(),
        prompt_tests=shown, dataset="kodcode",
    )


# ---- examples -----------------------------------------------------------------------------------
def completion_of(code: str) -> str:
    """What the model is taught to write after [BEGIN]/[CORRECT]: the code, then [DONE]."""
    return f"{code.strip()}\n{DONE}"


def _run_batch(jobs: list[tuple[str, Problem]], timeout: float) -> list[list[bool]]:
    """Per-test pass/fail for many (code, problem) pairs, in the sandbox (never in-process)."""
    from cocos.sandbox import run_batch

    results = run_batch([(code, p.tests, p.setup) for code, p in jobs], timeout=timeout)
    return [[o.status == "passed" for o in outcomes] for outcomes in results]


def verified_problems(problems: list[Problem], cfg: SFTRunConfig) -> list[Problem]:
    """Keep the tests the reference passes here (drops tests needing missing libraries or too slow)."""
    passed = _run_batch([(p.reference, p) for p in problems], cfg.test_timeout)
    kept = []
    for p, ok in zip(problems, passed):
        tests = [t for t, good in zip(p.tests, ok) if good]
        if tests:
            p.tests = tests
            kept.append(p)
    return kept


def find_wrong(problems: list[Problem], indices: list[int], cfg: SFTRunConfig, rng: random.Random) -> dict[int, tuple[str, str]]:
    """{index: (wrong code, mutation kind)} for the problems at `indices`, mutants of their references.

    With cfg.verify_wrong, a mutant counts only if it fails at least one of its problem's tests in
    the sandbox; each round tries one new mutant per problem still without one, in one sandbox batch.
    """
    wrong: dict[int, tuple[str, str]] = {}
    pending = list(indices)
    tried: dict[int, set] = {i: set() for i in pending}
    for _ in range(cfg.mutation_tries):
        cands = []
        for i in pending:
            m = mutate(problems[i].reference, rng)
            if m is not None and m[0] not in tried[i]:
                tried[i].add(m[0])
                cands.append((i, m))
        if not cands:
            break
        if cfg.verify_wrong:
            verdicts = _run_batch([(m[0], problems[i]) for i, m in cands], cfg.test_timeout)
        else:
            verdicts = [[False]] * len(cands)
        for (i, m), ok in zip(cands, verdicts):
            if not all(ok):
                wrong[i] = m
        pending = [i for i in pending if i not in wrong]
    return wrong


def own_answers(policy, problems: list[Problem], cfg: SFTRunConfig) -> tuple[dict[int, list[str]], dict[int, list[str]], dict]:
    """The starting model's own turn-1 answers: ({index: distinct wrong codes}, {index: distinct right codes}, counts).

    `own_samples` samples per problem at `own_temperature` (few-shot with `own_fewshot`: a base model follows the
    format only with examples), run against the problem's tests in the sandbox. A wrong answer must parse and differ
    from the reference: an empty or prose answer shows nothing to correct.
    """
    from cocos.episodes.rollout import run_episodes

    trajs = run_episodes(
        policy, problems, turns=1, samples_per_problem=cfg.own_samples, temperature=cfg.own_temperature,
        max_new_tokens=cfg.own_max_new_tokens, fewshot=cfg.own_fewshot, reward="progressive", timeout=cfg.test_timeout,
        seed=cfg.seed, progress=cfg.progress,
    )  # fmt: skip
    wrong: dict[int, list[str]] = {}
    right: dict[int, list[str]] = {}
    counts = {"own_samples": len(trajs), "own_correct": 0, "own_wrong": 0, "own_unusable": 0}
    for n, tr in enumerate(trajs):
        i, turn = n // cfg.own_samples, tr.turns[0]
        code = turn.code.strip()
        if turn.all_passed:
            counts["own_correct"] += 1
            if code not in right.setdefault(i, []):
                right[i].append(code)
        elif code and code != problems[i].reference.strip() and parses(code):
            counts["own_wrong"] += 1
            if code not in wrong.setdefault(i, []):
                wrong[i].append(code)
        else:
            counts["own_unusable"] += 1
    return wrong, right, counts


def parses(code: str) -> bool:
    """Whether `code` is Python at all (parsed, never run)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def boost_examples(problems: list[Problem], cfg: SFTRunConfig, policy=None) -> tuple[list[dict], dict]:
    """One first-turn and one second-turn example per problem (1:1); second turns fix or keep (module docstring).

    The lesson alternates so that a share `fix_fraction` of the second turns fix a wrong answer. Previous answers
    come from the model's own samples (wrong_answers: own) or from mutants of the reference (wrong_answers: mutants);
    a fix with no wrong answer of either kind keeps instead.
    """
    from cocos.eval.metrics import edit_similarity

    rng = random.Random(cfg.seed)
    stats = {"problems": len(problems), "turn1": 0, "turn2_keep": 0, "turn2_fix": 0, "no_wrong_found": 0}
    stats.update({f"mutation_{k}": 0 for k in MUTATION_KINDS})
    by_dataset: dict[str, int] = {}
    wants_fix = [int((i + 1) * cfg.fix_fraction) > int(i * cfg.fix_fraction) for i in range(len(problems))]
    own_wrong: dict[int, list[str]] = {}
    own_right: dict[int, list[str]] = {}
    if cfg.wrong_answers == "own":
        if policy is None:
            raise ValueError("wrong_answers=own needs the policy to sample its own answers")
        own_wrong, own_right, counts = own_answers(policy, problems, cfg)
        stats.update(counts, turn2_fix_own=0, turn2_fix_mutant=0, turn2_keep_own=0, turn2_keep_reference=0)
    # mutants only where the model wrote no wrong answer of its own
    mutants = find_wrong(problems, [i for i, w in enumerate(wants_fix) if w and not own_wrong.get(i)], cfg, rng)
    similarity = {"fix": [], "keep": []}
    examples = []
    for i, p in enumerate(problems):
        answer = completion_of(p.reference)
        source = {"task_id": str(p.task_id), "dataset": p.dataset}
        by_dataset[p.dataset] = by_dataset.get(p.dataset, 0) + 1
        examples.append({"prompt": paper_prompt(p), "completion": answer, "kind": "turn1", **source})
        stats["turn1"] += 1
        if wants_fix[i] and (own_wrong.get(i) or i in mutants):
            if own_wrong.get(i):
                code, origin = rng.choice(own_wrong[i]), "own"
            else:
                code, kind = mutants[i]
                stats[f"mutation_{kind}"] += 1
                origin = "mutant"
            stats["turn2_fix"] += 1
            if cfg.wrong_answers == "own":
                stats[f"turn2_fix_{origin}"] += 1
            similarity["fix"].append(edit_similarity(code, p.reference.strip()))
            examples.append({"prompt": paper_prompt(p, [code]), "completion": answer, "kind": "turn2_fix", "origin": origin,
                             **source})
            continue
        stats["no_wrong_found"] += int(wants_fix[i])
        if own_right.get(i):
            code, origin = rng.choice(own_right[i]), "own"
        else:
            code, origin = p.reference.strip(), "reference"
        if cfg.wrong_answers == "own":
            stats[f"turn2_keep_{origin}"] += 1
        stats["turn2_keep"] += 1
        similarity["keep"].append(1.0)  # the completion repeats the code it was shown
        examples.append({"prompt": paper_prompt(p, [code]), "completion": completion_of(code), "kind": "turn2_keep",
                         "origin": origin, **source})
    stats["problems_by_dataset"] = by_dataset
    stats["fix_similarity_mean"] = sum(similarity["fix"]) / len(similarity["fix"]) if similarity["fix"] else None
    turn2 = similarity["fix"] + similarity["keep"]
    stats["turn2_similarity_mean"] = sum(turn2) / len(turn2) if turn2 else None
    return examples, stats


def turn_sft_examples(policy, cfg: SFTRunConfig) -> tuple[list[dict], dict]:
    """The model's own wrong turn-1 answers on MBPP train, each paired with the reference solution."""
    from cocos.data.problems import load_problems
    from cocos.episodes.rollout import run_episodes

    problems = load_problems("mbpp", split=cfg.turn_sft_split, limit=cfg.max_rows)
    trajs = run_episodes(
        policy, problems, turns=1, samples_per_problem=cfg.turn_sft_samples, temperature=cfg.turn_sft_temperature,
        max_new_tokens=cfg.max_new_tokens, fewshot=cfg.turn_sft_fewshot, reward="binary", seed=cfg.seed, progress=cfg.progress,
    )
    by_id = {p.task_id: p for p in problems}
    examples, seen = [], set()
    stats = {"problems": len(problems), "samples": len(trajs), "turn1_correct": 0, "turn2_fix": 0, "turn2_keep": 0}
    for tr in trajs:
        p, t1 = by_id[tr.task_id], tr.turns[0]
        key = (tr.task_id, t1.code)
        if key in seen:  # identical answers (greedy, or repeated samples) teach nothing new
            continue
        seen.add(key)
        if t1.all_passed:
            stats["turn1_correct"] += 1
            if cfg.turn_sft_keep_correct:
                examples.append({"prompt": paper_prompt(p, [t1.code]), "completion": completion_of(t1.code), "kind": "turn2_keep", "task_id": str(p.task_id)})
                stats["turn2_keep"] += 1
        else:
            examples.append({"prompt": paper_prompt(p, [t1.code]), "completion": completion_of(p.reference), "kind": "turn2_fix", "task_id": str(p.task_id)})
            stats["turn2_fix"] += 1
    if not examples:
        raise UserError("Turn-SFT found no wrong first turn to learn from: use more problems (max_rows) or samples (turn_sft_samples)")
    return examples, stats


def jsonl_examples(path: str, cfg: SFTRunConfig) -> tuple[list[dict], dict] | None:
    """A JSONL of prompt/completion pairs (used as is), or None when its rows are KodCode rows."""
    rows = _read_rows(path)
    if rows and all(isinstance(r.get("prompt"), str) and isinstance(r.get("completion"), str) for r in rows):
        rows = rows[: cfg.max_rows] if cfg.max_rows else rows
        return [{"prompt": r["prompt"], "completion": r["completion"], "kind": r.get("kind", "given"), "task_id": str(r.get("task_id", i))} for i, r in enumerate(rows)], {"given": len(rows)}
    if rows and all(isinstance(r.get("question"), str) for r in rows):
        return None
    raise UserError(f"{path}: every row needs string fields 'prompt' and 'completion' (or KodCode's question/solution/test_code)")


def build_examples(cfg: SFTRunConfig, policy=None, fits=None) -> tuple[list[dict], dict]:
    """Examples and counts for cfg.data. `fits(problem)`: keep only problems whose longest example fits
    (checked before the sandbox runs, which is the slow part)."""
    if cfg.data == "turn-sft":
        if policy is None:
            raise ValueError("Turn-SFT needs the policy to collect its first turns")
        return turn_sft_examples(policy, cfg)
    rows = None
    if cfg.data != "kodcode":
        if not Path(cfg.data).is_file():
            raise UserError(f"data: {cfg.data!r} is neither 'kodcode', 'turn-sft' nor an existing JSONL file")
        got = jsonl_examples(cfg.data, cfg)
        if got is not None:
            return got
        rows = _read_rows(cfg.data)[: cfg.max_rows] if cfg.max_rows else _read_rows(cfg.data)
    rows = rows if rows is not None else load_kodcode_rows(cfg)
    problems = [p for p in (kodcode_problem(r, cfg) for r in rows) if p is not None]
    n_rows, n_usable = len(rows), len(problems)
    if fits is not None:
        problems = [p for p in problems if fits(p)]
    n_fit = len(problems)
    problems = verified_problems(problems, cfg)
    n_verified = len(problems)
    if cfg.mbpp_train:
        from cocos.data.problems import load_problems

        mbpp = load_problems("mbpp", split="train")
        problems += [p for p in mbpp if fits is None or fits(p)]
    examples, stats = boost_examples(problems, cfg, policy)
    stats.update(rows=n_rows, rows_with_tests=n_usable, rows_fitting_max_length=n_fit, rows_verified=n_verified)
    return examples, stats


def fits_within(tokenizer, max_length: int):
    """For build_examples' `fits`: whether a problem's longest example, the second turn (its code appears
    twice), fits max_length tokens."""

    def fits(p: Problem) -> bool:
        return len(tokenizer(paper_prompt(p, [p.reference]) + completion_of(p.reference))["input_ids"]) + 1 <= max_length

    return fits


def drop_long(examples: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Drop examples over max_length tokens; a problem's first and second turn go together (1:1)."""
    too_long = set()

    def problem(ex):  # KodCode's and MBPP's ids may meet
        return ex.get("dataset"), ex["task_id"]

    for ex in examples:
        n = len(tokenizer(ex["prompt"] + ex["completion"])["input_ids"]) + 1  # + EOS
        if n > max_length:
            too_long.add(problem(ex))
    paired = any(ex["kind"] == "turn1" for ex in examples)
    kept = [ex for ex in examples if problem(ex) not in too_long] if paired else [
        ex for ex in examples if len(tokenizer(ex["prompt"] + ex["completion"])["input_ids"]) + 1 <= max_length]
    return kept, len(examples) - len(kept)

