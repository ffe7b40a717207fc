"""The CoCoS objective (DESIGN.md), top to bottom.

For each problem the policy samples k trajectories of T turns. For trajectory i:

    r_t       per-turn reward (progressive: passed/K, binary: all pass)              -> rollout
    R_i       = gamma^(T-1) r_1 + sum_{t=2..T} gamma^(T-t) (r_t - r_{t-1})          accumulated_rewards
    KL_i      = sum over the trained turns' generated tokens of a per-token KL      token_kl, sequence sums
                estimate between the policy and the frozen reference
    s_i       = R_i - beta * KL_i                                                   (KL is a number, no gradient)
    A_i       = s_i - mean_{j != i} s_j   over the k samples of the same problem    rloo_advantages
    loss      = -(1/N) sum_i A_i * sum_{tokens y the policy generated in trained turns} log pi_T(y | context)

pi_T is the policy at the sampling temperature, softmax(logits / T): the distribution the tokens were drawn
from, for the loss and for both sides of the KL (token_logprobs).

Only completion tokens carry loss: prompt, instruction and padding tokens are masked (token_mask).
One gradient step per batch of fresh samples (on-policy), so no importance ratio is needed.

`last-turn` mode: turns 1..T-1 are sampled once per problem and shared by its k samples, so r_1..r_{T-1}
are equal within a group; R_i - R_j = r_T,i - r_T,j and gamma cancels from every advantage.

SCoRe (Kumar et al. 2024, the baseline) reuses the same machinery with a different score:
    stage I  (step < score_stage1_steps): s = r_T - beta_1 * KL(turns 1..T-1) - beta * KL(turn T)
    stage II:                             s = sum_t r_t + alpha * (r_T - r_1) - beta * KL(all turns)
with binary rewards, both optimised with the same leave-one-out REINFORCE estimator.
"""

from __future__ import annotations

import torch


# ---- rewards -> scores --------------------------------------------------------------------------
def accumulated_rewards(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """rewards [N, T] -> R [N]; the same formula as cocos.rewards.accumulated_reward, batched."""
    T = rewards.shape[-1]
    R = gamma ** (T - 1) * rewards[..., 0]
    for t in range(1, T):  # 0-based t is the paper's turn t+1
        R = R + gamma ** (T - 1 - t) * (rewards[..., t] - rewards[..., t - 1])
    return R


def score_rewards(rewards: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
    """SCoRe's trajectory reward: stage 1 -> r_T; stage 2 -> sum_t r_t + alpha * (r_T - r_1)."""
    if stage == 1:
        return rewards[..., -1]
    return rewards.sum(-1) + alpha * (rewards[..., -1] - rewards[..., 0])


def score_stage(step: int, stage1_steps: int) -> int:
    """SCoRe stage of a 0-based optimizer step."""
    return 1 if step < stage1_steps else 2


def turn_kl_coefs(turns: int, beta: float, *, method: str = "cocos", stage: int = 2, beta1: float = 0.0) -> list[float]:
    """KL coefficient of each turn: beta everywhere, except SCoRe stage I puts beta_1 on turns 1..T-1."""
    coefs = [beta] * turns
    if method == "score" and stage == 1:
        coefs[:-1] = [beta1] * (turns - 1)
    return coefs


def trajectory_scores(rewards: torch.Tensor, turn_kl: torch.Tensor, kl_coefs: list[float], *, method: str = "cocos",
                      gamma: float = 0.5, stage: int = 2, alpha: float = 0.0) -> torch.Tensor:
    """s = reward term - sum_t coef_t * KL_t.  rewards, turn_kl [N, T] (KL_t summed over turn t's tokens,
    0 for turns that are not trained) -> scores [N]."""
    if method == "score":
        R = score_rewards(rewards, stage, alpha)
    else:
        R = accumulated_rewards(rewards, gamma)
    coefs = torch.tensor(kl_coefs, dtype=turn_kl.dtype)
    return R - (turn_kl * coefs).sum(-1)


def rloo_advantages(scores: torch.Tensor) -> torch.Tensor:
    """scores [P, k] -> advantages [P, k]: each score minus the mean of the other k-1 of its problem."""
    k = scores.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per problem")
    others_mean = (scores.sum(-1, keepdim=True) - scores) / (k - 1)
    return scores - others_mean


# ---- sequences -> token tensors -----------------------------------------------------------------
def pad_sequences(prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Left-pad prompt+completion so every sequence ends at the last position.

    Returns input_ids [B, L], attention_mask [B, L], position_ids [B, L] and completion_mask [B, C]
    over the last C = max completion length positions (the only positions whose log-probs are needed:
    the LM head runs on those alone via `logits_to_keep`).
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


def token_logprobs(model, input_ids, attention_mask, position_ids, n_last: int, *, temperature: float,
                   with_entropy: bool = False):
    """log pi_T(token_j | tokens_<j) for the last n_last tokens of each row -> [B, n_last] (float32), where
    pi_T = softmax(logits / temperature) is the distribution the rollouts sampled from. Dividing by the
    sampling temperature (for the policy and the reference alike, as the authors' code and TRL do) keeps the
    update on-policy; the sampler returns the same quantity (Generation.logprobs) and tests hold them equal.
    top-p < 1 is not modelled: the loss then treats the sample as drawn from the whole tempered softmax.

    Token j is predicted by the logits at j-1, so the model keeps the last n_last+1 positions and drops the
    final one (it predicts past the sequence).
    """
    if temperature <= 0:
        raise ValueError("token_logprobs: temperature must be > 0 (the sampling temperature of the rollouts)")
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=n_last + 1, use_cache=False)
    logits = out.logits[:, :-1, :].float() / temperature
    targets = input_ids[:, -n_last:]
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = logz - (probs * logits).sum(-1)
    return logp, entropy


# ---- KL and loss --------------------------------------------------------------------------------
def token_kl(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate on tokens sampled from pi.

    k1 = log pi - log ref (unbiased, can be negative per token); k3 = exp(-d) - 1 + d with d = log pi - log ref
    (unbiased, always >= 0, lower variance).
    """
    d = logp - ref_logp
    if estimator == "k1":
        return d
    if estimator == "k3":
        return torch.exp(-d) - 1 + d
    raise ValueError(f"unknown KL estimator {estimator!r}")


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension of the positions where mask == 1 -> [B]."""
    return (x * mask).sum(-1)


def policy_loss(logp: torch.Tensor, mask: torch.Tensor, seq_advantages: torch.Tensor, n_traj: int) -> torch.Tensor:
    """REINFORCE with the leave-one-out baseline: -(1/N) sum_seq A(seq) * sum of its completion log-probs.

    logp [B, C] (with gradient), mask [B, C] completion tokens, seq_advantages [B] (the advantage of the
    trajectory each sequence belongs to; no gradient), n_traj = N, the trajectories the batch mean is over.
    """
    return -(seq_advantages.detach() * masked_sum(logp, mask)).sum() / n_traj


def entropy_mean(entropy: torch.Tensor, mask: torch.Tensor) -> float:
    n = mask.sum()
    return float((entropy * mask).sum() / n) if n > 0 else 0.0


