"""The advantage functions of cocos.rl.objective (ADVANTAGES: rloo, per-turn), per-turn credit's reductions, the
per-turn reward terms of every method, and the per-turn estimator through the trainer.

Unbiasedness is checked on a toy T-turn bandit whose policy gradient is known exactly: turn t picks a_t from a
softmax over logits indexed by the earlier actions, r_t is a fixed table of (a_1..a_t). The exact gradient of
E[R] comes from autograd over every action sequence; each estimator's gradient, (1/k) sum_i sum_t A_i,t
grad log pi(a_i,t | a_i,<t), is averaged over many groups of k and compared component by component, in standard
errors. A baseline that includes sample i itself (biased by -1/k of the gradient) fails the same check.
"""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import perturbed_trainer  # noqa: E402

from cocos.config import CHOICES  # noqa: E402
from cocos.episodes.rewards import accumulated_reward, accumulated_reward_terms  # noqa: E402
from cocos.errors import UserError  # noqa: E402
from cocos.rl import objective  # noqa: E402
from cocos.rl.batch import Batch, trained_sequences  # noqa: E402
from cocos.rl.config import TrainConfig, load_config  # noqa: E402
from cocos.rl.objective import ADVANTAGES, method_at, per_turn_advantages, rloo_turn_advantages  # noqa: E402

N_ACTIONS = 3


