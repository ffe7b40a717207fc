"""Self-Corrector: the pool and its value-improving pairs from answers with known rewards (real sandbox), the weighted
draw, an exploration round, the actor (generator for turn 1, corrector for turns 2..T, on the last answer), and
`cocos self-corrector` -> `cocos eval --actor self-corrector` on tiny models."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import SNIPPETS, TESTS, save_tiny_model, tiny_model, tiny_tokenizer  # noqa: E402

from cocos.baselines.self_corrector.actor import (Hypothesis, Pair, Pool, SelfCorrectorActor,  # noqa: E402
                                                  corrector_prompt, hypotheses_to_correct, pair_example, pair_weights,
                                                  select_pairs, value_improving_pairs)
from cocos.baselines.self_corrector.train import SelfCorrectorConfig, explore, score_codes  # noqa: E402
from cocos.cli import main  # noqa: E402
from cocos.data.problems import Problem  # noqa: E402
from cocos.data.prompts import paper_prompt  # noqa: E402
from cocos.episodes.actors import make_actor  # noqa: E402
from cocos.episodes.records import RolloutSettings  # noqa: E402
from cocos.episodes.rollout import run_episodes, score_responses  # noqa: E402
from cocos.errors import UserError  # noqa: E402
from cocos.generation.sampling import Generation, repeat_each  # noqa: E402

RIGHT = "def add(a, b):\n    return a + b"  # 3 of 3 tests
MINUS = "def add(a, b):\n    return a - b"  # 1 of 3
ONLY_B = "def add(a, b):\n    return b"  # 2 of 3
BROKEN = "def add(a, b):\n    return a +"  # does not parse: 0 of 3
A = Problem(task_id=1, text="Add two numbers.", tests=list(TESTS), reference=RIGHT)
B = Problem(task_id=2, text="Add two numbers again.", tests=list(TESTS), reference=RIGHT)


def _pool(*answers) -> Pool:
    """A pool from (problem, code) answers, each run against its tests in the sandbox."""
    pool = Pool()
    pool.add_trajectories(score_responses([(p, [f"{code}\n[DONE]"]) for p, code in answers]))
    return pool


# ---- pool and pairs ---------------------------------------------------------------------------------
def test_value_improving_pairs_from_sandboxed_answers():
    pool = _pool((A, MINUS), (A, RIGHT), (A, ONLY_B), (A, MINUS), (B, BROKEN), (B, ONLY_B), (B, BROKEN))
    assert len(pool) == 5  # a problem's repeated code is kept once
    values = {(tid, h.code): round(h.value, 3) for tid, items in pool.by_task.items() for h in items}
    assert values == {(1, MINUS): 0.333, (1, RIGHT): 1.0, (1, ONLY_B): 0.667, (2, BROKEN): 0.0, (2, ONLY_B): 0.667}
    pairs = value_improving_pairs(pool)
    assert [(p.task_id, p.worse.code, p.better.code) for p in pairs] == [
        (1, MINUS, RIGHT), (1, MINUS, ONLY_B), (1, ONLY_B, RIGHT), (2, BROKEN, ONLY_B)]
    assert [round(p.gain, 3) for p in pairs] == [0.667, 0.333, 0.333, 0.667]
    # a minimum gain drops the small steps
    assert [(p.worse.code, p.better.code) for p in value_improving_pairs(pool, min_gain=0.5)] == [(MINUS, RIGHT),
                                                                                                  (BROKEN, ONLY_B)]
    ex = pair_example(A, pairs[0])
    assert ex["prompt"] == paper_prompt(A, [MINUS]) == corrector_prompt(A, MINUS)
    assert ex["completion"] == f"{RIGHT}\n[DONE]" and ex["kind"] == "generator -> generator" and ex["task_id"] == "1"


def test_pair_weights_and_the_weighted_draw():
    h = {c: Hypothesis(1, c, v) for c, v in ((MINUS, 1 / 3), (ONLY_B, 2 / 3), (RIGHT, 1.0), ("x = 1", 0.0))}
    pairs = [Pair(1, h[MINUS], h[RIGHT]), Pair(1, h[MINUS], h[ONLY_B]), Pair(1, h["x = 1"], h[RIGHT])]
    w = pair_weights(pairs, alpha=1.0, beta=0.0)
    # each starting hypothesis carries weight 1 in total; within it, exp(gain) decides
    assert w[2] == pytest.approx(1.0) and w[0] + w[1] == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(2.718281828 ** (1 / 3))
    # proximity: with beta, the nearer better answer gains weight
    assert pair_weights(pairs, alpha=0.0, beta=5.0)[0] != pytest.approx(0.5)
    assert select_pairs(pairs, None, random.Random(0)) == pairs and select_pairs(pairs, 3, random.Random(0)) == pairs
    drawn = [tuple(id(p) for p in select_pairs(pairs, 2, random.Random(s), alpha=50.0, beta=0.0)) for s in range(30)]
    # a huge alpha makes the bigger gain from MINUS win nearly every draw; the pool order is kept
    assert sum(id(pairs[1]) not in d for d in drawn) >= 28 and all(len(d) == 2 for d in drawn)


def test_exploration_adds_corrections_and_counts_improvements():
    pool = _pool((A, MINUS), (A, RIGHT), (B, BROKEN))

    class Corrector:
        def __init__(self):
            self.prompts = []

        def generate(self, prompts, sampling, n=1):
            self.prompts += prompts
            return [Generation(text=f"{ONLY_B}\n[DONE]") for _ in prompts]

    corrector = Corrector()
    cfg = SelfCorrectorConfig(model="x", corrections_per_problem=2, progress=False)
    counts = explore(corrector, pool, [A, B], cfg, 1, random.Random(0))
    # A: only MINUS is below A's best (RIGHT is left alone); B: BROKEN. Both corrections (ONLY_B) improve.
    assert corrector.prompts == [corrector_prompt(A, MINUS), corrector_prompt(B, BROKEN)]
    assert counts == {"corrected": 2, "improved": 2, "new_in_pool": 2}
    new = [(tid, h.code, h.source) for tid, items in pool.by_task.items() for h in items if h.source != "generator"]
    assert new == [(1, ONLY_B, "corrector round 1"), (2, ONLY_B, "corrector round 1")]
    # the improving corrections are value-improving pairs of the next fit
    pairs = {(p.task_id, p.worse.code, p.better.code) for p in value_improving_pairs(pool)}
    assert {(1, MINUS, ONLY_B), (2, BROKEN, ONLY_B)} <= pairs
    assert sorted(h.code for h in hypotheses_to_correct(pool, [1], 5, random.Random(0))) == sorted([MINUS, ONLY_B])


def test_score_codes_uses_the_sandbox():
    got = score_codes([(A, RIGHT), (A, "import os\nos._exit(0)")], SelfCorrectorConfig(model="x", reward="binary"), "ref")
    assert [(h.value, h.passed, h.total, h.source) for h in got] == [(1.0, 3, 3, "ref"), (0.0, 0, 3, "ref")]


# ---- the actor --------------------------------------------------------------------------------------
class Scripted:
    def __init__(self, code, path=""):
        self.code, self.path, self.calls, self.tokenizer = code, path, [], None

    def generate(self, prompts, sampling, n=1):
        self.calls.append(list(prompts))
        return [Generation(text=f"{self.code}\n[DONE]") for _ in repeat_each(prompts, n)]


def test_actor_uses_the_generator_for_turn_one_and_the_corrector_after():
    generator, corrector = Scripted(MINUS), Scripted(ONLY_B)
    actor = make_actor("self-corrector", generator, RolloutSettings(), {"corrector": corrector})
    (tr,) = run_episodes(actor, [A], turns=3, progress=False)
    assert len(generator.calls) == 1 and len(corrector.calls) == 2
    # the corrector sees the problem and the last answer only
    assert corrector.calls == [[paper_prompt(A, [MINUS])], [paper_prompt(A, [ONLY_B])]]
    assert [t.code for t in tr.turns] == [MINUS, ONLY_B, ONLY_B]
    assert tr.rewards == [pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(2 / 3)]


def test_actor_errors_name_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"no corrector checkpoint at .*corrector.*--actor-arg corrector=PATH"):
        SelfCorrectorActor(Scripted(MINUS, path=str(tmp_path)), RolloutSettings())
    with pytest.raises(UserError, match="paper prompt format"):
        SelfCorrectorActor(Scripted(MINUS), RolloutSettings(prompt_format="chat"), corrector=Scripted(RIGHT))
    with pytest.raises(UserError, match="rounds: must be 0 or more"):
        SelfCorrectorConfig(rounds=-1)


# ---- tiny models: cocos self-corrector, then cocos eval --actor self-corrector --------------------------
def _biased(path: Path, snippet: str) -> Path:
    """A tiny model whose greedy answer is `snippet`, repeated (no [DONE]: the whole text runs, the same function)."""
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    with torch.no_grad():
        model.lm_head.weight[tok.convert_tokens_to_ids(snippet), 0] = 3.0
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _add_data(tmp_path: Path) -> Path:
    data = tmp_path / "add.jsonl"
    data.write_text("".join(json.dumps({"task_id": 900 + i, "text": "Write a function to add two numbers.",
                                        "test_list": TESTS, "code": RIGHT}) + "\n" for i in range(3)))
    return data


def test_eval_loads_the_pair_from_the_run_folder(tmp_path, capsys):
    run = _biased(tmp_path / "run", SNIPPETS[1])  # generator: a - b (1 of 3 tests)
    _biased(run / "corrector", SNIPPETS[0])  # corrector: a + b (3 of 3)
    data = _add_data(tmp_path)
    common = ["--dataset", f"jsonl:{data}", "--turns", "2", "--max-new-tokens", "3", "--backend", "hf", "--dtype", "float32"]
    assert main(["eval", "--model", str(run), "--actor", "self-corrector", *common, "--out", str(tmp_path / "ev")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert [[round(t["reward"], 3) for t in r["turns"]] for r in rows] == [[0.333, 1.0]] * 3
    assert all(r["turns"][1]["prompt"].endswith("[CORRECT]\n") and "a - b" in r["turns"][1]["prompt"] for r in rows)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (metrics["acc@1"], metrics["acc@2"], metrics["delta_i2c(1,2)"]) == (0.0, 1.0, 1.0)
    # the generator alone corrects nothing; a corrector named explicitly is used instead of RUN/corrector
    assert main(["eval", "--model", str(run), *common, "--out", str(tmp_path / "alone")]) == 0
    assert json.loads((tmp_path / "alone" / "metrics.json").read_text())["acc@2"] == 0.0
    other = shutil.copytree(run, tmp_path / "gen_as_corrector", ignore=shutil.ignore_patterns("corrector"))
    assert main(["eval", "--model", str(run), "--actor", "self-corrector", "--actor-arg", f"corrector={other}", *common,
                 "--out", str(tmp_path / "named")]) == 0
    assert json.loads((tmp_path / "named" / "metrics.json").read_text())["acc@2"] == 0.0
    # a model folder without a corrector: one line saying what to do
    capsys.readouterr()
    assert main(["eval", "--model", str(other), "--actor", "self-corrector", *common, "--out", str(tmp_path / "x")]) == 2
    assert "no corrector checkpoint" in capsys.readouterr().err


def test_cocos_self_corrector_writes_both_models_and_its_data(tmp_path, capsys):
    tiny = save_tiny_model(tmp_path / "tiny")
    data = _add_data(tmp_path)
    out = tmp_path / "sc"
    args = ["self-corrector", "--config", "configs/self_corrector.yaml", "--out", str(out), "--set", f"model={tiny}",
            "--set", f"dataset=jsonl:{data}", "--set", "split=test", "--set", "samples=4", "--set", "max_new_tokens=6",
            "--set", "temperature=1.0", "--set", "max_steps=1", "--set", "batch_size=2", "--set", "grad_accum=1",
            "--set", "backend=hf", "--set", "progress=false", "--set", "corrections_per_problem=1",
            "--set", "warmup_ratio=0", "--set", "lr=1e-3"]  # (with warmup, a 1-step fit has learning rate 0)
    assert main(args) == 0
    assert (out / "model.safetensors").exists() and (out / "corrector" / "model.safetensors").exists()
    stats = json.loads((out / "stats.json").read_text())
    assert [s["round"] for s in stats] == [0, 1] and stats[1]["corrected"] == 3
    pool = [json.loads(x) for x in (out / "pool.jsonl").read_text().splitlines()]
    assert stats[1]["pool"] == len(pool) and {p["source"] for p in pool} <= {"generator", "corrector round 1"}
    for rnd in (0, 1):  # every example of a fit is a real improvement, worse -> better
        ex = [json.loads(x) for x in (out / f"pairs_round_{rnd}.jsonl").read_text().splitlines()]
        assert len(ex) == stats[rnd]["examples"] and all(e["values"][1] > e["values"][0] for e in ex)
    # the generator is the starting checkpoint, unchanged; the corrector was trained
    from safetensors.torch import load_file

    gen, start, corr = (load_file(str(p / "model.safetensors")) for p in (out, tiny, out / "corrector"))
    assert all(torch.equal(gen[k], start[k]) for k in start)
    assert stats[0]["examples"] > 0 and any(not torch.equal(corr[k], start[k]) for k in start)
    capsys.readouterr()
    assert main(args) == 2 and "already holds a trained model" in capsys.readouterr().err
