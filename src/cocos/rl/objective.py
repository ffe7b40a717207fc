"""The RL objective (DESIGN.md), top to bottom: log-probs -> KL -> scores -> advantages -> loss.

For each problem the policy samples k trajectories of T turns. For trajectory i:

    r_t       per-turn reward (progressive: passed/K, binary: all pass)               -> cocos.episodes.rollout
    logp      log pi_T(y | context) of every generated token of the trained turns       token_logprobs
    KL_t      sum over turn t's generated tokens of a per-token KL estimate against       token_kl
              the frozen reference (a number: no gradient flows through the score)
    c_t       the method's per-turn reward terms, sum_t c_t = R                         method.reward_terms
    s_i,t     = c_t - method.kl_coefs[t] * KL_t   (turn t's share of the score)          turn_scores
    S_i       = sum_t s_i,t = R - sum_t method.kl_coefs[t] * KL_t                        trajectory_scores
    A_i,t     the advantage of turn t of trajectory i, chosen by name (ADVANTAGES):      advantages
                rloo       A_i,t = S_i - mean_{j != i} S_j                 (DESIGN.md; the same for every turn)
                per-turn   A_i,t = G_i,t - mean_{j != i} G_j,t,   G_i,t = sum_{u >= t} s_i,u  (return-to-go)
              the means over the k samples of the same problem
    loss      = -(1/N) sum_i sum_{t in method.trained_turns} A_i,t * sum_{tokens y of turn t} logp(y)   policy_loss

pi_T is the policy at the sampling temperature, softmax(logits / T): the distribution the tokens were drawn from,
for the loss and for both sides of the KL. Only completion tokens carry loss (prompt and padding are masked).
One gradient step per batch of fresh samples (on-policy), so no importance ratio is needed.

per-turn credit (docs/credit.md): turn t's tokens are scored by what follows them, G_i,t, not by the terms
s_i,u (u < t) of earlier turns, which depend only on the history before turn t and so add nothing to the gradient
in expectation, only noise; the leave-one-out baseline does not depend on sample i. So both estimators have the
same expectation, the policy gradient of E[S] with the scores as rewards. per-turn equals rloo at T = 1, on turn 1
(G_1 = S), and, in last-turn mode (turns 1..T-1 shared within a group), on the trained last turn.

A method is a record (`Method`): its reward terms, its KL coefficient per turn, the turns it trains and its stage
(SCoRe's 1 or 2, as the log calls it). `method_at` gives the record of a config at a step:
    CoCoS     R = gamma^(T-1) r_1 + sum_{t>=2} gamma^(T-t) (r_t - r_{t-1})  (cocos.episodes.rewards), beta on every turn
              c_1 = gamma^(T-1) r_1, c_t = gamma^(T-t) (r_t - r_{t-1})
    SCoRe I   R = r_T, beta_1 on turns 1..T-1 and beta on turn T            (Kumar et al. 2024, the baseline)
              c_t = 0 for t < T, c_T = r_T
    SCoRe II  R = sum_t r_t + alpha (r_T - r_1), beta on every turn
              c_1 = r_1, c_t = r_t + alpha (r_t - r_{t-1}): the bonus goes to the turn that changed the reward
The ablations are configs of these (gamma, reward kind, trained turns, rollout mode). `last-turn` mode: turns
1..T-1 are shared within a group, so R_i - R_j = r_T,i - r_T,j and gamma cancels from every advantage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cocos.episodes.rewards import accumulated_reward, accumulated_reward_terms


# ---- methods ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str  # what the log calls it: cocos, score-I, score-II
    reward_term: Callable[[torch.Tensor], torch.Tensor]  # rewards [N, T] -> R [N]
    # rewards [N, T] -> per-turn terms c [N, T], c_t depending on turns 1..t only; sum_t c_t = reward_term (up to
    # rounding: reward_term stays its own formula, so that the rloo scores keep their bits)
    reward_terms: Callable[[torch.Tensor], torch.Tensor]
    kl_coefs: tuple[float, ...]  # per turn
    trained_turns: tuple[int, ...]  # 0-based turns whose tokens carry gradient
    stage: int = 2  # what the log calls the step's stage: SCoRe's 1 or 2; 2 for one-stage methods


def method_at(cfg, step: int) -> Method:
    """The objective of config `cfg` (cocos.rl.config.TrainConfig) at 0-based optimizer step `step`."""
    T, trained = cfg.turns, tuple(cfg.trained_turns())
    if cfg.method == "cocos":
        gamma = cfg.gamma
        return Method("cocos", lambda r: accumulated_reward(r, gamma), lambda r: accumulated_reward_terms(r, gamma),
                      (cfg.beta,) * T, trained)
    # SCoRe in trajectory mode trains every turn: turn T for the reward, turns 1..T-1 held near the base by the KL.
    all_turns = tuple(range(T)) if cfg.mode == "trajectory" else trained
    if step < cfg.score_stage1_steps:
        return Method("score-I", lambda r: r[..., -1], last_turn_terms, (cfg.score_beta1,) * (T - 1) + (cfg.beta,),
                      all_turns, stage=1)
    alpha = cfg.score_alpha
    return Method("score-II", lambda r: r.sum(-1) + alpha * (r[..., -1] - r[..., 0]),
                  lambda r: score_bonus_terms(r, alpha), (cfg.beta,) * T, all_turns, stage=2)


def last_turn_terms(rewards: torch.Tensor) -> torch.Tensor:
    """SCoRe I's R = r_T per turn: r_T on turn T, 0 before."""
    terms = torch.zeros_like(rewards)
    terms[..., -1] = rewards[..., -1]
    return terms