# ---- the toy bandit -------------------------------------------------------------------------------
class Bandit:
    """T turns of N_ACTIONS actions. Turn t's logits are theta[t][prefix], prefix = a_1..a_{t-1} in base N_ACTIONS;
    its reward r_t = table[t][prefix * N_ACTIONS + a_t], in {0, 1/3, 2/3, 1} (a pass ratio of 3 tests)."""

    def __init__(self, T: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        n = N_ACTIONS
        self.T = T
        self.theta = [torch.randn(n ** t, n, generator=g, dtype=torch.float64) for t in range(T)]
        self.table = [torch.randint(0, 4, (n ** (t + 1),), generator=g).double() / 3 for t in range(T)]

    def exact_gradient(self, gamma: float) -> torch.Tensor:
        """d E[R] / d theta, flattened turn by turn: E[R] summed over all N_ACTIONS^T action sequences."""
        n, T = N_ACTIONS, self.T
        theta = [th.clone().requires_grad_(True) for th in self.theta]
        seqs = torch.cartesian_prod(*[torch.arange(n)] * T).view(-1, T) if T > 1 else torch.arange(n).view(-1, 1)
        logp, rewards, prefix = 0.0, [], torch.zeros(len(seqs), dtype=torch.long)
        for t in range(T):
            logp = logp + torch.log_softmax(theta[t][prefix], -1).gather(-1, seqs[:, t:t + 1]).squeeze(-1)
            prefix = prefix * n + seqs[:, t]
            rewards.append(self.table[t][prefix])
        expected = (logp.exp() * accumulated_reward(torch.stack(rewards, -1), gamma)).sum()
        return torch.cat([g.flatten() for g in torch.autograd.grad(expected, theta)])

    def sample(self, M: int, k: int, gen: torch.Generator, shared_turns: int = 0):
        """M groups of k episodes -> actions, prefixes, rewards [M, k, T]; the first `shared_turns` turns are sampled
        once per group and shared by its k samples (last-turn mode: shared_turns = T - 1)."""
        n = N_ACTIONS
        prefix = torch.zeros(M, k, dtype=torch.long)
        actions, prefixes, rewards = [], [], []
        for t in range(self.T):
            probs = torch.softmax(self.theta[t], -1)[prefix]  # [M, k, n]
            if t < shared_turns:
                a = torch.multinomial(probs[:, 0], 1, generator=gen).expand(M, k)
            else:
                a = torch.multinomial(probs.view(-1, n), 1, generator=gen).view(M, k)
            actions.append(a)
            prefixes.append(prefix)
            prefix = prefix * n + a
            rewards.append(self.table[t][prefix])
        return actions, prefixes, torch.stack(rewards, -1)

    def estimator_samples(self, advantage, gamma: float, M: int, k: int, seed: int, shared_turns: int = 0):
        """M independent draws of the estimator (1/k) sum_i sum_{trained t} A_i,t grad log pi(a_i,t | prefix)
        -> [M, number of parameters]. Trained turns: all, or the last one when turns are shared."""
        gen = torch.Generator().manual_seed(seed)
        n, T = N_ACTIONS, self.T
        actions, prefixes, rewards = self.sample(M, k, gen, shared_turns)
        method = method_at(TrainConfig(gamma=gamma, turns=T), 0)
        s = objective.turn_scores(rewards.view(-1, T), torch.zeros(M * k, T, dtype=rewards.dtype), method)
        A = advantage(s.view(M, k, T))
        blocks = []
        for t in range(T):
            block = torch.zeros(M, n ** t * n, dtype=torch.float64)
            if t >= shared_turns:
                # grad of log softmax(theta_t[prefix])[a] wrt theta_t[prefix] = onehot(a) - softmax(theta_t[prefix])
                score = torch.nn.functional.one_hot(actions[t], n).double() - torch.softmax(self.theta[t], -1)[prefixes[t]]
                cols = prefixes[t].unsqueeze(-1) * n + torch.arange(n)
                block.scatter_add_(1, cols.view(M, -1), (A[..., t:t + 1] * score).view(M, -1) / k)
            blocks.append(block)
        return torch.cat(blocks, 1)


def z_scores(bandit, advantage, gamma, *, M=100_000, k=2, seed=0, shared_turns=0):
    """(exact gradient, Monte-Carlo mean, its standard error, z = (mean - exact) / SE) of the trained parameters."""
    draws = bandit.estimator_samples(advantage, gamma, M, k, seed, shared_turns)
    exact = bandit.exact_gradient(gamma)
    if shared_turns:  # only the last turn is trained: compare its parameters
        first = sum(N_ACTIONS ** (t + 1) for t in range(bandit.T - 1))
        draws, exact = draws[:, first:], exact[first:]
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(M)
    # a component no draw moves (a prefix whose k samples always score alike) must have an exact gradient of 0
    moved = se > 0
    assert (exact[~moved].abs() < 1e-12).all() and moved.sum() > len(se) // 2
    return exact[moved], mean[moved], se[moved], (mean - exact)[moved] / se[moved]


def biased_per_turn(scores):
    """per-turn with the baseline that includes sample i: (1 - 1/k) times the unbiased one, in expectation."""
    G = scores.flip(-1).cumsum(-1).flip(-1)
    return G - G.mean(1, keepdim=True)


@pytest.mark.parametrize("T", [2, 3])
@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_per_turn_estimator_is_unbiased_and_a_biased_baseline_is_caught(T, gamma):
    bandit = Bandit(T, seed=T)
    for name in ("per-turn", "rloo"):
        exact, mean, se, z = z_scores(bandit, ADVANTAGES[name], gamma)
        assert z.abs().max() < 4.0, (name, z.abs().max().item())
    _, _, _, z_biased = z_scores(bandit, biased_per_turn, gamma)
    assert z_biased.abs().max() > 10.0, z_biased.abs().max().item()


@pytest.mark.parametrize("T", [2, 3])
def test_per_turn_estimator_is_unbiased_in_last_turn_mode(T):
    """Turns 1..T-1 shared by the k samples of a group, only turn T trained: the gradient of E[R] in theta_T."""
    bandit = Bandit(T, seed=10 + T)
    _, _, _, z = z_scores(bandit, per_turn_advantages, 0.5, shared_turns=T - 1)
    assert z.abs().max() < 4.0, z.abs().max().item()
    _, _, _, z_biased = z_scores(bandit, biased_per_turn, 0.5, shared_turns=T - 1)
    assert z_biased.abs().max() > 10.0, z_biased.abs().max().item()


# ---- the estimators by hand, and their reductions ---------------------------------------------------
def test_per_turn_advantages_hand_computed():
    # one problem, k = 3, T = 2: s = per-turn scores; G_1 = s_1 + s_2, G_2 = s_2
    s = torch.tensor([[[0.5, 1.0], [0.0, 0.0], [0.25, -0.5]]])
    A = per_turn_advantages(s)
    # G_1 = [1.5, 0, -0.25]: 1.5 - (0 - 0.25)/2 = 1.625, 0 - (1.5 - 0.25)/2 = -0.625, -0.25 - 1.5/2 = -1.0
    # G_2 = [1, 0, -0.5]:   1 - (0 - 0.5)/2 = 1.25,     0 - (1 - 0.5)/2 = -0.25,   -0.5 - 1/2 = -1.0
    assert A.flatten().tolist() == pytest.approx([1.625, 1.25, -0.625, -0.25, -1.0, -1.0])
    R = rloo_turn_advantages(s)  # one value per trajectory: the turn-1 column of per-turn
    assert R.flatten().tolist() == pytest.approx([1.625, 1.625, -0.625, -0.625, -1.0, -1.0])
    with pytest.raises(ValueError):
        per_turn_advantages(torch.zeros(1, 1, 2))  # k = 1: no leave-one-out baseline


def random_case(P=5, k=3, T=3, seed=0, reward="progressive"):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 4, (P * k, T), generator=g).float() / 3
    if reward == "binary":
        rewards = (rewards == 1.0).float()
    return rewards, torch.rand(P * k, T, generator=g)


