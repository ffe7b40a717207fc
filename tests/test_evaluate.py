"""The eval job: saved answers scored by hand-computed metrics, canonical solutions at 100%, CLI errors,
and an end-to-end `cocos eval` with a tiny local checkpoint."""

from __future__ import annotations

import json
import os

import pytest

from cocos.cli import main
from cocos.data.problems import load_problems
from cocos.eval.evaluate import EvalConfig, run_eval



@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def crafted(tmp_path):
    """Four problems and two turns of answers whose every metric is computed by hand (see test_metrics)."""
    data = _write_jsonl(tmp_path / "data.jsonl", [
        {"task_id": 1, "text": "Add one.", "test_list": ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"]},
        {"task_id": 2, "text": "Double.", "test_list": ["assert g(1) == 2", "assert g(2) == 4", "assert g(0) == 0"]},
        {"task_id": 3, "text": "Identity.", "test_list": ["assert h(1) == 1", "assert h(2) == 2", "assert h(3) == 3"]},
        {"task_id": 4, "text": "Five.", "test_list": ["assert k() == 5"]},
    ])  # fmt: skip
    samples = _write_jsonl(tmp_path / "samples.jsonl", [
        {"task_id": 1, "turns": ["def f(x):\n    return x+1\n[DONE]", "def f(x):\n    return 2\n[DONE]"]},
        {"task_id": 2, "turns": ["def g(x):\n    return 2\n[DONE]", "```python\ndef g(x):\n    return x*2\n```\n[DONE]"]},
        {"task_id": 3, "turns": ["def h(x):\n    return 1\n[DONE]", "def h(x):\n    return 2\n[DONE] h(1)"]},
        {"task_id": 4, "turns": ["def k(:\n    return 5", "def k(:\n    return 5"]},
    ])  # fmt: skip
    return data, samples


def test_crafted_samples_give_hand_computed_metrics(crafted, tmp_path, capsys):
    data, samples = crafted
    out = tmp_path / "run"
    assert main(["eval", "--samples", str(samples), "--dataset", f"jsonl:{data}", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    expected = {
        "acc@1": 0.25, "acc@2": 0.25, "delta(1,2)": 0.0, "delta_i2c(1,2)": 0.25, "delta_c2i(1,2)": 0.25,
        "unit_improve(1,2)": 0.25, "unit_worsen(1,2)": 0.25, "unit_preserve(1,2)": 2 / 5,
        "edit_sim(1,2)": (42 / 46 + 44 / 46 + 42 / 44 + 1) / 4, "tests_passed@1": 5 / 12, "tests_passed@2": 5 / 12,
        "n_problems": 4, "env_errors": 0,
    }  # fmt: skip
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["turns"][1]["code"] == "def g(x):\n    return x*2"
    assert [o["status"] for o in rows[0]["turns"][1]["outcomes"]] == ["passed", "failed", "failed"]
    assert rows[3]["turns"][0]["outcomes"][0]["error_type"] == "SyntaxError"
    assert (rows[2]["turns"][0]["passed"], rows[2]["turns"][0]["total"]) == (1, 3)
    config = json.loads((out / "config.json").read_text())
    assert config["samples"] == str(samples) and config["n_problems"] == 4 and "model" not in config
    printed = capsys.readouterr().out
    assert "delta_i2c(1,2)" in printed and "25.0%" in printed
    # the job's own samples.jsonl scores again to the same metrics
    again = run_eval(EvalConfig(out=str(tmp_path / "again"), samples=str(out / "samples.jsonl"), dataset=f"jsonl:{data}"),
                     progress=False)  # fmt: skip
    assert {k: again[k] for k in expected} == pytest.approx({k: m[k] for k in expected})


def _canonical(tmp_path, dataset):
    problems = load_problems(dataset)
    path = _write_jsonl(tmp_path / f"{dataset}.jsonl", [{"task_id": p.task_id, "turns": [p.reference]} for p in problems])
    # a generous timeout: MBPP 123's canonical code takes seconds on a loaded 2-core machine
    cfg = EvalConfig(out=str(tmp_path / dataset), samples=str(path), dataset=dataset, timeout=20.0)
    return problems, run_eval(cfg, progress=False)


@pytest.mark.parametrize("dataset,n", [pytest.param("mbpp", 500, marks=pytest.mark.needs_data("mbpp")), ("humaneval", 164)])
def test_canonical_solutions_score_100_percent(tmp_path, dataset, n):
    problems, m = _canonical(tmp_path, dataset)
    assert len(problems) == n and m["n_problems"] == n and m["env_errors"] == 0
    assert m["acc@1"] == 1.0 and m["tests_passed@1"] == 1.0


def test_cli_errors_are_one_line(crafted, tmp_path, capsys):
    data, samples = crafted
    cases = [
        (["--samples", str(samples), "--dataset", "mbbp"], "unknown dataset 'mbbp'"),
        (["--samples", str(tmp_path / "none.jsonl"), "--dataset", f"jsonl:{data}"], "no such file"),
        (["--samples", str(samples), "--dataset", "humaneval"], "task_id 1 is not in humaneval"),
        (["--samples", str(samples), "--dataset", "mbpp", "--split", "dev"], "unknown split 'dev'"),
        (["--model", "x", "--samples-per-problem", "4"], "above 1 needs temperature above 0"),
    ]
    for args, message in cases:
        assert main(["eval", *args, "--out", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    _write_jsonl(tmp_path / "ragged.jsonl", [{"task_id": 1, "turns": ["a"]}, {"task_id": 2, "turns": ["a", "b"]}])
    assert main(["eval", "--samples", str(tmp_path / "ragged.jsonl"), "--dataset", f"jsonl:{data}", "--out", str(tmp_path / "e")]) == 2
    assert "same number of turns" in capsys.readouterr().err


def test_limit_keeps_the_first_problems_of_the_samples(crafted, tmp_path):
    data, samples = crafted
    m = run_eval(EvalConfig(out=str(tmp_path / "l"), samples=str(samples), dataset=f"jsonl:{data}", limit=2), progress=False)
    assert m["n_problems"] == 2 and m["acc@1"] == 0.5 and m["delta_i2c(1,2)"] == 0.5


@pytest.mark.needs_data("mbpp")
def test_eval_with_a_tiny_local_model(tmp_path, capsys):
    """`cocos eval --model <checkpoint folder>` end to end: generation, execution, files (tiny random model)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    problems = load_problems("mbpp", limit=3)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator([p.text + p.reference for p in problems] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=0))  # fmt: skip
    ckpt = tmp_path / "tiny"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    out = tmp_path / "run"
    args = ["eval", "--model", str(ckpt), "--dataset", "mbpp", "--limit", "3", "--turns", "2", "--fewshot",
            "--max-new-tokens", "4", "--batch-size", "2", "--backend", "hf", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_problems"] == 3 and 0.0 <= m["acc@1"] <= 1.0 and "edit_sim(1,2)" in m and m["wall_time_s"] > 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [11, 12, 13] and all(len(r["turns"]) == 2 for r in rows)
    assert rows[0]["turns"][0]["prompt"].startswith("You are an expert Python programmer") and "[CORRECT]\n" in rows[0]["turns"][1]["prompt"]
    assert all(len(t["outcomes"]) == 3 for r in rows for t in r["turns"])
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == str(ckpt) and config["fewshot"] is True and config["data_source"].startswith("local:")
    assert "acc@1" in capsys.readouterr().out


def test_odex_evaluation_preloads_numpy_and_pandas_unless_the_user_chose(monkeypatch):
    from cocos.eval.evaluate import preload_for

    monkeypatch.delenv("COCOS_SANDBOX_PRELOAD", raising=False)
    preload_for("mbpp")
    assert "COCOS_SANDBOX_PRELOAD" not in os.environ
    preload_for("odex")
    assert os.environ["COCOS_SANDBOX_PRELOAD"] == "numpy,pandas"  # both are installed with the project
    monkeypatch.setenv("COCOS_SANDBOX_PRELOAD", "numpy")
    preload_for("odex")
    assert os.environ["COCOS_SANDBOX_PRELOAD"] == "numpy"
