"""The advantage seam: a function registered in cocos.rl.objective.ADVANTAGES from outside the package is a valid
`advantage=` and is what the trainer's loss and log use (docs/credit.md, "Calling it from another trainer").

- "zero" (A = 0 everywhere): one training step leaves every weight where AdamW's decoupled weight decay alone puts
  it (a zero gradient gives Adam a zero update), while the same step under rloo moves them;
- "sign" (A = the sign of rloo's advantage): the step's loss is -(1/N) sum over trained turns of A * (the trainer's
  log-probs of the turn's tokens), computed here by hand.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import add_problems, tiny_model, tiny_tokenizer  # noqa: E402

from cocos.errors import UserError  # noqa: E402
from cocos.rl import objective  # noqa: E402
from cocos.rl.config import TrainConfig  # noqa: E402

LR, WD = 1e-2, 0.1


def zero_advantages(scores: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """s [P, k, T] -> A [P, k, T] = 0."""
    return torch.zeros_like(scores)


def sign_advantages(scores: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """The sign of rloo's advantage: +1 above the others' mean score, -1 below, 0 at it."""
    return torch.sign(objective.rloo_turn_advantages(scores, total))


@pytest.fixture
def toys(monkeypatch):
    calls = []

    def counted(fn):
        def advantage(scores, total=None):
            calls.append(tuple(scores.shape))
            return fn(scores, total)
        return advantage

    monkeypatch.setitem(objective.ADVANTAGES, "zero", counted(zero_advantages))
    monkeypatch.setitem(objective.ADVANTAGES, "sign", counted(sign_advantages))
    return calls


def _trainer(tmp_path, name, advantage):
    from cocos.generation.policy import Policy
    from cocos.rl.trainer import Trainer

    tok = tiny_tokenizer()
    cfg = TrainConfig(model="tiny", k=2, turns=2, problems_per_step=2, max_new_tokens=8, temperature=1.0, micro_batch=3,
                      lr=LR, weight_decay=WD, max_steps=1, eval_limit=0, autocast="none", tensorboard=False,
                      timeout=5.0, schedule="constant", warmup_steps=0, beta=0.05, max_grad_norm=0.0,
                      skip_uniform_groups=False, advantage=advantage)
    policy = Policy(tiny_model(tok, snippet_bias=False), tok, backend="auto")
    tr = Trainer(cfg, tmp_path / name, progress=False, policy=policy, problems=add_problems(2))
    torch.manual_seed(1)
    with torch.no_grad():  # away from the reference: every trajectory has a KL, so rloo's advantages are not 0
        for p in tr.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return tr


def _weights(tr):
    return {n: p.detach().clone() for n, p in tr.model.named_parameters()}


def test_a_registered_advantage_is_a_config_choice(toys):
    assert TrainConfig(advantage="zero").advantage == "zero"
    with pytest.raises(UserError, match="advantage: must be one of rloo, per-turn, zero, sign"):
        TrainConfig(advantage="gae")


def test_zero_advantage_leaves_the_weights_to_weight_decay(tmp_path, toys):
    tr = _trainer(tmp_path, "zero", "zero")
    before = _weights(tr)
    stats = tr.train_step()
    assert toys == [(1, 2, 2)] * 2  # the trainer asked the registered function, once per group (shared-prefix passes)
    assert stats["loss"] == 0.0 and stats["adv_std"] == 0.0 and stats["adv_zero_frac"] == 1.0
    assert stats["trained_frac"] == 1.0 and abs(stats["kl"]) > 0  # the groups did train, with a KL to score
    decayed = 1 - LR * WD
    for n, p in tr.model.named_parameters():
        assert torch.allclose(p.detach(), before[n] * decayed, rtol=0, atol=1e-7), n

    moved = _trainer(tmp_path, "rloo", "rloo")  # the same step under rloo: the gradient moves the weights
    before = _weights(moved)
    stats = moved.train_step()
    assert stats["adv_std"] > 0
    assert max(float((p.detach() - before[n] * decayed).abs().max()) for n, p in moved.model.named_parameters()) > 1e-4


@pytest.mark.parametrize("passes", ["shared-prefix", "plain"])
def test_sign_advantage_weighs_the_loss(tmp_path, toys, passes):
    from dataclasses import replace

    tr = _trainer(tmp_path, passes, "sign")
    tr.cfg = replace(tr.cfg, logprob_passes=passes)
    trajs = tr.rollout(tr.problems, step=0)
    res = tr.optimize(trajs, step=0)
    assert toys == ([(1, 2, 2)] * 2 if passes == "shared-prefix" else [(2, 2, 2)])  # per group, or the whole chunk
    rloo = objective.advantages("rloo", res.rewards, res.turn_kl, res.method, k=2)
    assert torch.equal(res.advantages, torch.sign(rloo))  # what the loss weighed, from the batch record
    assert set(res.trajectory_advantages()) <= {-1.0, 0.0, 1.0} and any(a != 0 for a in res.trajectory_advantages())
    # the loss: -(1/N) sum over trained turns of A[traj, turn] * sum of the trainer's log-probs of its tokens
    pairs = zip(res.seqs, res.sampled_vs_trained())
    hand = -sum(res.advantages[s.traj, s.turn].item() * sum(lp) for s, (_, lp) in pairs)
    assert res.loss == pytest.approx(hand / len(trajs), abs=1e-5)