def score_bonus_terms(rewards: torch.Tensor, alpha: float) -> torch.Tensor:
    """SCoRe II's R = sum_t r_t + alpha (r_T - r_1) per turn: r_t + alpha (r_t - r_{t-1}) (r_1 on turn 1). The
    bonus alpha (r_T - r_1) telescopes, so each turn gets the bonus of the change it made."""
    terms = rewards.clone()
    terms[..., 1:] += alpha * (rewards[..., 1:] - rewards[..., :-1])
    return terms


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
    cocos.rl.passes); attention_mask then covers both.
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


def turn_scores(rewards: torch.Tensor, turn_kl: torch.Tensor, method: Method) -> torch.Tensor:
    """s_t = c_t - coef_t * KL_t, turn t's share of the score: rewards, turn_kl [N, T] -> [N, T]. Its sum over
    turns is trajectory_scores (up to rounding)."""
    coefs = torch.tensor(method.kl_coefs, dtype=turn_kl.dtype)
    return method.reward_terms(rewards) - turn_kl * coefs


def rloo_advantages(scores: torch.Tensor) -> torch.Tensor:
    """scores [P, k] -> advantages [P, k]: each score minus the mean of the other k-1 of its problem."""
    k = scores.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per problem")
    others_mean = (scores.sum(-1, keepdim=True) - scores) / (k - 1)
    return scores - others_mean


# ---- advantages, chosen by name (TrainConfig.advantage) -----------------------------------------
# Each: per-turn scores s [P, k, T] (P problems, k samples each, T turns; turn_scores) -> advantages [P, k, T], the
# advantage of each (sample, turn); pure torch, no trainer. `total` [P, k]: the trajectory scores S = sum_t s_t
# when the caller has them (the trainer passes trajectory_scores, whose bits differ from s.sum(-1) by rounding;
# with it, rloo gives exactly the trajectory-level numbers of rloo_advantages). Another trainer calls:
#     A = ADVANTAGES["per-turn"](s)      # s = turn_scores(rewards, turn_kl, method).view(P, k, T)
def rloo_turn_advantages(scores: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """RLOO: A_i,t = S_i - mean_{j != i} S_j, one value per trajectory, the same on every turn."""
    S = scores.sum(-1) if total is None else total
    return rloo_advantages(S).unsqueeze(-1).expand_as(scores).contiguous()


def per_turn_advantages(scores: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """Per-turn credit: A_i,t = G_i,t - mean_{j != i} G_j,t with the return-to-go G_i,t = sum_{u >= t} s_i,u.

    Unbiased: the dropped terms s_i,u (u < t) depend only on the history before turn t, so they multiply a score
    function of mean zero; the baseline (the other samples' G at the same turn) does not depend on sample i.
    """
    G = scores.flip(-1).cumsum(-1).flip(-1)
    if total is not None:  # G_1 is the trajectory score: turn 1's advantage is then rloo's, bit for bit
        G = torch.cat([total.unsqueeze(-1), G[..., 1:]], dim=-1)
    return rloo_advantages(G.transpose(-1, -2)).transpose(-1, -2)  # leave-one-out over the k samples, per turn


ADVANTAGES = {"rloo": rloo_turn_advantages, "per-turn": per_turn_advantages}


def with_copy_penalty(rewards: torch.Tensor, similarity: torch.Tensor, lam: float) -> torch.Tensor:
    """Our extension (not the paper's): R - lam * 1[r_1 < 1] * sim(y_1, y_T), a penalty on copying a wrong first answer.

    rewards [N, T] (T >= 2), similarity [N] (edit similarity of turn 1's and turn T's code) -> rewards with the penalty
    taken off r_T. Under the accumulated reward r_T enters R with weight 1 (its term gamma^0 (r_T - r_{T-1})), so R
    drops by exactly the penalty; under per-turn credit it is turn T's term (the turn that copied)."""
    out = rewards.clone()
    out[:, -1] -= lam * (rewards[:, 0] < 1).to(rewards.dtype) * similarity.to(rewards.dtype)
    return out


def advantages(name: str, rewards: torch.Tensor, turn_kl: torch.Tensor, method: Method, k: int) -> torch.Tensor:
    """The trainer's advantages: rewards, turn_kl [N, T] of N = P*k trajectories (grouped by problem, k each)
    -> A [N, T], advantage `name` (ADVANTAGES) of each (trajectory, turn). The log-prob passes' loss and the
    trainer's log both read these numbers (cocos.rl.passes)."""
    T = rewards.shape[-1]
    s = turn_scores(rewards, turn_kl, method).view(-1, k, T)
    total = trajectory_scores(rewards, turn_kl, method).view(-1, k)
    return ADVANTAGES[name](s, total=total).reshape(-1, T)


def policy_loss(logp: torch.Tensor, mask: torch.Tensor, seq_advantages: torch.Tensor, n_traj: int) -> torch.Tensor:
    """REINFORCE with the leave-one-out baseline: -(1/N) sum_seq A(seq) * sum of its completion log-probs.

    logp [B, C] (with gradient), mask [B, C] completion tokens, seq_advantages [B] (the advantage of the
    (trajectory, turn) each sequence is; no gradient), n_traj = N, the trajectories the batch mean is over.
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
