"""Multi-turn self-correction episodes -> `Trajectory` records.

    run_episodes(policy, problems, *, turns=2, samples_per_problem=1, mode="trajectory"|"last-turn",
                 temperature=0.0, top_p=1.0, max_new_tokens=512, prompt_format="paper"|"chat",
                 fewshot=False, reward="progressive", timeout=3.0, seed=None, progress=True,
                 extraction="strict"|"lenient")
        -> list[Trajectory]   # len(problems) * samples_per_problem, grouped by problem, in input order

Each turn is one batched `policy.generate` call over every live episode, code extraction
(`cocos.prompts.extract_code` under the rule `extraction`: what runs when an answer has no [DONE]), then one
`cocos.sandbox.run_batch` call that runs every extracted program against its problem's tests; the
turn's reward is `cocos.rewards.turn_reward(passed, K, reward)`.

Modes (DESIGN.md):
- "trajectory": each of the k samples of a problem has its own turns 1..T.
- "last-turn": turns 1..T-1 are generated once per problem and shared by its k samples (the same Turn
  objects appear in the k trajectories; `shared_prefix_turns` = T-1), only turn T is sampled k times.

Seeds: turn t's generate call gets `seed + t - 1` (None stays None), so turns do not repeat each other's
random draws. `score_responses` builds the same records from saved answers, without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from tqdm.auto import tqdm

from cocos.errors import UserError
from cocos.problems import Problem
from cocos.prompts import DONE, PromptBuilder, check_extraction, extract_code, paper_prompt
from cocos.rewards import REWARD_KINDS, turn_reward

ROLLOUT_MODES = ("trajectory", "last-turn")


@dataclass
class Turn:
    prompt: str
    text: str  # raw model output for this turn
    code: str  # extracted code (the only text executed)
    outcomes: list = field(default_factory=list)  # list[cocos.sandbox.TestOutcome]
    reward: float = 0.0
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # the sampler's log-prob of each completion token (Generation.logprobs)

    @property
    def n_passed(self) -> int:
        return sum(o.status == "passed" for o in self.outcomes)

    @property
    def all_passed(self) -> bool:
        return bool(self.outcomes) and self.n_passed == len(self.outcomes)


@dataclass
class Trajectory:
    task_id: int | str
    turns: list[Turn]
    sample_index: int = 0  # which of the k samples of its problem
    shared_prefix_turns: int = 0  # last-turn mode: turns 1..T-1 are shared by the k samples (not trained)

    @property
    def rewards(self) -> list[float]:
        return [t.reward for t in self.turns]


def _check_args(turns: int, samples_per_problem: int, mode: str, reward: str, extraction: str) -> None:
    check_extraction(extraction)
    if turns < 1:
        raise UserError(f"--turns must be at least 1, got {turns}")
    if samples_per_problem < 1:
        raise UserError(f"--samples-per-problem must be at least 1, got {samples_per_problem}")
    if mode not in ROLLOUT_MODES:
        raise UserError(f"rollout mode must be one of {', '.join(ROLLOUT_MODES)}, got {mode!r}")
    if reward not in REWARD_KINDS:
        raise UserError(f"reward must be one of {', '.join(REWARD_KINDS)}, got {reward!r}")


def _execute(problems: Sequence[Problem], codes: Sequence[str], timeout: float) -> list[list]:
    """One sandbox call for a whole turn: per program, one outcome per test of its problem."""
    from cocos.sandbox import run_batch

    return run_batch([(code, p.tests, p.setup) for p, code in zip(problems, codes)], timeout=timeout)


def _finish_turns(problems, prompts, texts, gens, reward, timeout, extraction) -> list[Turn]:
    codes = [extract_code(t, extraction) for t in texts]
    results = _execute(problems, codes, timeout)
    turns = []
    for i, (p, outcomes) in enumerate(zip(problems, results)):
        passed = sum(o.status == "passed" for o in outcomes)
        turns.append(
            Turn(
                prompt=prompts[i],
                text=texts[i],
                code=codes[i],
                outcomes=list(outcomes),
                reward=turn_reward(passed, len(p.tests), reward),
                prompt_ids=list(gens[i].prompt_ids) if gens else [],
                completion_ids=list(gens[i].completion_ids) if gens else [],
                logprobs=list(gens[i].logprobs) if gens and gens[i].logprobs is not None else None,
            )
        )
    return turns


def run_episodes(
    policy,
    problems: Sequence[Problem],
    *,
    turns: int = 2,
    samples_per_problem: int = 1,
    mode: str = "trajectory",
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    prompt_format: str = "paper",
    fewshot: bool = False,
    reward: str = "progressive",
    timeout: float = 3.0,
    seed: int | None = None,
    progress: bool = True,
    extraction: str = "strict",
) -> list[Trajectory]:
    _check_args(turns, samples_per_problem, mode, reward, extraction)
    if prompt_format == "self-refine":  # Self-Refine baseline: feedback, then revision (cocos.selfrefine)
        from cocos.selfrefine import SelfRefinePolicy

        policy, prompt_format = SelfRefinePolicy(policy), "paper"
    problems = list(problems)
    k = samples_per_problem
    build = PromptBuilder(prompt_format, tokenizer=getattr(policy, "tokenizer", None), fewshot=fewshot)
    bar = tqdm(total=2 * turns, desc="episodes", unit="step", disable=not progress, leave=False)

    def play(t: int, items: list[tuple[Problem, list[Turn]]]) -> list[Turn]:
        """Turn t for every (problem, earlier turns) item: one generate call, one sandbox call."""
        batch = [p for p, _ in items]
        prompts = [build(p, [h.code for h in hist]) for p, hist in items]
        bar.set_postfix_str(f"turn {t}: generating {len(prompts)}")
        gens = policy.generate(
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=None if seed is None else seed + t - 1,
            stop=(DONE,),
        )
        bar.update(1)
        bar.set_postfix_str(f"turn {t}: running tests")
        done = _finish_turns(batch, prompts, [g.text for g in gens], gens, reward, timeout, extraction)
        bar.update(1)
        return done

    if mode == "trajectory":
        items = [(p, []) for p in problems for _ in range(k)]
        for t in range(1, turns + 1):
            for (_, hist), turn in zip(items, play(t, items)):
                hist.append(turn)
        out = [
            Trajectory(task_id=p.task_id, turns=hist, sample_index=i % k)
            for i, (p, hist) in enumerate(items)
        ]
    else:
        shared = [(p, []) for p in problems]
        for t in range(1, turns):
            for (_, hist), turn in zip(shared, play(t, shared)):
                hist.append(turn)
        final = [(p, hist) for p, hist in shared for _ in range(k)]
        last = play(turns, final)
        out = [
            Trajectory(task_id=p.task_id, turns=list(hist) + [last[i]], sample_index=i % k, shared_prefix_turns=turns - 1)
            for i, (p, hist) in enumerate(final)
        ]
    bar.close()
    return out


def score_responses(
    samples: Sequence[tuple[Problem, Sequence[str]]],
    *,
    reward: str = "progressive",
    timeout: float = 3.0,
    fewshot: bool = False,
    extraction: str = "strict",
) -> list[Trajectory]:
    """Trajectories from saved answers (no model): each sample is (problem, [raw text of turn 1, 2, ...]).

    Several samples of one problem get sample_index 0, 1, ... in the order given. The prompts recorded
    are the paper format's (what the answers would have been generated from).
    """
    if reward not in REWARD_KINDS:
        raise UserError(f"reward must be one of {', '.join(REWARD_KINDS)}, got {reward!r}")
    check_extraction(extraction)
    samples = [(p, list(texts)) for p, texts in samples]
    n_turns = max((len(texts) for _, texts in samples), default=0)
    prefix = ""
    if fewshot:
        from cocos.prompts import fewshot_prefix, load_fewshot_examples

        prefix = fewshot_prefix(load_fewshot_examples())
    histories: list[list[Turn]] = [[] for _ in samples]
    # no bar of our own: the sandbox shows one for large batches
    for t in range(n_turns):
        live = [i for i, (_, texts) in enumerate(samples) if len(texts) > t]
        problems = [samples[i][0] for i in live]
        prompts = [paper_prompt(samples[i][0], [h.code for h in histories[i]], prefix) for i in live]
        texts = [samples[i][1][t] for i in live]
        for i, turn in zip(live, _finish_turns(problems, prompts, texts, None, reward, timeout, extraction)):
            histories[i].append(turn)
    seen: dict = {}
    out = []
    for (p, _), hist in zip(samples, histories):
        idx = seen.get(p.task_id, 0)
        seen[p.task_id] = idx + 1
        out.append(Trajectory(task_id=p.task_id, turns=hist, sample_index=idx))
    return out
