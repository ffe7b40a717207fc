"""SFT: KodCode rows -> examples (1:1, paper format), wrong first turns that really fail, the
completion-only loss mask, and a 2-step run on a tiny Llama that leaves a loadable checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from cocos.data.prompts import CORRECT, DONE, INSTRUCTION, paper_prompt
from cocos.errors import UserError
from cocos.finetune.config import SFTRunConfig, load_sft_config
from cocos.finetune.mutants import MUTATION_KINDS, mutate
from cocos.finetune.sft import make_trainer, run_sft
from cocos.finetune.sft_data import build_examples, find_wrong, kodcode_problem, kodcode_tests, verified_problems
from cocos.sandbox import run_batch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

ROWS = [
    {
        "question_id": "add",
        "question": "Write a function add_numbers(a, b) that returns the sum of a and b.",
        "solution": "def add_numbers(a, b):\n    return a + b",
        "test_code": "from solution import add_numbers\n\ndef test_add():\n    assert add_numbers(1, 2) == 3\n"
                     "    assert add_numbers(-1, 1) == 0\n\ndef test_zero():\n    assert add_numbers(0, 0) == 0\n",
    },
    {
        "question_id": "vowels",
        "question": "Write a function count_vowels(s) that counts the vowels in s.",
        "solution": "def count_vowels(s):\n    count = 0\n    for ch in s.lower():\n        if ch in 'aeiou':\n"
                    "            count += 1\n    return count",
        "test_code": "from solution import count_vowels\n\ndef test_basic():\n    assert count_vowels('hello') == 2\n"
                     "    assert count_vowels('xyz') == 0\n\ndef test_upper():\n    assert count_vowels('AEIOU') == 5\n",
    },
    {
        "question_id": "largest",
        "question": "Write a function largest(xs) returning the largest number of a non-empty list.",
        "solution": "def largest(xs):\n    best = xs[0]\n    for x in xs[1:]:\n        if x > best:\n            best = x\n"
                    "    return best",
        "test_code": "from solution import largest\n\ndef test_largest():\n    assert largest([1, 5, 3]) == 5\n"
                     "    assert largest([-2, -7]) == -2\n\ndef test_single():\n    assert largest([4]) == 4\n",
    },
    {
        "question_id": "palindrome",
        "question": "Write a function is_palindrome(s) that tells whether s reads the same both ways.",
        "solution": "def is_palindrome(s):\n    return s == s[::-1]",
        "test_code": "from solution import is_palindrome\n\ndef test_yes():\n    assert is_palindrome('abba')\n"
                     "    assert is_palindrome('')\n\ndef test_no():\n    assert not is_palindrome('ab')\n",
    },
    {
        "question_id": "evens",
        "question": "Write a function evens(n) returning the even numbers from 0 to n inclusive.",
        "solution": "def evens(n):\n    out = []\n    for i in range(0, n + 1):\n        if i % 2 == 0:\n"
                    "            out.append(i)\n    return out",
        "test_code": "from solution import evens\n\ndef test_evens():\n    assert evens(4) == [0, 2, 4]\n"
                     "    assert evens(1) == [0]\n\ndef test_zero():\n    assert evens(0) == [0]\n",
    },
    {
        "question_id": "factorial",
        "question": "Write a function factorial(n) for n >= 0.",
        "solution": "def factorial(n):\n    result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result",
        "test_code": "from solution import factorial\n\ndef test_small():\n    assert factorial(0) == 1\n"
                     "    assert factorial(5) == 120\n\ndef test_three():\n    assert factorial(3) == 6\n",
    },
]  # fmt: skip


def _rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "kodcode_rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


# ---- KodCode conversion and mutants (no model) --------------------------------------------------
def test_pytest_file_becomes_standalone_cases_and_prompt_asserts():
    test_code = (
        "import pytest\nfrom solution import f, Node\n\nHELPER = 3\n\n"
        "def make(x):\n    return Node(x)\n\n"
        "def test_a():\n    assert f(1) == 2\n    n = make(2)\n    assert f(n.v) == HELPER\n\n"
        "@pytest.mark.parametrize('x', [1, 2])\ndef test_param(x):\n    assert f(x)\n\n"
        "def test_fixture(tmp_path):\n    assert tmp_path\n\n"
        "def test_b():\n    assert f(2) == 3\n"
    )
    cases, shown = kodcode_tests(test_code, n_prompt=3)
    assert len(cases) == 2  # parametrized and fixture tests are skipped
    assert all("from solution" not in c for c in cases)
    assert all("HELPER = 3" in c and "def make(x)" in c for c in cases)
    assert cases[0].rstrip().endswith("test_a()") and cases[1].rstrip().endswith("test_b()")
    # only asserts that use the solution's names and literals (not HELPER, not locals)
    assert shown == ["assert f(1) == 2", "assert f(2) == 3"]


@pytest.mark.needs_data("kodcode")
def test_kodcode_sample_rows_convert():
    cfg = SFTRunConfig()
    from cocos.finetune.sft_data import load_kodcode_rows

    rows = load_kodcode_rows(cfg)  # offline in tests: the local sample in COCOS_DATA_DIR
    problems = [p for p in (kodcode_problem(r, cfg) for r in rows) if p is not None]
    assert len(rows) == 230 and len(problems) > 200
    p = problems[0]
    assert p.prompt_tests and len(p.prompt_tests) <= 3 and p.tests and p.reference
    assert paper_prompt(p).startswith("You are an expert Python programmer, and here is your task: ")


def test_mutants_are_valid_different_code_of_every_kind():
    rng = random.Random(0)
    seen = set()
    for row in ROWS * 10:
        got = mutate(row["solution"], rng)
        assert got is not None
        code, kind = got
        compile(code, "<mutant>", "exec")  # still parses
        assert code.strip() != row["solution"].strip()
        seen.add(kind)
    assert seen == set(MUTATION_KINDS)


def test_wrong_first_turns_fail_their_tests():
    cfg = SFTRunConfig(verify_wrong=True)
    problems = verified_problems([kodcode_problem(r, cfg) for r in ROWS], cfg)
    assert len(problems) == len(ROWS)  # every reference passes its own tests
    wrong = find_wrong(problems, list(range(len(problems))), cfg, random.Random(1))
    assert len(wrong) >= len(ROWS) - 1
    results = run_batch([(wrong[i][0], problems[i].tests, problems[i].setup) for i in wrong], timeout=5.0)
    for i, outcomes in zip(wrong, results):
        assert not all(o.status == "passed" for o in outcomes), f"mutant of {problems[i].task_id} passes: {wrong[i][0]}"


def test_examples_are_one_to_one_in_the_paper_format(tmp_path):
    cfg = SFTRunConfig(data=str(_rows_file(tmp_path)), fix_fraction=0.5, wrong_answers="mutants")
    examples, stats = build_examples(cfg)
    first = [e for e in examples if e["kind"] == "turn1"]
    second = [e for e in examples if e["kind"].startswith("turn2")]
    assert len(first) == len(second) == len(ROWS)  # 1:1
    assert stats["turn2_fix"] >= 2 and stats["turn2_keep"] >= 2  # both lessons are taught
    by_id = {r["question_id"]: r for r in ROWS}
    for e in examples:
        ref = by_id[e["task_id"]]["solution"]
        assert e["completion"] == f"{ref}\n{DONE}"
        p = kodcode_problem(by_id[e["task_id"]], cfg)
        if e["kind"] == "turn1":
            assert e["prompt"] == paper_prompt(p)
        else:
            assert e["prompt"].startswith(paper_prompt(p)) and e["prompt"].endswith(f"{INSTRUCTION}{CORRECT}\n")
            prev = e["prompt"][len(paper_prompt(p)):].split(f"\n{DONE}")[0]
            assert (prev == ref) == (e["kind"] == "turn2_keep")


class ScriptedAnswers:
    """Stands in for the policy's sampler only: for each prompt, the next scripted answer of the problem whose
    question it holds (the sandbox, the data building and the stats are the real ones)."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.calls = answers, {}

    def generate(self, prompts, sampling, n=1):
        from cocos.generation.sampling import Generation, repeat_each

        out = []
        for prompt in repeat_each(prompts, n):
            question = next(q for q in self.answers if q in prompt)
            i = self.calls.get(question, 0)
            self.calls[question] = i + 1
            out.append(Generation(text=self.answers[question][i % len(self.answers[question])] + f"\n{DONE}"))
        return out


