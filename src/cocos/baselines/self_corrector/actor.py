"""Self-Corrector (Welleck et al. 2023, "Generating Sequences by Learning to Self-Correct"): a corrector model,
separate from the generator, learns to turn a generator output into a better one.

    cocos self-corrector --config configs/self_corrector.yaml --out runs/sc   (training: `train` beside this)
    cocos eval --model runs/sc --actor self-corrector --out runs/sc_eval

The run folder is the generator's checkpoint (so `--model RUN` loads it) with the corrector in RUN/corrector/.
At evaluation the generator writes turn 1 and the corrector every later turn (`SelfCorrectorActor`). The
corrector sees the problem and the current hypothesis only, as in the paper (y_t = C(x, y_{t-1})): its prompt
is the paper's turn-2 prompt built on the last answer's code (`corrector_prompt`), so no test result is shown.

Data (the paper's Algorithm 1, with the unit tests' pass ratio as the value v):
- the data pool D: per training problem, the generator's own samples (`Hypothesis`: code and value);
- value-improving pairs P = {(x, y, y') : y, y' in D(x), v(y') > v(y)} (`value_improving_pairs`);
- a fit samples pairs from P with probability proportional to exp(alpha * (v(y') - v(y)) + beta * sim(y, y')) / Z(y)
  (improvement and proximity; sim is the edit similarity of the two codes, Z(y) normalises over the pairs that start
  at y; `select_pairs`), and fine-tunes the corrector on prompt = corrector_prompt(x, y), completion = y' + [DONE];
- exploration rounds: the corrector samples corrections of hypotheses drawn from D, each is run against the tests
  and added to D; the pairs that improve are among the next fit's value-improving pairs.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from cocos.data.prompts import DONE, paper_prompt
from cocos.episodes.actors import PolicyActor
from cocos.episodes.records import Draft
from cocos.errors import UserError
from cocos.eval.metrics import edit_similarity
from cocos.generation.sampling import Sampling, repeat_each

CORRECTOR_DIR = "corrector"  # inside a Self-Corrector run folder (the folder itself is the generator)


# ---- the actor ----------------------------------------------------------------------------------
def corrector_prompt(problem, code: str) -> str:
    """What the corrector sees: the problem and one hypothesis, in the paper's turn-2 format."""
    return paper_prompt(problem, [code])


def corrector_path(policy) -> Path:
    """The corrector saved beside a generator by `cocos self-corrector`: GENERATOR/corrector."""
    return Path(getattr(policy, "path", "") or ".") / CORRECTOR_DIR


class SelfCorrectorActor:
    """Turn 1: the generator (the evaluated policy). Turns 2..T: the corrector, on the last answer.

    corrector: a checkpoint folder (default: the generator's folder + /corrector) or a loaded Policy.
    corrector_backend / corrector_rollout_dtype: how the corrector generates (default: the generator's backend,
    the weights' own dtype).
    """

    def __init__(self, policy, settings, corrector=None, corrector_backend: str | None = None,
                 corrector_rollout_dtype: str = "model"):
        if settings.prompt_format != "paper":
            raise UserError("actor self-corrector works on the paper prompt format only; set prompt_format=paper")
        self.first = PolicyActor(policy, settings)
        if corrector is None or isinstance(corrector, (str, Path)):
            path = Path(corrector) if corrector is not None else corrector_path(policy)
            if not (path / "config.json").is_file():
                raise UserError(
                    f"actor self-corrector: no corrector checkpoint at {path}; evaluate a folder written by "
                    "`cocos self-corrector` (--model RUN), or name one with --actor-arg corrector=PATH")
            from cocos.generation.policy import load_policy

            dtype = str(getattr(policy, "dtype", "auto")).replace("torch.", "")
            corrector = load_policy(str(path), dtype=dtype, backend=corrector_backend or getattr(policy, "backend", "auto"),
                                    rollout_dtype=corrector_rollout_dtype)
        self.corrector = corrector

    def write(self, problems, histories, sampling: Sampling, n: int = 1) -> list[Draft]:
        if not histories[0]:  # turn 1: the generator
            return self.first.write(problems, histories, sampling, n=n)
        prompts = [corrector_prompt(p, hist[-1].code) for p, hist in zip(problems, histories)]
        gens = self.corrector.generate(prompts, sampling, n=n)
        return [Draft(prompt, g) for prompt, g in zip(repeat_each(prompts, n), gens)]


