"""benchmarks/credit_snr.py: its statistics on synthetic gradients with hand-computed answers, and its whole
measurement (rollout, advantages, per-sample turn-2 gradients) on the tiny model."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import add_problems, tiny_model, tiny_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def snr():
    spec = importlib.util.spec_from_file_location("credit_snr", ROOT / "benchmarks" / "credit_snr.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_group_sums_hand_computed(snr):
    """Unit vectors e_j, k = 2, two groups. Estimator 0 (advantages [1, -1] in both groups): g_1 = (e0 - e1)/2,
    g_2 = (e0 - e2)/2, mean (2 e0 - e1 - e2)/4, ||mean||^2 = 6/16, mean ||g||^2 = 1/2, mean ||g - mean||^2 = 1/8,
    SE = sqrt(1/8 / 2) = 1/4, SNR = sqrt(6), debiased: s^2 = 1/4, sqrt(6/16 - 1/8) / sqrt(1/8) = sqrt(2).
    Estimator 1 (advantages [2, 0], then [0, 2]): g_1 = e0, g_2 = e2, mean (e0 + e2)/2, ||mean||^2 = 1/2,
    mean ||g - mean||^2 = 1/2, SE = 1/2, SNR = sqrt(2), debiased 0. Cosines: g_1's (1/2)/sqrt(1/2) = 1/sqrt(2),
    g_2's -1/sqrt(2); of the means: (2/8 - 1/8) / (sqrt(6)/4 * sqrt(2)/2) = 1/sqrt(12)."""
    e = torch.eye(5)
    sums = snr.GroupSums(2, 5)
    sums.add(torch.stack([e[0], e[1]]), torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
    sums.add(torch.stack([e[0], e[2]]), torch.tensor([[1.0, -1.0], [0.0, 2.0]]))
    res = sums.result()
    a, b = res["estimators"]
    assert res["groups"] == 2
    assert a["signal"] == pytest.approx(math.sqrt(6) / 4) and a["se"] == pytest.approx(0.25)
    assert a["snr"] == pytest.approx(math.sqrt(6)) and a["snr_debiased"] == pytest.approx(math.sqrt(2))
    assert b["signal"] == pytest.approx(math.sqrt(0.5)) and b["se"] == pytest.approx(0.5)
    assert b["snr"] == pytest.approx(math.sqrt(2)) and b["snr_debiased"] == pytest.approx(0.0, abs=1e-7)
    pair = res["pairs"][0, 1]
    assert pair["cos"] == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2)]) and pair["zero"] == 0
    assert pair["cos_of_means"] == pytest.approx(1 / math.sqrt(12))

    # one group: no spread, so no SE or SNR
    one = snr.GroupSums(1, 5)
    one.add(torch.stack([e[0], e[1]]), torch.tensor([[1.0, -1.0]]))
    (a,) = one.result()["estimators"]
    assert a["signal"] == pytest.approx(math.sqrt(0.5)) and all(math.isnan(a[x]) for x in ("se", "snr", "snr_debiased"))

    # pure noise: orthogonal g in every group gives the floor sqrt(G / (G - 1)), not 0
    G = 6
    sums = snr.GroupSums(1, 2 * G)
    for g in range(G):
        sums.add(torch.stack([e for e in torch.eye(2 * G)[2 * g:2 * g + 2]]), torch.tensor([[1.0, -1.0]]))
    (a,) = sums.result()["estimators"]
    assert a["snr"] == pytest.approx(math.sqrt(G / (G - 1))) and a["snr_debiased"] == pytest.approx(0.0, abs=1e-7)


def test_turn2_advantages_by_hand(snr):
    """rloo gives turn 2 S_i - mean_{j!=i} S_j with S = gamma r_1 + r_2 - r_1; per-turn gives (r_2 - r_1) minus the
    others' mean, at any gamma (KL 0)."""
    r = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # k = 2: a correction and a kept right answer
    adv = snr.turn2_advantages(r, 2, (0.5, 2.0))
    assert adv["rloo", 0.5].tolist() == pytest.approx([0.5, -0.5])  # S = 1, 0.5
    assert adv["rloo", 2.0].tolist() == pytest.approx([-1.0, 1.0])  # S = 1, 2
    for gamma in (0.5, 2.0):
        assert adv["per-turn", gamma].tolist() == pytest.approx([1.0, -1.0])  # G_2 = 1, 0


def test_measure_tiny_model_finite(snr):
    """The whole measurement on the tiny model: finite statistics, both estimators, exact and count-sketched."""
    from cocos.generation.policy import Policy

    tok = tiny_tokenizer()
    policy = Policy(tiny_model(tok), tok, backend="auto")
    D = sum(p.numel() for p in policy.model.parameters())
    for project in (0, 256):
        res = snr.measure(policy, add_problems(4), k=4, gammas=(0.5, 2.0), max_new_tokens=8, seed=3,
                          temperature=1.0, project=project, log=lambda m: None)
        b = res["budget"]
        assert b["kept"] >= 2, b
        assert b["kept"] + b["dropped"] == 4 and b["grad_samples"] > 0 and b["dim"] == D
        for key, s in res["rows"].items():
            for name in ("rms_adv", "signal", "se", "snr", "snr_debiased"):
                assert math.isfinite(s[name]) and s[name] >= 0, (key, name, s)
            assert s["se"] > 0
        for gamma in (0.5, 2.0):
            assert res["cos"][gamma]["cos"] and all(-1 - 1e-6 <= c <= 1 + 1e-6 for c in res["cos"][gamma]["cos"])
        # per-turn's turn-2 advantages do not depend on gamma (KL 0): one shared running sum
        assert res["rows"]["per-turn", 0.5] == res["rows"]["per-turn", 2.0]


def test_turn_gradients_combine_to_the_loss_gradient(snr):
    """sum_i A_i v_i / k from turn_gradient's per-sample vectors is minus the gradient of the trainer's policy loss
    over the same k turn-2 sequences (objective.policy_loss over one padded batch, N = k)."""
    from cocos.rl import objective

    tok = tiny_tokenizer()
    model = tiny_model(tok, snippet_bias=False)
    params = [p for p in model.parameters() if p.requires_grad]
    D = sum(p.numel() for p in params)
    torch.manual_seed(0)
    prompts = [torch.randint(3, len(tok), (n,)).tolist() for n in (7, 9, 7, 5)]
    comps = [torch.randint(3, len(tok), (n,)).tolist() for n in (3, 5, 1, 4)]
    A = torch.tensor([0.75, -0.25, 0.5, -1.0])
    V = torch.zeros(4, D)
    for i in range(4):
        n = snr.turn_gradient(model, params, prompts[i], comps[i], tok.pad_token_id, V[i], temperature=0.9)
        assert n == len(comps[i])
    ids, attn, pos, cmask = objective.pad_sequences(prompts, comps, tok.pad_token_id)
    logp, _ = objective.token_logprobs(model, ids, attn, pos, cmask.shape[1], temperature=0.9)
    objective.policy_loss(logp, cmask, A, n_traj=4).backward()
    expected = -torch.cat([p.grad.reshape(-1) for p in params])
    assert torch.allclose(A @ V / 4, expected, atol=1e-6, rtol=1e-4)
    sums = snr.GroupSums(1, D)
    sums.add(V, A.unsqueeze(0))
    assert torch.allclose(sums.sum[0], expected, atol=1e-6, rtol=1e-4)
    assert float(sums.sq[0]) == pytest.approx(float(expected.double().pow(2).sum()), rel=1e-4)