METHODS = [dict(method="cocos", gamma=g) for g in (0.0, 0.5, 1.0, 2.0)] + \
          [dict(method="score", score_stage1_steps=1), dict(method="score", score_stage1_steps=0)]  # SCoRe I, II


@pytest.mark.parametrize("over", METHODS)
def test_rloo_gives_todays_numbers_exactly(over):
    """advantage=rloo: the trajectory-level RLOO of trajectory_scores (the trainer before per-turn credit), bit for
    bit, on every turn."""
    rewards, kl = random_case()
    method = method_at(TrainConfig(turns=3, beta=0.1, **over), 0)
    A = objective.advantages("rloo", rewards, kl, method, k=3)
    today = objective.rloo_advantages(objective.trajectory_scores(rewards, kl, method).view(-1, 3)).view(-1)
    assert A.shape == (15, 3) and all(torch.equal(A[:, t], today) for t in range(3))
    # without the trajectory scores, from the per-turn scores alone: the same up to rounding
    s = objective.turn_scores(rewards, kl, method).view(5, 3, 3)
    assert torch.allclose(rloo_turn_advantages(s).view(-1, 3), A, atol=1e-6)


@pytest.mark.parametrize("over", METHODS[:4])
def test_per_turn_reduces_to_rloo_at_one_turn_and_on_turn_one(over):
    rewards, kl = random_case(T=1)
    method = method_at(TrainConfig(turns=1, beta=0.1, **over), 0)
    assert torch.equal(objective.advantages("per-turn", rewards, kl, method, k=3),
                       objective.advantages("rloo", rewards, kl, method, k=3))
    s = objective.turn_scores(rewards, kl, method).view(5, 3, 1)
    assert torch.allclose(per_turn_advantages(s), rloo_turn_advantages(s), atol=1e-6)
    # T = 3: turn 1's return-to-go is the trajectory score, so turn 1 gets rloo's advantage; later turns differ
    rewards, kl = random_case(T=3)
    method = method_at(TrainConfig(turns=3, beta=0.1, **over), 0)
    per, rloo = (objective.advantages(name, rewards, kl, method, k=3) for name in ("per-turn", "rloo"))
    assert torch.equal(per[:, 0], rloo[:, 0])
    assert not torch.allclose(per[:, 1:], rloo[:, 1:], atol=1e-3)


@pytest.mark.parametrize("reward", ["progressive", "binary"])
@pytest.mark.parametrize("over", METHODS)
@pytest.mark.parametrize("T", [2, 3])
def test_per_turn_equals_last_turn_rloo_when_earlier_turns_are_shared(T, over, reward):
    """last-turn mode: turns 1..T-1 (their rewards and KL) are the same for the k samples of a group, so every
    earlier term cancels from the leave-one-out difference and per-turn's advantage of turn T is rloo's."""
    P, k = 6, 3
    rewards, kl = random_case(P, k, T, seed=T, reward=reward)
    shared = lambda x: x.view(P, k, T)[:, :1, :T - 1].expand(P, k, T - 1).reshape(P * k, T - 1)  # noqa: E731
    method = method_at(TrainConfig(turns=T, beta=0.1, **over), 0)
    own = {name: objective.advantages(name, rewards, kl, method, k) for name in ("per-turn", "rloo")}
    rewards = torch.cat([shared(rewards), rewards[:, -1:]], -1)
    kl = torch.cat([shared(kl), kl[:, -1:]], -1)
    per, rloo = (objective.advantages(name, rewards, kl, method, k) for name in ("per-turn", "rloo"))
    assert torch.allclose(per[:, -1], rloo[:, -1], atol=1e-5)
    assert rloo[:, -1].abs().max() > 0.01  # the case has a signal to compare
    # with its own earlier turns, each sample's turn-T advantage loses their terms: it differs from rloo's
    assert not torch.allclose(own["per-turn"][:, -1], own["rloo"][:, -1], atol=1e-3)


