"""How to add a baseline, in one file: a turn actor, one registry entry, and episodes with real sandbox rewards.

A baseline that changes who writes a turn (or how) is an object with
`write(problems, histories, sampling) -> list[Draft]`, built by a factory `factory(policy, settings, **options)`;
cocos.episodes.actors.ACTORS names it ("name": "module:factory"), or `--actor module:factory` names it directly.
Everything after the drafts (code extraction, the sandbox, rewards, metrics, the run folder) is the same for every
actor. The toy below needs no model: turn 1 writes the problem's reference with a slip (`+` -> `-`), every later
turn rewrites the previous turn's code with the slip undone. (tests/test_baseline_seam.py runs an actor that wraps a
real model through `cocos eval`.)
"""

import json

import pytest

from cocos.data.problems import Problem
from cocos.data.prompts import PromptBuilder
from cocos.episodes.actors import ACTORS, make_actor
from cocos.episodes.records import Draft, RolloutSettings
from cocos.episodes.rollout import run_episodes
from cocos.eval.evaluate import evaluate_policy
from cocos.generation.sampling import Generation


class SlipThenFix:
    """Toy baseline: turn 1 = the reference with `+` slipped to `-`; turn t > 1 = turn t-1's code, slip undone
    (`fix=False`: copied unchanged)."""

    def __init__(self, policy, settings: RolloutSettings, fix: bool = True):  # policy: unused, no model here
        self.prompts = PromptBuilder(settings.prompt_format, fewshot=settings.fewshot)  # the prompt each turn records
        self.fix = fix

    def write(self, problems, histories, sampling):
        drafts = []
        for problem, history in zip(problems, histories):
            if not history:  # turn 1
                code = problem.reference.replace(" + ", " - ")
            else:
                code = history[-1].code.replace(" - ", " + ") if self.fix else history[-1].code
            # the text a model would have written: the code, then the end marker code extraction cuts at
            drafts.append(Draft(self.prompts(problem, [h.code for h in history]), Generation(text=f"{code}\n[DONE]")))
        return drafts


PROBLEMS = [
    Problem(task_id="add", text="Write a function to add two numbers.", reference="def add(a, b):\n    return a + b",
            tests=["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"]),
    Problem(task_id="join", text="Write a function to join two strings.", reference="def join(s, t):\n    return s + t",
            tests=["assert join('a', 'b') == 'ab'", "assert join('', '') == ''", "assert join('x', 'y') == 'xy'"]),
]


@pytest.fixture
def registered(monkeypatch):
    """The registry entry a new baseline adds (cocos.episodes.actors.ACTORS), here for this test only."""
    monkeypatch.setitem(ACTORS, "slip-then-fix", f"{__name__}:SlipThenFix")


def test_a_toy_baseline_plays_episodes_scored_in_the_sandbox(registered, tmp_path):
    settings = RolloutSettings(turns=3)
    actor = make_actor("slip-then-fix", None, settings)  # policy None: this actor writes without a model
    trajs = run_episodes(actor, PROBLEMS, settings, progress=False)
    add, join = trajs
    slipped, fixed = "def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b"
    assert [t.code for t in add.turns] == [slipped, fixed, fixed]
    # real sandbox outcomes: a - b passes add(0, 0) only; s - t raises TypeError on every string test
    assert add.rewards == pytest.approx([1 / 3, 1.0, 1.0]) and join.rewards == [0.0, 1.0, 1.0]
    assert [(o.status, o.error_type) for o in join.turns[0].outcomes] == [("error", "TypeError")] * 3
    assert [o.status for o in add.turns[0].outcomes] == ["failed", "passed", "failed"] and add.turns[1].all_passed
    assert add.turns[1].prompt.endswith("[CORRECT]\n") and "return a - b\n[DONE]" in add.turns[1].prompt

    # the same actor by module:factory path, with an option, through the evaluation job: metrics and samples
    copy = make_actor(f"{__name__}:SlipThenFix", None, settings, {"fix": False})
    metrics, _ = evaluate_policy(copy, PROBLEMS, settings, out=tmp_path / "copy", progress=False)
    assert metrics["acc@1"] == metrics["acc@3"] == 0.0 and metrics["edit_sim(1,3)"] == 1.0
    metrics, _ = evaluate_policy(actor, PROBLEMS, settings, out=tmp_path / "fix", progress=False)
    assert [metrics[k] for k in ("acc@1", "acc@2", "delta_i2c(1,2)", "delta_c2i(2,3)")] == [0.0, 1.0, 1.0, 0.0]
    assert json.loads((tmp_path / "fix" / "metrics.json").read_text())["acc@2"] == 1.0
    assert len((tmp_path / "fix" / "samples.jsonl").read_text().splitlines()) == len(PROBLEMS)
