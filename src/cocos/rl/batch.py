"""What one chunk of a step carries from the rollout to the update and the log (OpenRLHF calls it an Experience).

    batch = make_batch(trajectories, method_at(cfg, step), advantage=cfg.advantage, k=cfg.k, ...)   # rollout ->
    result = passes(setup, batch.seqs, batch.rewards, batch.advantages_of, n_traj, last)   # -> KL, advantages, loss
    batch = batch.measured(result)                                                        # -> the log reads it

A `Batch` holds the chunk's trajectories (grouped by problem, k each), their rewards [N, T] (with the copy penalty),
which of them train (`trained`: skip_uniform_groups leaves out groups whose k rewards are all equal), and the
trained turns as token sequences (`seqs`). The log-prob passes measure the per-turn KL [N, T] and, through
`advantages_of` (objective.advantages: one function, called once per group or chunk), the advantages [N, T] their
loss weighs; `measured` stores both, so that the log reads the very numbers the loss used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from cocos.errors import UserError
from cocos.rl import objective
from cocos.rl.objective import Method


class TrainedTurn(NamedTuple):
    """One trained turn of one trajectory: the token ids the update scores and where its KL and advantage go."""
    prompt_ids: list[int]
    completion_ids: list[int]
    traj: int  # index of its trajectory in the chunk
    turn: int  # 0-based turn
    sampler_logprobs: list[float] | None  # what the sampler assigned to completion_ids (None: backend didn't say)


class Measured(NamedTuple):
    """What the log-prob passes (cocos.rl.passes) measure of a batch's trained sequences."""
    turn_kl: torch.Tensor  # [N, T]: each turn's KL estimate summed over its tokens (0 where not trained)
    entropy: float  # mean entropy per trained token
    recomputed: list  # the trainer's log-probs of each sequence's completion tokens (one list per seqs entry)
    loss: float  # the chunk's loss (its backward is done)
    advantages: torch.Tensor  # [N, T]: what the loss weighed each (trajectory, turn) by


def trained_sequences(trajectories, method: Method) -> list[TrainedTurn]:
    """Every trained turn (method.trained_turns, less the turns shared in last-turn mode) of every trajectory."""
    seqs = []
    for j, traj in enumerate(trajectories):
        for t in method.trained_turns:
            if t < traj.shared_prefix_turns:  # shared turns (last-turn mode) are not trained
                continue
            turn = traj.turns[t]
            if not turn.prompt_ids:
                raise UserError("rollout: turns carry no token ids; the policy backend must return prompt_ids/completion_ids")
            seqs.append(TrainedTurn(turn.prompt_ids, turn.completion_ids, j, t, turn.logprobs))
    return seqs


@dataclass(frozen=True, eq=False)
class Batch:
    trajectories: list  # N = P * k, grouped by problem
    method: Method  # the step's objective (objective.method_at)
    advantage: str  # its name in objective.ADVANTAGES (TrainConfig.advantage)
    k: int
    rewards: torch.Tensor  # [N, T], float32
    trained: torch.Tensor  # [N] bool: False for the groups skip_uniform_groups leaves out
    seqs: list[TrainedTurn]  # the trained turns of the trained trajectories
    # measured by the passes (`measured`)
    turn_kl: torch.Tensor | None = None  # [N, T]
    advantages: torch.Tensor | None = None  # [N, T]; 0 for the groups left out (they have no sequence, hence no loss)
    entropy: float = 0.0
    loss: float = 0.0
    recomputed: list = field(default_factory=list)

    def advantages_of(self, rewards: torch.Tensor, turn_kl: torch.Tensor) -> torch.Tensor:
        """The advantages [m, T] of m trajectories in whole groups of k, from their rewards and KL [m, T]."""
        return objective.advantages(self.advantage, rewards, turn_kl, self.method, self.k)

    def measured(self, m: Measured) -> Batch:
        return replace(self, turn_kl=m.turn_kl, advantages=m.advantages * self.trained.unsqueeze(-1),
                       entropy=m.entropy, loss=m.loss, recomputed=m.recomputed)

    # ---- what the log reads (one entry per trajectory unless said) ------------------------------
    def scores(self) -> torch.Tensor:
        """[N]: R - sum_t coef_t KL_t (objective.trajectory_scores)."""
        return objective.trajectory_scores(self.rewards, self.turn_kl, self.method)

    def trajectory_advantages(self) -> list[float]:
        """One advantage per trajectory: rloo's own (equal on every turn), else the mean over its trained turns."""
        turns = list(self.method.trained_turns)
        adv = self.advantages
        return (adv[:, turns[0]] if self.advantage == "rloo" else adv[:, turns].mean(-1)).tolist()

    def turn_advantages(self) -> list[list[float | None]]:
        """[N][T]: each trained turn's advantage, None on turns not trained."""
        turns = self.method.trained_turns
        T = self.rewards.shape[-1]
        return [[row[t] if on and t in turns else None for t in range(T)]
                for row, on in zip(self.advantages.tolist(), self.trained.tolist())]

    def kl(self) -> list[list[float] | None]:
        """[N]: each trajectory's per-turn KL, None where it was not trained."""
        return [row if on else None for row, on in zip(self.turn_kl.tolist(), self.trained.tolist())]

    def sampled_vs_trained(self) -> list[tuple]:
        """(the sampler's log-probs, the trainer's) of each trained sequence's completion tokens."""
        return [(s.sampler_logprobs, r) for s, r in zip(self.seqs, self.recomputed)]

    def logprob_gaps(self) -> list[float]:
        """|sampler log-prob - trainer log-prob| of every trained token whose sampler said."""
        return [abs(a - b) for s, r in zip(self.seqs, self.recomputed) if s.sampler_logprobs is not None
                for a, b in zip(s.sampler_logprobs, r)]

    @property
    def n_tokens(self) -> int:
        return sum(len(s.completion_ids) for s in self.seqs)

    @property
    def n_trained(self) -> int:
        return int(self.trained.sum())


def make_batch(trajectories, method: Method, *, advantage: str, k: int, copy_penalty: float = 0.0,
               skip_uniform_groups: bool = False) -> Batch:
    """The batch of a chunk of trajectories (grouped by problem, k each) under the step's `method`."""
    n = len(trajectories)
    rewards = torch.tensor([traj.rewards for traj in trajectories], dtype=torch.float32)
    if copy_penalty:  # before the uniform-group test: copies and rewrites of equal reward now differ
        from cocos.eval.metrics import edit_similarity

        sims = torch.tensor([edit_similarity(t.turns[0].code, t.turns[-1].code) for t in trajectories])
        rewards = objective.with_copy_penalty(rewards, sims, copy_penalty)
    # A group whose k samples earned identical rewards has no reward signal: its advantages are only
    # the beta-weighted KL differences. skip_uniform_groups leaves such groups out of every forward and
    # backward pass (advantage 0), most of the compute while rewards are sparse.
    trained = torch.ones(n, dtype=torch.bool)
    if skip_uniform_groups:
        g = rewards.view(n // k, k, -1)
        trained = (g != g[:, :1]).flatten(1).any(-1).repeat_interleave(k)
    seqs = [s for s in trained_sequences(trajectories, method) if trained[s.traj]]
    return Batch(trajectories=list(trajectories), method=method, advantage=advantage, k=k, rewards=rewards,
                 trained=trained, seqs=seqs)
