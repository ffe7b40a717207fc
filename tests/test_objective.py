"""The objective math of cocos.rl.objective on hand-computed tensors, and on a tiny Llama built from a config."""

import math

import pytest
import torch

from cocos.episodes.rewards import accumulated_reward
from cocos.rl import objective
from cocos.rl.config import TrainConfig
from cocos.rl.objective import method_at


# ---- accumulated reward -------------------------------------------------------------------------
# R = gamma^(T-1) r1 + sum_{t>=2} gamma^(T-t) (r_t - r_{t-1}), written out by hand for each case.
CASES = {
    (0.4,): {0.0: 0.4, 0.5: 0.4, 1.0: 0.4, 2.0: 0.4},  # T = 1: R = r1
    (0.2, 1.0): {0.0: 0.8, 0.5: 0.1 + 0.8, 1.0: 1.0, 2.0: 0.4 + 0.8},  # T = 2: gamma r1 + r2 - r1
    (1.0, 0.5): {0.0: -0.5, 0.5: 0.5 - 0.5, 1.0: 0.5, 2.0: 2.0 - 0.5},
    # T = 3: gamma^2 r1 + gamma (r2 - r1) + (r3 - r2)
    (0.2, 0.6, 0.8): {0.0: 0.2, 0.5: 0.05 + 0.2 + 0.2, 1.0: 0.8, 2.0: 0.8 + 0.8 + 0.2},
    (0.5, 0.0, 1.0): {0.0: 1.0, 0.5: 0.125 - 0.25 + 1.0, 1.0: 1.0, 2.0: 2.0 - 1.0 + 1.0},
}


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_accumulated_rewards_hand_computed(gamma):
    for rewards, expected in CASES.items():
        batch = torch.tensor([list(rewards), list(rewards)])
        R = accumulated_reward(batch, gamma)
        assert R.shape == (2,)
        assert R[0].item() == pytest.approx(expected[gamma], abs=1e-6), (rewards, gamma)
        # the batched (tensor) form agrees with the one-trajectory (list) form
        assert R[1].item() == pytest.approx(accumulated_reward(list(rewards), gamma), abs=1e-6)
        # and it is the CoCoS method's reward term
        assert method_at(TrainConfig(gamma=gamma, turns=len(rewards), method="cocos"), 0).reward_term(batch)[0].item() \
            == pytest.approx(expected[gamma], abs=1e-6)


# ---- leave-one-out advantages -------------------------------------------------------------------
def test_rloo_advantages_hand_computed():
    scores = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.2, 0.2]])
    A = objective.rloo_advantages(scores)
    # problem 1: 1 - (0 + 0.5)/2 = 0.75; 0 - (1 + 0.5)/2 = -0.75; 0.5 - (1 + 0)/2 = 0
    assert A[0].tolist() == pytest.approx([0.75, -0.75, 0.0], abs=1e-6)
    assert A[1].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)  # equal scores: no signal
    k2 = objective.rloo_advantages(torch.tensor([[0.3, 0.9]]))
    assert k2[0].tolist() == pytest.approx([-0.6, 0.6])
    with pytest.raises(ValueError):
        objective.rloo_advantages(torch.tensor([[1.0]]))


def test_scores_subtract_beta_times_kl_per_turn():
    rewards = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    turn_kl = torch.tensor([[2.0, 3.0], [0.0, 4.0]])
    s = objective.trajectory_scores(rewards, turn_kl, method_at(TrainConfig(gamma=0.5, beta=0.1), 0))
    assert s.tolist() == pytest.approx([0.0 + 1.0 - 0.1 * 5.0, 0.5 + 1.0 - 1.0 - 0.1 * 4.0])


