"""Multi-turn self-correction episodes -> `Trajectory` records, each turn written by a turn actor.

    settings = RolloutSettings(turns=2, temperature=0.9, fewshot=True)
    run_episodes(actor_or_policy, problems, settings, samples_per_problem=k, seed=0)  # or settings fields as keywords
        -> list[Trajectory]   # len(problems) * k, grouped by problem, in input order

The records (RolloutSettings, Turn, Trajectory, Draft) are cocos.episodes.records'; who writes a turn is a turn
actor (cocos.episodes.actors). A `Policy` passed to run_episodes is wrapped in a PolicyActor.

Each turn is one `write` call over every live episode, code extraction (`cocos.data.prompts.extract_code` under the
rule `extraction`: what runs when an answer has no [DONE]), then one `cocos.sandbox.run_batch` call that runs
every extracted program against its problem's tests; the turn's reward is `cocos.episodes.rewards.turn_reward`.

Modes (DESIGN.md):
- "trajectory": each of the k samples of a problem has its own turns 1..T.
- "last-turn": turns 1..T-1 are generated once per problem and shared by its k samples (the same Turn
  objects appear in the k trajectories; `shared_prefix_turns` = T-1), only turn T is sampled k times.
Where the k samples of a problem share their history (turn 1 of trajectory mode, turn T of last-turn mode) the
write call asks the actor for k samples of each problem (`n`): the policy's backend prefills the prompt once for
them. An actor that cannot sample n (cocos.episodes.actors.takes_n) gets each problem k times, as before.

Seeds: turn t's write call gets `seed + t - 1` (None stays None), so turns do not repeat each other's
random draws. `score_responses` builds the same records from saved answers, without a model.
"""

from __future__ import annotations

from typing import Sequence

from tqdm.auto import tqdm

from cocos.data.problems import Problem
from cocos.data.prompts import DONE, extract_code, paper_prompt
from cocos.episodes.actors import PolicyActor, takes_n
from cocos.episodes.records import Draft, RolloutSettings, Trajectory, Turn
from cocos.episodes.rewards import turn_reward
from cocos.errors import UserError
from cocos.generation.sampling import Generation, Sampling, repeat_each


# ---- episodes -----------------------------------------------------------------------------------
def _execute(problems: Sequence[Problem], codes: Sequence[str], timeout: float) -> list[list]:
    """One sandbox call for a whole turn: per program, one outcome per test of its problem."""
    from cocos.sandbox import run_batch

    return run_batch([(code, p.tests, p.setup) for p, code in zip(problems, codes)], timeout=timeout)


def _finish_turns(problems, drafts: list[Draft], reward: str, timeout: float, extraction: str) -> list[Turn]:
    codes = [extract_code(d.generation.text, extraction) for d in drafts]
    results = _execute(problems, codes, timeout)
    turns = []
    for p, d, code, outcomes in zip(problems, drafts, codes, results):
        g = d.generation
        passed = sum(o.status == "passed" for o in outcomes)
        turns.append(Turn(prompt=d.prompt, text=g.text, code=code, outcomes=list(outcomes),
                          reward=turn_reward(passed, len(p.tests), reward), prompt_ids=list(g.prompt_ids),
                          completion_ids=list(g.completion_ids),
                          logprobs=list(g.logprobs) if g.logprobs is not None else None))
    return turns


def _write(actor, problems: list[Problem], histories: list[list[Turn]], sampling: Sampling, n: int) -> list[Draft]:
    """n drafts per episode, the n of an episode together: the actor samples them itself where it can."""
    if n == 1:
        return actor.write(problems, histories, sampling)
    if takes_n(actor):
        return actor.write(problems, histories, sampling, n=n)
    return actor.write(repeat_each(problems, n), repeat_each(histories, n), sampling)


def run_episodes(
    actor,
    problems: Sequence[Problem],
    settings: RolloutSettings | None = None,
    *,
    samples_per_problem: int = 1,
    seed: int | None = None,
    progress: bool = True,
    **fields,
) -> list[Trajectory]:
    settings = (settings or RolloutSettings()).rollout_settings(**fields)
    if samples_per_problem < 1:
        raise UserError(f"samples_per_problem: must be at least 1 (got {samples_per_problem})")
    if not hasattr(actor, "write"):  # a policy: it writes every turn itself
        actor = PolicyActor(actor, settings)
    problems = list(problems)
    k, turns = samples_per_problem, settings.turns
    bar = tqdm(total=2 * turns, desc="episodes", unit="step", disable=not progress, leave=False)

    def play(t: int, items: list[tuple[Problem, list[Turn]]], n: int = 1) -> list[Turn]:
        """Turn t, n samples of every (problem, earlier turns) item: one write call, one sandbox call.
        -> len(items) * n turns, the n of an item together."""
        batch = [p for p, _ in items]
        bar.set_postfix_str(f"turn {t}: generating {len(batch) * n}")
        sampling = Sampling(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_p=settings.top_p, seed=None if seed is None else seed + t - 1, stop=(DONE,))
        drafts = _write(actor, batch, [hist for _, hist in items], sampling, n)
        bar.update(1)
        bar.set_postfix_str(f"turn {t}: running tests")
        done = _finish_turns(repeat_each(batch, n), drafts, settings.reward, settings.timeout, settings.extraction)
        bar.update(1)
        return done

    if settings.mode == "trajectory":
        first = play(1, [(p, []) for p in problems], n=k)
        items = [(p, [turn]) for p, turn in zip(repeat_each(problems, k), first)]
        for t in range(2, turns + 1):
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
        last = play(turns, shared, n=k)
        out = [
            Trajectory(task_id=p.task_id, turns=list(hist) + [last[i]], sample_index=i % k, shared_prefix_turns=turns - 1)
            for i, (p, hist) in enumerate(repeat_each(shared, k))
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
    RolloutSettings(reward=reward, extraction=extraction)  # checks both
    samples = [(p, list(texts)) for p, texts in samples]
    n_turns = max((len(texts) for _, texts in samples), default=0)
    prefix = ""
    if fewshot:
        from cocos.data.prompts import fewshot_prefix, load_fewshot_examples

        prefix = fewshot_prefix(load_fewshot_examples())
    histories: list[list[Turn]] = [[] for _ in samples]
    # no bar of our own: the sandbox shows one for large batches
    for t in range(n_turns):
        live = [i for i, (_, texts) in enumerate(samples) if len(texts) > t]
        problems = [samples[i][0] for i in live]
        prompts = [paper_prompt(samples[i][0], [h.code for h in histories[i]], prefix) for i in live]
        drafts = [Draft(prompt, Generation(text=samples[i][1][t])) for i, prompt in zip(live, prompts)]
        for i, turn in zip(live, _finish_turns(problems, drafts, reward, timeout, extraction)):
            histories[i].append(turn)
    seen: dict = {}
    out = []
    for (p, _), hist in zip(samples, histories):
        idx = seen.get(p.task_id, 0)
        seen[p.task_id] = idx + 1
        out.append(Trajectory(task_id=p.task_id, turns=hist, sample_index=idx))
    return out