# ---- per-turn reward terms: they sum to the method's R ------------------------------------------------
@pytest.mark.parametrize("reward", ["progressive", "binary"])
@pytest.mark.parametrize("T", [1, 2, 3, 4])
def test_reward_terms_sum_to_the_reward_term(T, reward):
    rewards, kl = random_case(P=8, k=2, T=T, seed=T, reward=reward)
    for over in METHODS if T > 1 else METHODS[:4]:
        method = method_at(TrainConfig(turns=T, beta=0.1, **over), 0)
        terms = method.reward_terms(rewards)
        assert terms.shape == rewards.shape
        assert torch.allclose(terms.sum(-1), method.reward_term(rewards), atol=1e-6), over
        assert torch.allclose(objective.turn_scores(rewards, kl, method).sum(-1),
                              objective.trajectory_scores(rewards, kl, method), atol=1e-6), over


def test_reward_terms_hand_computed():
    r = torch.tensor([[0.2, 0.6, 0.8]])
    # c_1 = gamma^2 r_1, c_2 = gamma (r_2 - r_1), c_3 = r_3 - r_2
    assert accumulated_reward_terms(r, 0.5)[0].tolist() == pytest.approx([0.05, 0.2, 0.2])
    assert accumulated_reward_terms([0.2, 0.6, 0.8], 2.0) == pytest.approx([0.8, 0.8, 0.2])  # one trajectory: a list
    cfg = dict(method="score", turns=3, score_alpha=10.0)
    assert method_at(TrainConfig(score_stage1_steps=1, **cfg), 0).reward_terms(r)[0].tolist() == pytest.approx([0.0, 0.0, 0.8])
    # SCoRe II: r_t + alpha (r_t - r_{t-1}): the bonus goes to the turn that raised the reward
    assert method_at(TrainConfig(score_stage1_steps=0, **cfg), 0).reward_terms(r)[0].tolist() == \
        pytest.approx([0.2, 0.6 + 4.0, 0.8 + 2.0])


# ---- config ---------------------------------------------------------------------------------------------
def test_config_names_the_advantage_field():
    assert TrainConfig().advantage == "rloo" and CHOICES["advantage"] == tuple(ADVANTAGES)
    assert load_config(None, ["advantage=per-turn"]).advantage == "per-turn"
    with pytest.raises(UserError, match=r"advantage: must be one of rloo, per-turn \(got 'gae'\)"):
        load_config(None, ["advantage=gae"])


# ---- through the trainer ----------------------------------------------------------------------------
def _trainer(tmp_path, **over):
    return perturbed_trainer(tmp_path / "run", **{"advantage": "per-turn", **over})