# ---- KL -----------------------------------------------------------------------------------------
def test_token_kl_estimators_and_masked_sum():
    logp = torch.tensor([[math.log(0.5), math.log(0.25), 0.0]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5), -5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the last position is padding: not counted
    k1 = objective.token_kl(logp, ref, "k1")
    assert k1[0, :2].tolist() == pytest.approx([math.log(2), -math.log(2)])
    assert objective.masked_sum(k1, mask).item() == pytest.approx(0.0, abs=1e-6)
    k3 = objective.token_kl(logp, ref, "k3")  # exp(-d) - 1 + d, d = log 2 then -log 2
    assert k3[0, :2].tolist() == pytest.approx([0.5 - 1 + math.log(2), 2 - 1 - math.log(2)])
    assert objective.masked_sum(k3, mask).item() == pytest.approx((0.5 - 1 + math.log(2)) + (2 - 1 - math.log(2)))
    assert (objective.token_kl(ref, ref, "k3") == 0).all()


def test_kl_estimate_matches_exact_kl_in_expectation():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(5), 0)
    q = torch.softmax(torch.randn(5), 0)
    exact = (p * (p.log() - q.log())).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True)
    for est in ("k1", "k3"):
        approx = objective.token_kl(p.log()[x], q.log()[x], est).mean().item()
        assert approx == pytest.approx(exact, abs=0.02)


# ---- SCoRe --------------------------------------------------------------------------------------
def test_score_stage_switch_and_bonus():
    cfg = TrainConfig(method="score", turns=2, beta=0.01, score_beta1=0.5, score_stage1_steps=3, score_alpha=10.0)
    assert [method_at(cfg, s).name for s in range(5)] == ["score-I"] * 3 + ["score-II"] * 2
    r = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    stage1, stage2 = method_at(cfg, 0), method_at(cfg, 3)
    assert stage1.reward_term(r).tolist() == [1.0, 0.0, 1.0]  # stage I: r_2 only
    # stage II: r1 + r2 + alpha (r2 - r1)
    assert stage2.reward_term(r).tolist() == [11.0, -9.0, 2.0]
    assert stage1.kl_coefs == (0.5, 0.01) and stage2.kl_coefs == (0.01, 0.01)
    assert method_at(TrainConfig(method="score", turns=3, beta=0.01, score_beta1=0.5), 0).kl_coefs == (0.5, 0.5, 0.01)
    assert method_at(TrainConfig(method="cocos", beta=0.01, score_beta1=0.5), 0).kl_coefs == (0.01, 0.01)
    # SCoRe trains every turn in trajectory mode (turn 1 held by beta_1), only the last in last-turn mode
    assert stage1.trained_turns == (0, 1) and stage2.trained_turns == (0, 1)
    assert method_at(TrainConfig(method="score", mode="last-turn"), 0).trained_turns == (1,)
    assert method_at(TrainConfig(method="cocos", train_turns="last"), 0).trained_turns == (1,)
    kl = torch.tensor([[2.0, 1.0]] * 3)
    s1 = objective.trajectory_scores(r, kl, stage1)
    assert s1.tolist() == pytest.approx([1.0 - 1.0 - 0.01, -1.0 - 0.01, 1.0 - 1.0 - 0.01])


# ---- last-turn vs trajectory: gamma cancels when turns 1..T-1 are shared -------------------------
def test_gamma_cancels_from_advantages_in_last_turn_mode():
    # last-turn mode: the k=3 samples of a problem share r_1 (one turn-1 sample); only r_2 differs
    shared = torch.tensor([[0.4, 0.0], [0.4, 1.0], [0.4, 0.5]])
    # trajectory mode: every sample has its own turn 1
    own = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.4, 0.5]])
    adv = {}
    for gamma in (0.0, 0.5, 1.0, 2.0):
        for name, r in (("shared", shared), ("own", own)):
            adv[name, gamma] = objective.rloo_advantages(accumulated_reward(r, gamma).view(1, 3))
    for gamma in (0.0, 1.0, 2.0):
        assert torch.allclose(adv["shared", gamma], adv["shared", 0.5], atol=1e-6)
    # ... and equal the advantages of r_2 alone
    assert torch.allclose(adv["shared", 0.5], objective.rloo_advantages(shared[:, 1].view(1, 3)), atol=1e-6)
    assert not torch.allclose(adv["own", 0.0], adv["own", 2.0])  # with its own turn 1, gamma matters


