"""Per-turn rewards and the accumulated reward of a trajectory (DESIGN.md, "Rewards")."""

from __future__ import annotations

from cocos.config import CHOICES


def turn_reward(passed: int, total: int, kind: str = "progressive") -> float:
    """r_t from the number of tests passed out of `total` (the kinds: cocos.config.CHOICES["reward"])."""
    if kind not in CHOICES["reward"]:
        raise ValueError(f"reward kind must be one of {CHOICES['reward']}, got {kind!r}")
    if total <= 0:
        raise ValueError("a problem needs at least one test to be rewarded")
    if kind == "binary":
        return 1.0 if passed == total else 0.0
    if kind == "count":
        return float(passed)
    return passed / total


def accumulated_reward(rewards, gamma: float = 0.5):
    """R = gamma^(T-1) r_1 + sum_{t=2..T} gamma^(T-t) (r_t - r_{t-1}).

    `rewards`: one trajectory's per-turn rewards (a sequence -> a float), or a batch whose last axis is the turns
    (a tensor [..., T] -> [...]; the trainer's scores). T = 2 gives gamma*r_1 + r_2 - r_1; gamma = 1 gives r_T;
    T = 1 gives r_1.
    """
    terms = _terms(rewards, gamma, "accumulated_reward")
    total = terms[0]
    for term in terms[1:]:  # left to right, as the formula reads (the trainer's scores depend on the order)
        total = total + term
    return total


def accumulated_reward_terms(rewards, gamma: float = 0.5):
    """The per-turn terms c_t of the accumulated reward, sum_t c_t = R:

        c_1 = gamma^(T-1) r_1,    c_t = gamma^(T-t) (r_t - r_{t-1})  for t >= 2

    c_t is what turn t adds to R: it depends only on turns 1..t (per-turn credit, cocos.rl.objective).
    `rewards`: a sequence [T] -> a list, or a tensor [..., T] -> a tensor of the same shape.
    """
    terms = _terms(rewards, gamma, "accumulated_reward_terms")
    if not hasattr(rewards, "shape"):
        return terms
    import torch

    return torch.stack(terms, dim=-1)


def _terms(rewards, gamma: float, caller: str) -> list:
    """[c_1, ..., c_T] as a list (floats, or tensors [...] for a tensor [..., T])."""
    batched = hasattr(rewards, "shape")
    T = rewards.shape[-1] if batched else len(rewards)
    if T == 0:
        raise ValueError(f"{caller} needs at least one turn")

    def r(t):
        return rewards[..., t] if batched else rewards[t]

    return [gamma ** (T - 1) * r(0)] + [gamma ** (T - 1 - t) * (r(t) - r(t - 1)) for t in range(1, T)]