@pytest.mark.parametrize("turns,mode", [(3, "trajectory"), (2, "last-turn")])
def test_per_turn_through_both_passes(tmp_path, turns, mode):
    """advantage=per-turn: the shared-prefix and plain passes give the same advantages, loss and gradients; the
    loss weighs turn t of trajectory i by A[i, t] (the logged turn advantages); in last-turn mode the gradient is
    rloo's."""
    from dataclasses import replace

    tr = _trainer(tmp_path, turns=turns, mode=mode)
    cfg = tr.cfg
    trajs = tr.rollout(tr.problems, step=0)
    out = {}
    for adv, passes in (("per-turn", "plain"), ("per-turn", "shared-prefix"), ("rloo", "shared-prefix")):
        tr.cfg = replace(cfg, logprob_passes=passes, advantage=adv)
        tr.model.zero_grad(set_to_none=True)
        res = tr.optimize(trajs, step=0)
        out[adv, passes] = res, [p.grad.clone() for p in tr.model.parameters()]
    (plain, g_plain), (fast, g_fast) = out["per-turn", "plain"], out["per-turn", "shared-prefix"]
    for view in (lambda b: b.scores().tolist(), Batch.trajectory_advantages, lambda b: b.loss):
        assert view(fast) == pytest.approx(view(plain), abs=1e-5)
    for a, b in zip(fast.turn_advantages(), plain.turn_advantages(), strict=True):
        assert [x is None for x in a] == [x is None for x in b] and [x for x in a if x is not None] == \
            pytest.approx([x for x in b if x is not None], abs=1e-5)
    assert all(torch.allclose(x, y, atol=1e-6, rtol=1e-4) for x, y in zip(g_fast, g_plain))
    assert any(x.abs().max() > 0 for x in g_plain)

    # the loss is -(1/N) sum over trained sequences of A[traj, turn] * their log-probs
    seqs = trained_sequences(trajs, method_at(tr.cfg, 0))
    turn_adv = plain.turn_advantages()
    expected = -sum(turn_adv[s.traj][s.turn] * sum(lp) for s, (_, lp) in zip(seqs, plain.sampled_vs_trained()))
    assert plain.loss == pytest.approx(expected / len(trajs), abs=1e-5)
    trained = [t for t in range(turns) if turn_adv[0][t] is not None]
    for row, a in zip(turn_adv, plain.trajectory_advantages()):  # logged per trajectory: the mean over its trained turns
        assert a == pytest.approx(sum(row[t] for t in trained) / len(trained), abs=1e-6)

    rloo, g_rloo = out["rloo", "shared-prefix"]
    if mode == "last-turn":  # only turn T is trained, and its per-turn advantage is rloo's
        assert trained == [turns - 1]
        assert all(torch.allclose(x, y, atol=1e-6, rtol=1e-4) for x, y in zip(g_fast, g_rloo))
    else:  # turn 1 is rloo's; later turns get their own credit
        assert trained == list(range(turns))
        assert [row[0] for row in turn_adv] == pytest.approx([row[0] for row in rloo.turn_advantages()], abs=1e-6)
        assert any(abs(row[t] - row[0]) > 1e-3 for row in turn_adv for t in range(1, turns))


def test_step_logs_the_turn_advantages(tmp_path):
    from dataclasses import replace

    tr = _trainer(tmp_path, turns=2)
    stats = tr.train_step()
    assert stats["adv_rms@1"] > 0 and stats["adv_rms@2"] > 0 and stats["adv_rms@1"] != stats["adv_rms@2"]
    # the monitors see each problem's shown tests: measured (0: the tiny model's snippets never return a literal)
    assert stats["hardcoded@1"] == 0.0 and stats["hardcoded@2"] == 0.0
    tr.cfg = replace(tr.cfg, advantage="rloo")  # rloo: every trained turn carries its trajectory's advantage
    stats = tr.train_step()
    assert stats["adv_rms@1"] > 0 and stats["adv_rms@1"] == pytest.approx(stats["adv_rms@2"], abs=1e-7)


def test_copy_penalty_lowers_R_by_exactly_the_penalty_on_wrong_first_answers():
    """Our extension: R - lam * 1[r_1 < 1] * sim. Under the accumulated reward, for any gamma, R drops by exactly the
    penalty where turn 1 was wrong and not at all where it was right."""
    from types import SimpleNamespace

    from cocos.episodes.rewards import accumulated_reward
    from cocos.errors import UserError
    from cocos.rl.config import TrainConfig
    from cocos.rl.objective import advantages, method_at, with_copy_penalty

    rewards = torch.tensor([[0.0, 0.0], [1 / 3, 1 / 3], [1.0, 1.0], [0.0, 1.0]])
    sims = torch.tensor([0.99, 0.5, 1.0, 0.2])
    lam = 0.5
    penalised = with_copy_penalty(rewards, sims, lam)
    for gamma in (0.0, 0.5, 1.0, 2.0):
        drop = accumulated_reward(rewards, gamma) - accumulated_reward(penalised, gamma)
        assert torch.allclose(drop, torch.tensor([0.495, 0.25, 0.0, 0.1]))
    # two wrong samples of equal reward: the copy gets the lower advantage (per-turn: in turn T's term, so in the
    # return-to-go of every turn)
    cfg = SimpleNamespace(turns=2, trained_turns=lambda: [0, 1], method="cocos", gamma=0.5, beta=0.0)
    r = with_copy_penalty(torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([1.0, 0.3]), lam)
    a = advantages("per-turn", r, torch.zeros(2, 2), method_at(cfg, 0), k=2)
    assert a[0, 1] < 0 < a[1, 1] and torch.allclose(a[:, 1], torch.tensor([-0.35, 0.35]))
    with pytest.raises(UserError, match="copy_penalty: applies to method=cocos"):
        TrainConfig(model="tiny", method="score", copy_penalty=0.5)
