"""ReVISE: the verify / correct pairs from answers with known rewards (real sandbox), the actor (refines only after the
token; an unrefined turn keeps its answer and the metrics see no change), a DPO step on a tiny model that really
moves the verdict, and `cocos revise` -> `cocos eval --actor revise` on a tiny model."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import TESTS, save_tiny_model, tiny_model, tiny_tokenizer  # noqa: E402

from cocos.baselines.revise.actor import (REFINE, REFINE_SUFFIX, Attempt, ReviseActor, add_refine_token,  # noqa: E402
                                          attempts_from_trajectories, correct_pairs, refined, verify_context,
                                          verify_pairs)
from cocos.cli import main  # noqa: E402
from cocos.data.problems import Problem  # noqa: E402
from cocos.data.prompts import first_turn_prompt  # noqa: E402
from cocos.episodes.actors import make_actor  # noqa: E402
from cocos.episodes.records import RolloutSettings  # noqa: E402
from cocos.episodes.rollout import run_episodes, score_responses  # noqa: E402
from cocos.errors import UserError  # noqa: E402
from cocos.eval.metrics import compute_metrics  # noqa: E402
from cocos.generation.policy import Policy  # noqa: E402
from cocos.generation.sampling import Generation, repeat_each  # noqa: E402

RIGHT = "def add(a, b):\n    return a + b"
MINUS = "def add(a, b):\n    return a - b"  # passes 1 of 3
ONLY_B = "def add(a, b):\n    return b"  # passes 2 of 3
A = Problem(task_id=1, text="Add two numbers.", tests=list(TESTS), reference=RIGHT)
B = Problem(task_id=2, text="Add two numbers again.", tests=list(TESTS), reference="")  # no reference solution


# ---- data builders ----------------------------------------------------------------------------------
def test_pairs_from_answers_scored_in_the_sandbox():
    texts = [(A, [f"{RIGHT}\n[DONE]"]), (A, [f"{MINUS}\n[DONE]"]), (A, [f"{MINUS}\n[DONE]"]), (A, [f"{ONLY_B}\n[DONE]"]),
             (B, [f"{MINUS}\n[DONE]"]), (B, [f"{ONLY_B}\n[DONE]"])]
    attempts = attempts_from_trajectories(score_responses(texts), [A, B])
    # the repeated MINUS answer of A is kept once; verdicts come from running the tests
    assert [(a.problem.task_id, a.code, a.correct) for a in attempts] == [
        (1, RIGHT, True), (1, MINUS, False), (1, ONLY_B, False), (2, MINUS, False), (2, ONLY_B, False)]
    assert [round(a.reward, 3) for a in attempts] == [1.0, 0.333, 0.667, 0.333, 0.667]

    def ctx(p, code):
        return first_turn_prompt(p) + f"{code}\n[DONE]"

    assert verify_pairs(attempts) == [
        {"prompt": ctx(A, RIGHT), "chosen": "", "rejected": REFINE, "kind": "verify_right", "task_id": "1"},
        {"prompt": ctx(A, MINUS), "chosen": REFINE, "rejected": "", "kind": "verify_wrong", "task_id": "1"},
        {"prompt": ctx(A, ONLY_B), "chosen": REFINE, "rejected": "", "kind": "verify_wrong", "task_id": "1"},
        {"prompt": ctx(B, MINUS), "chosen": REFINE, "rejected": "", "kind": "verify_wrong", "task_id": "2"},
        {"prompt": ctx(B, ONLY_B), "chosen": REFINE, "rejected": "", "kind": "verify_wrong", "task_id": "2"},
    ]
    pairs, stats = correct_pairs(attempts)
    # A: each wrong answer -> the right sample, against another wrong sample; the right answer is kept, against
    # refining it into A's first wrong answer. B has no right sample and no reference: nothing to refine towards.
    assert [(p["prompt"], p["chosen"], p["rejected"], p["kind"]) for p in pairs] == [
        (ctx(A, MINUS), f"{REFINE}\n{RIGHT}\n[DONE]", f"{REFINE}\n{ONLY_B}\n[DONE]", "refine_to_right"),
        (ctx(A, ONLY_B), f"{REFINE}\n{RIGHT}\n[DONE]", f"{REFINE}\n{MINUS}\n[DONE]", "refine_to_right"),
        (ctx(A, RIGHT), "", f"{REFINE}\n{MINUS}\n[DONE]", "keep_right"),
    ]
    assert stats == {"refine_to_right": 2, "keep_right": 1, "no_target": 2, "target_reference": 0}


def test_reference_fallback_and_a_lone_wrong_answer():
    lone = [Attempt(A, MINUS, False, 1 / 3)]
    pairs, stats = correct_pairs(lone, reference_fallback=True)
    # no right sample: the reference is the target; no other wrong sample: the same wrong answer is the rejected one
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(refined(RIGHT), refined(MINUS))]
    assert stats["target_reference"] == 1
    assert correct_pairs(lone, reference_fallback=False) == ([], {"refine_to_right": 0, "keep_right": 0, "no_target": 1,
                                                                  "target_reference": 0})
    # a problem whose answers are all right gives no correction pair (nothing wrong to refine or to reject)
    assert correct_pairs([Attempt(A, RIGHT, True, 1.0)])[0] == []


def test_verify_context_chains_the_answers():
    assert verify_context(A, [MINUS, RIGHT]) == first_turn_prompt(A) + f"{MINUS}\n[DONE]{REFINE}\n{RIGHT}\n[DONE]"
    with pytest.raises(ValueError):
        verify_context(A, [])


# ---- the actor --------------------------------------------------------------------------------------
class Scripted:
    """Turn 1: MINUS. A one-token verdict call: REFINE on the first verdict of each episode, else EOS. A refinement:
    RIGHT. Records every call."""

    def __init__(self, token_id=7):
        self.calls = []
        self.token_id = token_id
        self.tokenizer = type("Tok", (), {"get_vocab": lambda _self: {REFINE: token_id}})()

    def generate(self, prompts, sampling, n=1):
        kw = dataclasses.asdict(sampling)
        self.calls.append((list(prompts), kw))
        out = []
        for p in repeat_each(prompts, n):
            if kw["max_new_tokens"] == 1:  # the verdict
                first = p.count("[DONE]") == 1
                out.append(Generation(text=REFINE if first else "", completion_ids=[self.token_id if first else 0]))
            elif p.endswith(REFINE_SUFFIX):
                out.append(Generation(text=f"{RIGHT}\n[DONE]", completion_ids=[1]))
            else:
                out.append(Generation(text=f"{MINUS}\n[DONE]", completion_ids=[2]))
        return out


def test_actor_refines_after_the_token_and_then_stops():
    policy = Scripted()
    actor = make_actor("revise", policy, RolloutSettings())
    (tr,) = run_episodes(actor, [A], turns=4, max_new_tokens=64, progress=False)
    t1, t2, t3, t4 = tr.turns
    assert t2.prompt == verify_context(A, [MINUS]) + REFINE_SUFFIX and t2.code == RIGHT
    # the second verdict is EOS: turn 3 keeps turn 2's answer and its prompt is the verified context (no token)
    assert t3.prompt == verify_context(A, [MINUS, RIGHT]) and t3.text == t2.text
    assert t4.text == t2.text and t4.prompt == t3.prompt  # the sequence ended: no further verdict was asked for
    assert tr.rewards == [pytest.approx(1 / 3), 1.0, 1.0, 1.0]
    verdict_calls = [c for c in policy.calls if c[1]["max_new_tokens"] == 1]
    assert len(verdict_calls) == 2 and verdict_calls[0][1]["stop"] == ()
    m = compute_metrics([tr], [A])
    assert (m["delta_i2c(1,2)"], m["delta(2,3)"], m["delta_c2i(2,3)"], m["edit_sim(3,4)"]) == (1.0, 0.0, 0.0, 1.0)


def test_actor_needs_the_token_unless_told_and_the_paper_format():
    no_token = Scripted()
    no_token.tokenizer = None
    with pytest.raises(UserError, match=r"no \[REFINE\] token.*require_token=false"):
        ReviseActor(no_token, RolloutSettings())
    with pytest.raises(UserError, match="paper prompt format"):
        ReviseActor(Scripted(), RolloutSettings(prompt_format="chat"))


def _tiny_with_token():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    torch.manual_seed(0)
    token_id = add_refine_token(model, tok)
    return model, tok, token_id


def test_untrained_token_is_never_emitted_so_every_episode_stops_at_its_first_answer():
    model, tok, token_id = _tiny_with_token()
    assert token_id == len(tok) - 1 and model.get_input_embeddings().weight.shape[0] == len(tok)
    # the verdict starts even: REFINE's output row is EOS's (here a snippet token outranks both)
    assert torch.equal(model.lm_head.weight[token_id], model.lm_head.weight[tok.eos_token_id])
    assert not torch.equal(model.get_input_embeddings().weight[token_id], model.get_input_embeddings().weight[tok.eos_token_id])
    assert add_refine_token(model, tok) == token_id  # adding again changes nothing
    problems = [Problem(task_id=900 + i, text="Write a function to add two numbers.", tests=list(TESTS)) for i in range(2)]
    trajs = run_episodes(ReviseActor(Policy(model, tok, backend="hf"), RolloutSettings()), problems, turns=3,
                         max_new_tokens=6, temperature=1.0, seed=3, samples_per_problem=2, progress=False)
    for tr in trajs:
        t1, t2, t3 = tr.turns
        assert t2.text == t3.text == t1.text and t2.code == t1.code
        assert t2.prompt == verify_context(problems[0], [t1.code]) and not t2.prompt.endswith(REFINE_SUFFIX)
        assert tr.rewards == [t1.reward] * 3
    m = compute_metrics(trajs, problems)
    assert m["acc@3"] == m["acc@1"] and m["delta_i2c(1,3)"] == m["delta_c2i(1,3)"] == 0 and m["edit_sim(1,2)"] == 1.0
    # the same model without the token: refused, or run with require_token=false (it then stops the same way)
    plain = tiny_tokenizer()
    with pytest.raises(UserError, match="require_token"):
        make_actor("revise", Policy(tiny_model(plain), plain, backend="hf"), RolloutSettings())
    actor = make_actor("revise", Policy(tiny_model(plain), plain, backend="hf"), RolloutSettings(), {"require_token": False})
    (tr,) = run_episodes(actor, problems[:1], turns=2, max_new_tokens=6, progress=False)
    assert tr.turns[1].text == tr.turns[0].text


def test_a_dpo_stage_on_verify_pairs_makes_the_model_refine(tmp_path):
    from cocos.baselines.revise.train import ReviseConfig, make_dpo_trainer

    model, tok, token_id = _tiny_with_token()
    prompt = verify_context(A, [MINUS])
    ids = torch.tensor([tok(prompt)["input_ids"]])

    def verdict_margin():
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, -1], -1)
        return (lp[token_id] - lp[tok.eos_token_id]).item(), int(lp.argmax()) == token_id

    before, refines = verdict_margin()
    assert not refines
    cfg = ReviseConfig(model="tiny", lr=3e-2, max_steps=8, batch_size=2, grad_accum=1, warmup_ratio=0.0,
                       lr_scheduler="constant", logging_steps=1, progress=False)
    pairs = verify_pairs([Attempt(A, MINUS, False)]) * 4
    model.train()
    make_dpo_trainer(model, tok, pairs, cfg, tmp_path, "stage1").train()
    model.eval()
    after, refines = verdict_margin()
    assert after > before + 1 and refines
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[0]["stage"] == "stage1" and log[-1]["step"] == 8
    # the actor now refines: turn 2's prompt ends with the token
    (tr,) = run_episodes(ReviseActor(Policy(model, tok, backend="hf"), RolloutSettings()), [A], turns=2,
                         max_new_tokens=4, progress=False)
    assert tr.turns[1].prompt.endswith(REFINE_SUFFIX)


# ---- cocos revise, then cocos eval --actor revise -----------------------------------------------------
def test_cocos_revise_saves_the_token_and_evaluates(tmp_path, capsys):
    tiny = save_tiny_model(tmp_path / "tiny")
    data = tmp_path / "add.jsonl"
    data.write_text("".join(json.dumps({"task_id": 900 + i, "text": "Write a function to add two numbers.",
                                        "test_list": TESTS, "code": RIGHT}) + "\n" for i in range(3)))
    out = tmp_path / "rv"
    common = ["--set", f"model={tiny}", "--set", f"dataset=jsonl:{data}", "--set", "split=test", "--set", "samples=2",
              "--set", "max_new_tokens=6", "--set", "temperature=1.0", "--set", "max_steps=1", "--set", "batch_size=2",
              "--set", "grad_accum=1", "--set", "backend=hf", "--set", "progress=false"]
    assert main(["revise", "--config", "configs/revise.yaml", "--out", str(out), *common]) == 0
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert REFINE in tok.get_vocab() and AutoConfig.from_pretrained(out).vocab_size == len(tok)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stage1"]["answers"] == stats["stage1"]["pairs"] > 0 and stats["stage2"]["pairs"] > 0
    stage2 = [json.loads(x) for x in (out / "stage2_pairs.jsonl").read_text().splitlines()]
    assert {p["kind"] for p in stage2} >= {"refine_to_right"}  # the reference is the target (a tiny model is never right)
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in logs} == {"stage1", "stage2"}
    # an existing model is not overwritten
    capsys.readouterr()
    assert main(["revise", "--config", "configs/revise.yaml", "--out", str(out), *common]) == 2
    assert "already holds a trained model" in capsys.readouterr().err
    # bad settings: one line naming the field
    assert main(["revise", "--out", str(tmp_path / "x"), "--set", "beta=0"]) == 2
    assert "beta: must be above 0" in capsys.readouterr().err
    assert main(["revise", "--out", str(tmp_path / "x"), "--set", "betta=1"]) == 2
    assert "unknown ReviseConfig setting 'betta'" in capsys.readouterr().err

    ev = tmp_path / "ev"
    assert main(["eval", "--model", str(out), "--actor", "revise", "--dataset", f"jsonl:{data}", "--turns", "2",
                 "--max-new-tokens", "6", "--backend", "hf", "--dtype", "float32", "--out", str(ev)]) == 0
    rows = [json.loads(x) for x in (ev / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["turns"][1]["prompt"].startswith(first_turn_prompt(A)[:40]) for r in rows)
    assert json.loads((ev / "config.json").read_text())["actor"] == "revise"