def test_own_wrong_answers_are_the_models_failing_samples(tmp_path):
    """wrong_answers=own: a fix shows one of the model's own failing answers (never prose or the reference), a
    keep one of its passing answers; a mutant stands in only where the model wrote no usable wrong answer."""
    sol = {r["question_id"]: r["solution"] for r in ROWS}
    own_wrong = "def add_numbers(a, b):\n    total = 0\n    for x in (a, b):\n        total = x\n    return total"
    by_id = {r["question_id"]: [r["solution"]] for r in ROWS}  # right every time...
    by_id["add"] = [own_wrong, "I think the answer is to add them.", sol["add"]]  # ...but: wrong, prose, right
    by_id["vowels"] = ["Here is how you count vowels"]  # prose only: no usable wrong answer -> a mutant
    questions = {r["question"]: by_id[r["question_id"]] for r in ROWS}
    cfg = SFTRunConfig(data=str(_rows_file(tmp_path)), fix_fraction=1.0, own_samples=3, progress=False)
    examples, stats = build_examples(cfg, ScriptedAnswers(questions))
    fixes = {e["task_id"]: e for e in examples if e["kind"] == "turn2_fix"}
    assert set(fixes) == set(sol)  # fix_fraction 1: every second turn fixes
    assert fixes["add"]["origin"] == "own" and f"{own_wrong}\n{DONE}" in fixes["add"]["prompt"]
    assert fixes["add"]["completion"] == f"{sol['add']}\n{DONE}"
    # no usable wrong answer of the model's own (prose, or always right): a mutant of the reference stands in
    assert all(fixes[q]["origin"] == "mutant" for q in set(sol) - {"add"}) and "Here is how" not in fixes["vowels"]["prompt"]
    assert stats["turn2_fix_own"] == 1 and stats["turn2_fix_mutant"] == len(ROWS) - 1
    assert stats["own_samples"] == 3 * len(ROWS) and stats["own_unusable"] == 4  # the prose answers
    assert stats["own_wrong"] == 1 and stats["own_correct"] == 1 + 3 * (len(ROWS) - 2)
    # fix_fraction 0: every second turn keeps one of the model's own right answers, the reference where it has none
    cfg = SFTRunConfig(data=str(_rows_file(tmp_path)), fix_fraction=0.0, own_samples=3, progress=False)
    keeps = {e["task_id"]: e for e in build_examples(cfg, ScriptedAnswers(questions))[0] if e["kind"] == "turn2_keep"}
    assert set(keeps) == set(sol) and keeps["vowels"]["origin"] == "reference"
    assert all(keeps[q]["origin"] == "own" and keeps[q]["completion"] == f"{sol[q]}\n{DONE}" for q in set(sol) - {"vowels"})
    from cocos.eval.metrics import edit_similarity

    shown = [fixes[q]["prompt"].split("[BEGIN]\n")[-1].split(f"\n{DONE}")[0] for q in sorted(fixes)]
    sims = [edit_similarity(code, sol[q]) for code, q in zip(shown, sorted(fixes))]
    assert stats["fix_similarity_mean"] == pytest.approx(sum(sims) / len(sims))


