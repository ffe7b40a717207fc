"""Self-Refine actor: turn 1 is the policy's own answer; turn t > 1 = a feedback generation, then a revision."""

import dataclasses

from cocos.baselines.self_refine import END, FEEDBACK_INSTRUCTION, SelfRefineActor
from cocos.data.problems import Problem
from cocos.data.prompts import CORRECT, DONE, INSTRUCTION, extract_code, paper_prompt
from cocos.episodes.actors import make_actor
from cocos.episodes.records import RolloutSettings, Turn
from cocos.episodes.rollout import run_episodes
from cocos.generation.sampling import Generation, Sampling, repeat_each


class Scripted:
    """A policy that answers by prompt shape and records every generate call."""

    tokenizer = None

    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling, n=1):
        self.calls.append((list(prompts), dataclasses.asdict(sampling)))
        out = []
        for p in repeat_each(prompts, n):
            if p.endswith("[FEEDBACK]\n"):
                out.append(Generation(text="The loop stops one early [CORRECT] so the sum is short.\n[END]", completion_ids=[1]))
            elif p.endswith(f"{CORRECT}\n"):
                out.append(Generation(text="def f(n):\n    return sum(range(n + 1))\n[DONE]", completion_ids=[2, 3]))
            else:
                out.append(Generation(text="def f(n):\n    return sum(range(n))\n[DONE]", completion_ids=[4]))
        return out


PROBLEM = Problem(task_id=1, text="Sum 0..n.", tests=["assert f(3) == 6"])
SAMPLING = Sampling(max_new_tokens=100, temperature=0.0, top_p=1.0, seed=None, stop=(DONE,))


def test_turn_one_passes_through_and_turn_two_refines():
    inner = Scripted()
    sr = SelfRefineActor(inner, RolloutSettings(), feedback_tokens=64)
    (t1,) = sr.write([PROBLEM], [[]], SAMPLING)
    assert len(inner.calls) == 1 and t1.prompt == paper_prompt(PROBLEM)
    code1 = extract_code(t1.generation.text)
    assert code1 == "def f(n):\n    return sum(range(n))"

    inner.calls.clear()
    (d,) = sr.write([PROBLEM], [[Turn(prompt=t1.prompt, text=t1.generation.text, code=code1)]], SAMPLING)
    (fb_prompts, fb_kw), (rev_prompts, rev_kw) = inner.calls
    # feedback: the correction instruction is replaced by the feedback request, shorter budget, own stops
    assert INSTRUCTION not in fb_prompts[0] and fb_prompts[0].endswith(FEEDBACK_INSTRUCTION)
    assert fb_prompts[0].startswith(paper_prompt(PROBLEM) + "def f(n):\n    return sum(range(n))\n[DONE]")
    assert fb_kw["max_new_tokens"] == 64 and END in fb_kw["stop"]
    # revision: sees the feedback (markers removed), ends with [CORRECT]
    assert "The loop stops one early  so the sum is short." in rev_prompts[0]
    assert rev_prompts[0].endswith(f"{CORRECT}\n") and rev_kw["stop"] == (DONE,)
    # the turn records the paper's correction prompt; its text keeps the feedback; the executed code is the revision
    assert d.prompt == paper_prompt(PROBLEM, [code1])
    assert d.generation.text.startswith("The loop stops one early")
    assert extract_code(d.generation.text) == "def f(n):\n    return sum(range(n + 1))"
    assert d.generation.completion_ids == [2, 3]


def test_mixed_batch_keeps_order():
    """Through run_episodes and the sandbox: turn 1 fails its test, the refined turn 2 passes it."""
    inner = Scripted()
    other = Problem(task_id=2, text="Zero.", tests=["assert f(0) == 0"])
    actor = make_actor("self-refine", inner, RolloutSettings())
    trajs = run_episodes(actor, [PROBLEM, other], turns=2, progress=False)
    assert [t.task_id for t in trajs] == [1, 2]
    assert trajs[0].rewards == [0.0, 1.0] and trajs[1].rewards == [1.0, 1.0]
    assert [len(prompts) for prompts, _ in inner.calls] == [2, 2, 2]  # turn 1, feedback, revision: batched
