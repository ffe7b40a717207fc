"""Multi-turn self-correction episodes -> `Trajectory` records (implementation: issue 3/4).

    run_episodes(policy, problems, *, turns=2, samples_per_problem=1, mode="trajectory"|"last-turn",
                 temperature=0.0, top_p=1.0, max_new_tokens=512, prompt_format="paper"|"chat",
                 fewshot=False, reward="progressive", timeout=3.0, seed=None, progress=True)
        -> list[Trajectory]   # len(problems) * samples_per_problem, grouped by problem, in input order
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Turn:
    prompt: str
    text: str  # raw model output for this turn
    code: str  # extracted code (the only text executed)
    outcomes: list = field(default_factory=list)  # list[cocos.sandbox.TestOutcome]
    reward: float = 0.0
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)

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
