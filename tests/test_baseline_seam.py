"""The turn-actor seam: a new baseline is one file, one registry entry, and it runs through `cocos eval`.

The toy baseline below repeats its turn-1 answer at every later turn. The test writes it as a file of its own,
registers it, and evaluates a tiny model with it: turn 2 must be turn 1's text, so nothing changes between turns.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import save_tiny_model  # noqa: E402

from cocos.cli import main  # noqa: E402
from cocos.episodes.actors import ACTORS  # noqa: E402

REPEAT_BASELINE = '''
"""Toy baseline: the policy writes turn 1; every later turn repeats the turn-1 answer."""
from cocos.episodes.actors import PolicyActor
from cocos.episodes.records import Draft
from cocos.generation.sampling import Generation


class RepeatActor:
    def __init__(self, policy, settings, times=1):
        self.first = PolicyActor(policy, settings)

    def write(self, problems, histories, sampling):
        if not histories[0]:
            return self.first.write(problems, histories, sampling)
        return [Draft(h[0].prompt, Generation(text=h[0].text)) for h in histories]
'''

pytestmark = pytest.mark.needs_data("mbpp")


def test_a_baseline_in_one_file_runs_through_cocos_eval(tmp_path, monkeypatch, capsys):
    (tmp_path / "repeat_baseline.py").write_text(REPEAT_BASELINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(ACTORS, "repeat", "repeat_baseline:RepeatActor")
    model = save_tiny_model(tmp_path / "tiny")
    common = ["eval", "--model", str(model), "--dataset", "mbpp", "--limit", "3", "--turns", "3", "--max-new-tokens", "12",
              "--dtype", "float32", "--backend", "hf"]
    assert main([*common, "--actor", "repeat", "--actor-arg", "times=2", "--out", str(tmp_path / "a")]) == 0
    samples = [json.loads(x) for x in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    for rec in samples:
        texts = [t["text"] for t in rec["turns"]]
        assert texts[0] and texts == [texts[0]] * 3  # the policy's answer, then the same answer twice
        assert [t["passed"] for t in rec["turns"]] == [rec["turns"][0]["passed"]] * 3  # each turn ran its tests
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["delta(1,2)"] == 0 and metrics["edit_sim(1,3)"] == 1.0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["actor"] == "repeat" and config["actor_args"] == {"times": 2}
    # the same file without a registry entry: a module:factory path
    assert main([*common, "--actor", "repeat_baseline:RepeatActor", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "samples.jsonl").read_text() == (tmp_path / "a" / "samples.jsonl").read_text()
    # a wrong name or option is one line naming the field
    capsys.readouterr()
    assert main([*common, "--actor", "repeat", "--actor-arg", "nope=1", "--out", str(tmp_path / "c")]) == 2
    assert "actor_args" in capsys.readouterr().err
    assert main([*common, "--actor", "refine", "--out", str(tmp_path / "d")]) == 2
    assert "actor: 'refine' is not one of policy, self-refine" in capsys.readouterr().err
