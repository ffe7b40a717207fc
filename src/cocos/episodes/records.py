"""What an episode is made of: how it is played (`RolloutSettings`), its turns (`Turn`), the trajectory of one sample
(`Trajectory`), and what a turn actor wrote for one turn (`Draft`). Records only: playing episodes is
cocos.episodes.rollout, who writes a turn cocos.episodes.actors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from cocos.config import CHOICES
from cocos.errors import UserError
from cocos.generation.sampling import Generation

@dataclass
class RolloutSettings:
    """How episodes are played. One record: EvalConfig and TrainConfig carry these fields (they subclass it)."""
    turns: int = 2  # T >= 1
    mode: str = "trajectory"  # trajectory | last-turn (turns 1..T-1 shared by the k samples of a problem)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 512  # per turn
    prompt_format: str = "paper"  # paper | chat (cocos.data.prompts)
    fewshot: bool = False  # the solved MBPP examples (task ids 2-4) before turn 1
    reward: str = "progressive"  # per-turn reward: tests passed / K, all pass (binary), tests passed (count)
    timeout: float = 3.0  # per test, seconds (sandbox)
    # an answer without [DONE]: strict = run it whole, as the paper and its code do; lenient = run its longest
    # prefix that parses (credits truncated answers; not the paper's rule)
    extraction: str = "strict"

    def __post_init__(self):
        self.check_rollout()

    def check_rollout(self) -> None:
        """UserError naming the field for a value out of range."""
        for name in ("mode", "prompt_format", "reward", "extraction"):
            choices = CHOICES[name]
            if getattr(self, name) not in choices:
                raise UserError(f"{name}: must be one of {', '.join(choices)} (got {getattr(self, name)!r})")
        for name in ("turns", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be at least 1 (got {getattr(self, name)})")
        if self.temperature < 0:
            raise UserError(f"temperature: must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p: must be in (0, 1] (got {self.top_p})")
        if self.timeout <= 0:
            raise UserError(f"timeout: must be above 0 seconds (got {self.timeout})")

    def rollout_settings(self, **changes) -> "RolloutSettings":
        """These settings as a plain RolloutSettings (from a config that subclasses it), with `changes`."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(RolloutSettings)}
        return RolloutSettings(**{**values, **changes})


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
    def mean_logprob(self) -> float | None:
        """The mean log-prob of the completion's tokens under its sampler: the model's confidence in this answer
        (None when not recorded)."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

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



@dataclass
class Draft:
    """What an actor wrote for one turn of one episode: the prompt to record and the generation (text, ids)."""
    prompt: str
    generation: Generation

