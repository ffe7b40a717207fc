"""The RL objective (DESIGN.md), top to bottom: log-probs -> KL -> scores -> leave-one-out advantages -> loss.

For each problem the policy samples k trajectories of T turns. For trajectory i:

    r_t       per-turn reward (progressive: passed/K, binary: all pass)               -> cocos.rollout
    logp      log pi_T(y | context) of every generated token of the trained turns       token_logprobs
    KL_t      sum over turn t's generated tokens of a per-token KL estimate against       token_kl
              the frozen reference (a number: no gradient flows through the score)
    s_i       = method.reward_term(r) - sum_t method.kl_coefs[t] * KL_t                 trajectory_scores
    A_i       = s_i - mean_{j != i} s_j   over the k samples of the same problem         rloo_advantages
    loss      = -(1/N) sum_i A_i * sum_{tokens y of method.trained_turns} logp(y)       policy_loss

pi_T is the policy at the sampling temperature, softmax(logits / T): the distribution the tokens were drawn from,
for the loss and for both sides of the KL. Only completion tokens carry loss (prompt and padding are masked).
One gradient step per batch of fresh samples (on-policy), so no importance ratio is needed.

A method is a record (`Method`): its reward term, its KL coefficient per turn and the turns it trains. `method_at`
gives the record of a config at a step:
    CoCoS     R = gamma^(T-1) r_1 + sum_{t>=2} gamma^(T-t) (r_t - r_{t-1})  (cocos.rewards), beta on every turn
    SCoRe I   R = r_T, beta_1 on turns 1..T-1 and beta on turn T            (Kumar et al. 2024, the baseline)
    SCoRe II  R = sum_t r_t + alpha (r_T - r_1), beta on every turn
The ablations are configs of these (gamma, reward kind, trained turns, rollout mode). `last-turn` mode: turns
1..T-1 are shared within a group, so R_i - R_j = r_T,i - r_T,j and gamma cancels from every advantage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cocos.rewards import accumulated_reward


# ---- methods ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str  # what the log calls it: cocos, score-I, score-II
    reward_term: Callable[[torch.Tensor], torch.Tensor]  # rewards [N, T] -> R [N]
    kl_coefs: tuple[float, ...]  # per turn
    trained_turns: tuple[int, ...]  # 0-based turns whose tokens carry gradient


def method_at(cfg, step: int) -> Method:
    """The objective of config `cfg` (cocos.train.config.TrainConfig) at 0-based optimizer step `step`."""
    T, trained = cfg.turns, tuple(cfg.trained_turns())
    if cfg.method == "cocos":
        return Method("cocos", lambda r: accumulated_reward(r, cfg.gamma), (cfg.beta,) * T, trained)
    # SCoRe in trajectory mode trains every turn: turn T for the reward, turns 1..T-1 held near the base by the KL.
    all_turns = tuple(range(T)) if cfg.mode == "trajectory" else trained
    if step < cfg.score_stage1_steps:
        return Method("score-I", lambda r: r[..., -1], (cfg.score_beta1,) * (T - 1) + (cfg.beta,), all_turns)
    alpha = cfg.score_alpha
    return Method("score-II", lambda r: r.sum(-1) + alpha * (r[..., -1] - r[..., 0]), (cfg.beta,) * T, all_turns)


# ---- the objective ------------------------------------------------------------------------------
def token_logprobs(model, input_ids, attention_mask, position_ids, n_last: int, *, temperature: float,
                   with_entropy: bool = False, cache=None):
    """log pi_T(token_j | tokens_<j) for the last n_last tokens of each row -> [B, n_last] (float32), where
    pi_T = softmax(logits / temperature) is the distribution the rollouts sampled from. Dividing by the sampling
    temperature (for the policy and the reference alike, as the authors' code and TRL do) keeps the update
    on-policy; the sampler returns the same quantity (Generation.logprobs) and tests hold them equal. top-p < 1 is
    not modelled: the loss then treats the sample as drawn from the whole tempered softmax.

    Token j is predicted by the logits at j-1, so the model keeps the last n_last+1 positions and drops the final
    one (it predicts past the sequence). `cache`: keys and values of tokens before input_ids (a shared prefix, see
    cocos.train.passes); attention_mask then covers both.
    """
    if temperature <= 0:
        raise ValueError("token_logprobs: temperature must be > 0 (the sampling temperature of the rollouts)")
    past = {} if cache is None else {cache_argument(model): cache}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=n_last + 1, use_cache=cache is not None, **past)
    logits = out.logits[:, :-1, :].float() / temperature
    targets = input_ids[:, input_ids.shape[1] - n_last:]  # (not [-n_last:], which is every token when n_last is 0)
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = logz - (probs * logits).sum(-1)
    return logp, entropy


def cache_argument(model) -> str:
    """The forward argument that takes a KV cache: `cache` in newer transformers, `past_key_values` before."""
    import inspect

    base = getattr(model, "module", model)  # DDP / DeepSpeed wrap the model as .module
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # a peft model: the HF model inside
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def token_kl(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate on tokens sampled from pi. k1 = log pi - log ref (unbiased, can be negative
    per token); k3 = exp(-d) - 1 + d with d = log pi - log ref (unbiased, always >= 0, lower variance)."""
    d = logp - ref_logp
    if estimator == "k1":
        return d
    if estimator == "k3":
        return torch.exp(-d) - 1 + d
    raise ValueError(f"unknown KL estimator {estimator!r}")


def trajectory_scores(rewards: torch.Tensor, turn_kl: torch.Tensor, method: Method) -> torch.Tensor:
    """s = R - sum_t coef_t * KL_t.  rewards, turn_kl [N, T] (KL_t summed over turn t's tokens, 0 for turns that
    are not trained) -> scores [N]."""
    coefs = torch.tensor(method.kl_coefs, dtype=turn_kl.dtype)
    return method.reward_term(rewards) - (turn_kl * coefs).sum(-1)


def rloo_advantages(scores: torch.Tensor) -> torch.Tensor:
    """scores [P, k] -> advantages [P, k]: each score minus the mean of the other k-1 of its problem."""
    k = scores.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per problem")
    others_mean = (scores.sum(-1, keepdim=True) - scores) / (k - 1)
    return scores - others_mean


def policy_loss(logp: torch.Tensor, mask: torch.Tensor, seq_advantages: torch.Tensor, n_traj: int) -> torch.Tensor:
    """REINFORCE with the leave-one-out baseline: -(1/N) sum_seq A(seq) * sum of its completion log-probs.

    logp [B, C] (with gradient), mask [B, C] completion tokens, seq_advantages [B] (the advantage of the trajectory
    each sequence belongs to; no gradient), n_traj = N, the trajectories the batch mean is over.
    """
    return -(seq_advantages.detach() * masked_sum(logp, mask)).sum() / n_traj


# ---- token tensors ------------------------------------------------------------------------------
def pad_sequences(prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Left-pad prompt+completion so every sequence ends at the last position.

    Returns input_ids [B, L], attention_mask [B, L], position_ids [B, L] and completion_mask [B, C] over the last
    C = max completion length positions (the only positions whose log-probs are needed: the LM head runs on those
    alone via `logits_to_keep`).
    """
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    L = max(len(s) for s in seqs)
    C = max(1, max(len(c) for c in completions))
    input_ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), L), dtype=torch.long)
    completion_mask = torch.zeros((len(seqs), C), dtype=torch.float32)
    for i, (s, c) in enumerate(zip(seqs, completions)):
        input_ids[i, L - len(s):] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, L - len(s):] = 1
        if len(c):
            completion_mask[i, C - len(c):] = 1.0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids, completion_mask


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension of the positions where mask == 1 -> [B]."""
    return (x * mask).sum(-1)