def test_prompt_completion_jsonl_is_used_as_is_and_config_errors(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p1", "completion": "c1"}) + "\n" + json.dumps({"prompt": "p2", "completion": "c2"}) + "\n")
    examples, stats = build_examples(SFTRunConfig(data=str(path)))
    assert [(e["prompt"], e["completion"]) for e in examples] == [("p1", "c1"), ("p2", "c2")]
    with pytest.raises(UserError, match="unknown SFT setting"):
        load_sft_config(None, ["learning_rate=1"])
    with pytest.raises(UserError, match="neither"):
        build_examples(SFTRunConfig(data=str(tmp_path / "missing.jsonl")))
    cfg = load_sft_config(CONFIGS / "boost_sft.yaml", ["epochs=1", "verify_wrong=false"])
    assert cfg.epochs == 1.0 and cfg.verify_wrong is False and cfg.data == "kodcode"
    assert load_sft_config(CONFIGS / "turn_sft.yaml").data == "turn-sft"


# ---- tiny model: loss mask and a real 2-step run ------------------------------------------------
def _tiny_model_dir(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [r["question"] + "\n" + r["solution"] + "\n" + r["test_code"] for r in ROWS] + [INSTRUCTION, "[BEGIN]\n[DONE][CORRECT]\n"]
    tk.train_from_iterator(corpus * 3, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    d = tmp_path / "tiny"
    LlamaForCausalLM(config).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_loss_is_on_the_completion_only(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = _tiny_model_dir(tmp_path)
    tok, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d)
    examples = [
        {"prompt": paper_prompt(kodcode_problem(r, SFTRunConfig()), []), "completion": r["solution"] + f"\n{DONE}"} for r in ROWS[:4]
    ]
    trainer = make_trainer(model, tok, examples, SFTRunConfig(batch_size=4, progress=False), tmp_path / "out")
    batch = next(iter(trainer.get_train_dataloader()))
    by_prompt = {e["prompt"]: e["completion"] for e in examples}
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        trained = labels != -100
        start = int(trained.nonzero()[0])
        prompt = tok.decode(ids[:start])
        assert prompt in by_prompt  # everything before the first trained token is exactly the prompt
        assert (labels[:start] == -100).all()
        assert tok.decode(ids[trained]) == by_prompt[prompt] + tok.eos_token  # and every completion token is trained
        assert torch.equal(labels[trained], ids[trained])


@pytest.mark.needs_data("mbpp")
def test_turn_sft_pairs_the_models_wrong_first_turns_with_the_reference(tmp_path):
    from cocos.data.problems import load_problems
    from cocos.generation.policy import load_policy

    policy = load_policy(str(_tiny_model_dir(tmp_path)), dtype="float32", backend="hf", verbose=False)
    cfg = SFTRunConfig(data="turn-sft", max_rows=3, max_new_tokens=8, progress=False)
    examples, stats = build_examples(cfg, policy)
    # an untrained model's 8 tokens never pass: every problem gives one "fix" example
    assert stats["problems"] == stats["samples"] == stats["turn2_fix"] == len(examples) == 3
    assert stats["turn1_correct"] == 0
    for e, p in zip(examples, load_problems("mbpp", split="train", limit=3)):
        assert e["kind"] == "turn2_fix" and e["task_id"] == str(p.task_id)
        assert e["completion"] == f"{p.reference.strip()}\n{DONE}"
        assert e["prompt"].startswith(paper_prompt(p)) and e["prompt"].endswith(f"{INSTRUCTION}{CORRECT}\n")


def test_tiny_sft_run_saves_a_loadable_checkpoint(tmp_path):
    from cocos.cli import main
    from cocos.generation.policy import load_policy
    from cocos.generation.sampling import Sampling
    from safetensors.torch import load_file

    d = _tiny_model_dir(tmp_path)
    before = load_file(d / "model.safetensors")
    out = tmp_path / "boost"
    rc = main([
        "sft", "--config", str(CONFIGS / "boost_sft.yaml"), "--out", str(out), "--set", f"model={d}",
        "--set", f"data={_rows_file(tmp_path)}", "--set", "max_steps=2", "--set", "batch_size=2", "--set", "grad_accum=1",
        "--set", "lr=1e-2", "--set", "logging_steps=1", "--set", "progress=false", "--set", "mbpp_train=false",
        "--set", "own_samples=2", "--set", "own_max_new_tokens=8",
    ])  # fmt: skip
    assert rc == 0
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the optimizer did step
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and max(r["step"] for r in log) == 2
    kinds = [json.loads(line)["kind"] for line in (out / "examples.jsonl").read_text().splitlines()]
    assert kinds.count("turn1") == len(ROWS) == sum(k.startswith("turn2") for k in kinds)
    policy = load_policy(str(out), dtype="float32", backend="hf", verbose=False)
    g = policy.generate([paper_prompt(kodcode_problem(ROWS[0], SFTRunConfig()))], Sampling(max_new_tokens=5))
    assert len(g) == 1 and len(g[0].completion_ids) >= 1
    with pytest.raises(UserError, match="already holds"):
        run_sft(SFTRunConfig(model=str(d)), out)


def test_autocast_setting_runs_the_fit_in_bf16_close_to_float32(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cocos.finetune.config import trl_training_args
    from cocos.generation.device import fast_bf16

    with pytest.raises(UserError, match="autocast: must be one of"):
        SFTRunConfig(autocast="fp16")
    assert trl_training_args(SFTRunConfig(autocast="none"))["bf16"] is False  # float32 throughout
    assert trl_training_args(SFTRunConfig(autocast="auto"))["bf16"] is fast_bf16("cpu")
    if not fast_bf16("cpu"):
        with pytest.raises(UserError, match="not fast"):
            SFTRunConfig(autocast="bf16")
        return
    d = _tiny_model_dir(tmp_path)
    tok = AutoTokenizer.from_pretrained(d)
    examples = [
        {"prompt": paper_prompt(kodcode_problem(r, SFTRunConfig()), []), "completion": r["solution"] + f"\n{DONE}"} for r in ROWS[:4]
    ]
    losses, weights = {}, {}
    for autocast in ("none", "bf16"):
        model = AutoModelForCausalLM.from_pretrained(d)
        cfg = SFTRunConfig(batch_size=4, grad_accum=1, max_steps=1, lr=1e-3, warmup_ratio=0.0, logging_steps=1,
                           autocast=autocast, progress=False)
        trainer = make_trainer(model, tok, examples, cfg, tmp_path / autocast)
        losses[autocast] = trainer.train().training_loss
        weights[autocast] = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert model.dtype == torch.float32  # autocast leaves the weights in their dtype
    # bf16 did run (the loss is not float32's to the bit), and to bf16's precision it is the same fit
    assert losses["bf16"] != losses["none"]
    assert losses["bf16"] == pytest.approx(losses["none"], rel=2e-2)
    assert not torch.equal(weights["bf16"], weights["none"])
    assert torch.allclose(weights["bf16"], weights["none"], atol=2e-3)


def test_a_resumed_fit_trains_on_the_examples_it_started_with(tmp_path, monkeypatch):
    """resume=true with the run's examples.jsonl: no new examples are built (that samples the model), the saved ones
    are trained on."""
    import cocos.finetune.sft as sft_mod

    d = _tiny_model_dir(tmp_path)
    out = tmp_path / "boost"
    out.mkdir()
    saved = [{"prompt": "p1", "completion": "c1", "kind": "turn1", "task_id": "a"},
             {"prompt": "p2", "completion": "c2", "kind": "turn2_fix", "task_id": "a"}]
    (out / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in saved))
    (out / "sft_stats.json").write_text(json.dumps({"examples": 2}))

    def no_building(*args, **kwargs):
        raise AssertionError("a resumed fit must not build its examples again")

    trained = []
    make = sft_mod.make_trainer
    monkeypatch.setattr(sft_mod, "build_examples", no_building)
    monkeypatch.setattr(sft_mod, "make_trainer", lambda model, tok, examples, *a, **k: trained.append(examples) or make(model, tok, examples, *a, **k))
    cfg = SFTRunConfig(model=str(d), data=str(_rows_file(tmp_path)), resume=True, max_steps=1, batch_size=2,
                       grad_accum=1, progress=False, mbpp_train=False)
    run_sft(cfg, out)
    assert trained == [saved] and (out / "model.safetensors").exists()