# ---- token masks --------------------------------------------------------------------------------
def test_pad_sequences_left_pads_and_masks_completions():
    ids, attn, pos, cmask = objective.pad_sequences([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 9, 10], [0, 8, 11, 12, 13]]
    assert attn.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert pos.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    assert cmask.tolist() == [[0, 1, 1], [1, 1, 1]]  # over the last 3 positions: 7 is prompt, not trained


class LogitTable(torch.nn.Module):
    """A 'model' whose logits are a free parameter per (row, position): its gradient shows exactly which
    positions the loss reads."""

    def __init__(self, B, L, V):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(B, L, V))

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep, use_cache, cache=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[:, -logits_to_keep:, :])


def test_no_gradient_on_prompt_or_padding_positions():
    torch.manual_seed(0)
    ids, attn, pos, cmask = objective.pad_sequences([[1, 2, 3, 4], [1]], [[5, 6], [7, 8, 9]], pad_id=0)
    model = LogitTable(2, ids.shape[1], 10)
    logp, _ = objective.token_logprobs(model, ids, attn, pos, cmask.shape[1], temperature=1.0)
    loss = objective.policy_loss(logp, cmask, torch.tensor([1.0, -2.0]), n_traj=2)
    loss.backward()
    g = model.table.grad.abs().sum(-1)  # [B, L]: the logits at position j predict token j+1
    # row 0: tokens [1 2 3 4 | 5 6], L=6; completion tokens at 4,5 are predicted by logits at 3,4
    assert g[0].nonzero().flatten().tolist() == [3, 4]
    # row 1: [pad pad 1 | 7 8 9]; completion tokens at 3,4,5 predicted at 2,3,4; padding and prompt untouched
    assert g[1].nonzero().flatten().tolist() == [2, 3, 4]


def tiny_llama(vocab=48, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def reference_logprobs(model, prompt, completion):
    """Unpadded, full-sequence log-probs of the completion tokens (the plain way)."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return lp[len(prompt) - 1:]


def test_token_logprobs_with_padding_equal_unpadded_logprobs():
    model = tiny_llama()
    prompts, comps = [[3, 4, 5, 6, 7], [9, 10]], [[11, 12], [13, 14, 15, 16]]
    ids, attn, pos, cmask = objective.pad_sequences(prompts, comps, pad_id=0)
    with torch.no_grad():
        logp, ent = objective.token_logprobs(model, ids, attn, pos, cmask.shape[1], temperature=1.0, with_entropy=True)
        for i, (p, c) in enumerate(zip(prompts, comps)):
            got = logp[i][cmask[i].bool()]
            assert torch.allclose(got, reference_logprobs(model, p, c), atol=1e-5)
    assert (ent[cmask.bool()] > 0).all() and (ent <= math.log(48) + 1e-4).all()


def test_one_step_moves_logprob_toward_positive_advantage():
    model = tiny_llama(seed=1).train()
    prompt, good, bad = [3, 4, 5], [20, 21, 22], [30, 31, 32]
    ids, attn, pos, cmask = objective.pad_sequences([prompt, prompt], [good, bad], pad_id=0)
    scores = torch.tensor([[1.0, 0.0]])  # the first sample scored higher
    A = objective.rloo_advantages(scores).flatten()
    assert A.tolist() == [1.0, -1.0]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        before = objective.masked_sum(objective.token_logprobs(model, ids, attn, pos, 3, temperature=1.0)[0], cmask)
    logp, _ = objective.token_logprobs(model, ids, attn, pos, 3, temperature=1.0)
    objective.policy_loss(logp, cmask, A, n_traj=2).backward()
    opt.step()
    with torch.no_grad():
        after = objective.masked_sum(objective.token_logprobs(model, ids, attn, pos, 3, temperature=1.0)[0], cmask)
    assert after[0] > before[0] + 0.05  # positive advantage: more likely
    assert after[1] < before[1] - 0.05  # negative advantage: less likely