# ---- the data pool and its pairs ----------------------------------------------------------------
@dataclass
class Hypothesis:
    task_id: object
    code: str
    value: float  # the reward of the code (pass ratio by default)
    passed: int = 0
    total: int = 0
    source: str = "generator"  # generator | corrector round r | reference


@dataclass
class Pair:
    task_id: object
    worse: Hypothesis
    better: Hypothesis

    @property
    def gain(self) -> float:
        return self.better.value - self.worse.value


class Pool:
    """The data pool D: hypotheses per problem, in the order they came; one per distinct code of a problem."""

    def __init__(self):
        self.by_task: dict = {}

    def add(self, h: Hypothesis) -> bool:
        """Add h unless its problem already holds the same code; -> whether it was added."""
        items = self.by_task.setdefault(h.task_id, [])
        if any(x.code == h.code for x in items):
            return False
        items.append(h)
        return True

    def add_trajectories(self, trajectories, source: str = "generator") -> int:
        """Turn 1 of each trajectory (the generator's samples). -> how many were new."""
        return sum(self.add(Hypothesis(tr.task_id, t.code, t.reward, t.n_passed, len(t.outcomes), source))
                   for tr in trajectories for t in tr.turns[:1])

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_task.values())

    def records(self) -> list[dict]:
        return [asdict(h) for items in self.by_task.values() for h in items]


def value_improving_pairs(pool: Pool, min_gain: float = 0.0) -> list[Pair]:
    """Every (y, y') of one problem with v(y') - v(y) > min_gain, in pool order (y, then y')."""
    pairs = []
    for task_id, items in pool.by_task.items():
        for y in items:
            pairs += [Pair(task_id, y, y2) for y2 in items if y2.value - y.value > min_gain]
    return pairs


def pair_weights(pairs: list[Pair], alpha: float = 1.0, beta: float = 1.0) -> list[float]:
    """exp(alpha * gain + beta * sim(y, y')) / Z(y): each starting hypothesis y gets the same total weight."""
    raw = [math.exp(alpha * p.gain + beta * edit_similarity(p.worse.code, p.better.code)) for p in pairs]
    z: dict = {}
    for p, w in zip(pairs, raw):
        key = (p.task_id, p.worse.code)
        z[key] = z.get(key, 0.0) + w
    return [w / z[(p.task_id, p.worse.code)] for p, w in zip(pairs, raw)]


def select_pairs(pairs: list[Pair], max_pairs: int | None, rng: random.Random, alpha: float = 1.0,
                 beta: float = 1.0) -> list[Pair]:
    """All pairs when they fit `max_pairs`, else `max_pairs` of them drawn without replacement by `pair_weights`
    (weighted keys u^(1/w), Efraimidis and Spirakis), kept in pool order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return list(pairs)
    weights = pair_weights(pairs, alpha, beta)
    keys = [rng.random() ** (1.0 / w) for w in weights]
    keep = sorted(sorted(range(len(pairs)), key=lambda i: keys[i], reverse=True)[:max_pairs])
    return [pairs[i] for i in keep]


def pair_example(problem, pair: Pair) -> dict:
    """One SFT example for the corrector: the worse code in the correction prompt, the better code as the answer."""
    return {"prompt": corrector_prompt(problem, pair.worse.code), "completion": f"{pair.better.code.strip()}\n{DONE}",
            "kind": f"{pair.worse.source} -> {pair.better.source}", "task_id": str(pair.task_id),
            "values": [pair.worse.value, pair.better.value]}


def hypotheses_to_correct(pool: Pool, task_ids: list, per_problem: int, rng: random.Random) -> list[Hypothesis]:
    """Exploration: `per_problem` hypotheses per problem drawn uniformly from those below the problem's best value
    (a hypothesis at the best value has nothing to improve towards), without replacement."""
    out = []
    for tid in task_ids:
        items = pool.by_task.get(tid, [])
        if not items:
            continue
        best = max(h.value for h in items)
        below = [h for h in items if h.value < best] or items
        out += rng.sample(below, min(per_problem, len(below)))
    return out
