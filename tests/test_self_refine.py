"""Self-Refine wrapper: turn 1 untouched; turn t > 1 = feedback generation, then a revision that sees it."""

from cocos.policy import Generation
from cocos.problems import Problem
from cocos.prompts import CORRECT, DONE, INSTRUCTION, extract_code, paper_prompt
from cocos.selfrefine import END, FEEDBACK_INSTRUCTION, SelfRefinePolicy


class Scripted:
    """A policy that answers by prompt shape and records every generate call."""

    tokenizer = None

    def __init__(self):
        self.calls = []

    def generate(self, prompts, **kw):
        self.calls.append((list(prompts), kw))
        out = []
        for p in prompts:
            if p.endswith("[FEEDBACK]\n"):
                out.append(Generation(text="The loop stops one early [CORRECT] so the sum is short.\n[END]", completion_ids=[1]))
            elif p.endswith(f"{CORRECT}\n"):
                out.append(Generation(text="def f(n):\n    return sum(range(n + 1))\n[DONE]", completion_ids=[2, 3]))
            else:
                out.append(Generation(text="def f(n):\n    return sum(range(n))\n[DONE]", completion_ids=[4]))
        return out


PROBLEM = Problem(task_id=1, text="Sum 0..n.", tests=["assert f(3) == 6"])


def test_turn_one_passes_through_and_turn_two_refines():
    inner = Scripted()
    sr = SelfRefinePolicy(inner, feedback_tokens=64)
    t1 = sr.generate([paper_prompt(PROBLEM)], max_new_tokens=100, stop=(DONE,))
    assert len(inner.calls) == 1 and extract_code(t1[0].text) == "def f(n):\n    return sum(range(n))"

    turn2_prompt = paper_prompt(PROBLEM, [extract_code(t1[0].text)])
    inner.calls.clear()
    (g,) = sr.generate([turn2_prompt], max_new_tokens=100, stop=(DONE,))
    (fb_prompts, fb_kw), (rev_prompts, rev_kw) = inner.calls
    # feedback: the correction instruction is replaced by the feedback request, shorter budget, own stops
    assert INSTRUCTION not in fb_prompts[0] and fb_prompts[0].endswith(FEEDBACK_INSTRUCTION)
    assert fb_prompts[0].startswith(paper_prompt(PROBLEM) + "def f(n):\n    return sum(range(n))\n[DONE]")
    assert fb_kw["max_new_tokens"] == 64 and END in fb_kw["stop"]
    # revision: sees the feedback (markers removed), ends with [CORRECT]
    assert "The loop stops one early  so the sum is short." in rev_prompts[0]
    assert rev_prompts[0].endswith(f"{CORRECT}\n") and rev_kw["stop"] == (DONE,)
    # the turn's text keeps the feedback; the executed code is the revision
    assert g.text.startswith("The loop stops one early")
    assert extract_code(g.text) == "def f(n):\n    return sum(range(n + 1))"
    assert g.completion_ids == [2, 3]


def test_mixed_batch_keeps_order():
    sr = SelfRefinePolicy(Scripted())
    prompts = [paper_prompt(PROBLEM, ["def f(n):\n    return 0"]), paper_prompt(PROBLEM)]
    g = sr.generate(prompts, max_new_tokens=50)
    assert extract_code(g[0].text).endswith("n + 1))") and extract_code(g[1].text).endswith("range(n))")
