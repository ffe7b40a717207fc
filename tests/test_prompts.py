"""Prompt strings pinned byte-exact, few-shot layout, chat format, code extraction."""

import pytest

from cocos.data.problems import Problem, load_problems
from cocos.data.prompts import (
    INSTRUCTION,
    PromptBuilder,
    chat_messages,
    extract_code,
    fewshot_prefix,
    load_fewshot_examples,
    paper_prompt,
)
from cocos.errors import UserError

TASK11 = (
    "You are an expert Python programmer, and here is your task: Write a python function to remove first and last "
    "occurrence of a given character from the string. Your code should pass these tests:\n\n"
    'assert remove_Occ("hello","l") == "heo"\nassert remove_Occ("abcda","a") == "bcd"\nassert remove_Occ("PHP","P") == "H"'
    "\n\n[BEGIN]\n"
)
INSTR = (
    "\n\nThere might be an error in the code above because of lack of understanding of the question. Please correct "
    "the error, if any, and rewrite the solution. Only output the final correct Python program!\n\n"
)


@pytest.fixture(scope="module")
def task11(request):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    request.addfinalizer(mp.undo)
    return load_problems("mbpp", limit=1)[0]


def test_instruction_is_the_papers():
    assert INSTRUCTION == INSTR


@pytest.mark.needs_data("mbpp")
def test_turn_prompts_byte_exact(task11):
    assert paper_prompt(task11) == TASK11
    code1 = "def remove_Occ(s,ch):\n    return s"
    turn2 = TASK11 + code1 + "\n[DONE]" + INSTR + "[CORRECT]\n"
    assert paper_prompt(task11, [code1]) == turn2
    # T > 2 chains: turn 3 extends turn 2's prompt with turn 2's code.
    code2 = "def remove_Occ(s,ch):\n    return s.strip(ch)"
    assert paper_prompt(task11, [code1, code2]) == turn2 + code2 + "\n[DONE]" + INSTR + "[CORRECT]\n"


@pytest.mark.needs_data("mbpp")
def test_fewshot_layout(task11):
    examples = load_fewshot_examples()
    assert [e.task_id for e in examples] == [2, 3, 4]
    prefix = fewshot_prefix(examples)
    first = (
        "You are an expert Python programmer, and here is your task: Write a function to find the similar elements "
        "from the given two tuple lists. Your code should pass these tests:\n\n"
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
        "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
        "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)\n\n[BEGIN]\n"
        "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res)\n"
        "[DONE]\n\n"
    )
    assert prefix.startswith(first) and prefix.count("[BEGIN]\n") == 3 and prefix.count("\n[DONE]\n\n") == 3
    assert prefix.endswith("  largest_nums = hq.nlargest(n, nums)\n  return largest_nums\n[DONE]\n\n")
    build = PromptBuilder("paper", fewshot=True)
    assert build(task11) == prefix + TASK11
    # examples go before turn 1 only; turn 2 is built on the zero-shot turn-1 prompt
    assert build(task11, ["x = 1"]) == TASK11 + "x = 1\n[DONE]" + INSTR + "[CORRECT]\n"


class _Tok:
    """The smallest tokenizer with a chat template (the rollout tests use a real one)."""

    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


@pytest.mark.needs_data("mbpp")
def test_chat_messages(task11):
    msgs = chat_messages(task11)
    assert msgs == [{"role": "user", "content": TASK11[: -len("\n\n[BEGIN]\n")]}]
    msgs2 = chat_messages(task11, ["def f():\n    pass"])
    assert [m["role"] for m in msgs2] == ["user", "assistant", "user"]
    assert msgs2[1]["content"] == "```python\ndef f():\n    pass\n```"
    assert msgs2[2]["content"] == INSTR.strip()
    few = chat_messages(task11, fewshot_examples=load_fewshot_examples())
    assert [m["role"] for m in few] == ["user", "assistant"] * 3 + ["user"]
    assert few[1]["content"].startswith("```python\ndef similar_elements(")
    assert PromptBuilder("chat", tokenizer=_Tok())(task11, ["y = 2"]).endswith(f"<user>{INSTR.strip()}</user><assistant>")
    with pytest.raises(UserError, match="chat template"):
        PromptBuilder("chat", tokenizer=None)
    with pytest.raises(UserError, match="--prompt-format"):
        PromptBuilder("markdown")


def test_prompt_uses_shown_tests():
    p = Problem(task_id="x", text="Do it.", tests=["candidate = f\nassert candidate(1) == 1"], prompt_tests=["assert f(1) == 1"])
    assert paper_prompt(p).endswith("Your code should pass these tests:\n\nassert f(1) == 1\n\n[BEGIN]\n")


@pytest.mark.parametrize(
    "text,code",
    [
        ("def f():\n    return 1\n[DONE]\nmore text [DONE]", "def f():\n    return 1"),  # before the first [DONE]
        ("def f():\n    return 1\n", "def f():\n    return 1"),  # no [DONE]: the whole text
        ("```python\ndef f():\n    return 1\n```\n[DONE]", "def f():\n    return 1"),  # fences stripped
        ("Here you go:\n```python\nx = 2\n```\nThen:\n```\ny = 3\n```", "x = 2"),  # first fenced block
        ("x = 1\n```\nexplanation", "x = 1"),  # a lone closing fence
        ("[BEGIN]\n    a = 1\n    b = 2\n[DONE]", "a = 1\nb = 2"),  # repeated marker, dedented
        ("text\n[CORRECT]\nz = 3\n[DONE]", "z = 3"),  # the span after [CORRECT]
        ("[DONE]", ""),
        ("\n\n  \ndef g(s):\n    return '''a  \n  b'''\n[DONE]", "def g(s):\n    return '''a  \n  b'''"),
    ],
)
def test_extract_code(text, code):
    assert extract_code(text) == code


def test_extract_code_truncated_answer_strict_runs_whole_lenient_keeps_parsing_prefix():
    # no [DONE]: the model repeated its function and was cut off mid-statement
    text = "def f(x):\n    return x + 1\ndef f(x):\n    return x +"
    assert extract_code(text) == extract_code(text, "strict") == text  # the paper's rule is the default
    assert extract_code(text, "lenient") == "def f(x):\n    return x + 1"
    # a new few-shot example started after the answer
    text = "def g():\n    return 2\nYou are an expert Python programmer, and here is your task: ..."
    assert extract_code(text, "strict") == text
    assert extract_code(text, "lenient") == "def g():\n    return 2"
    # with [DONE] both rules take the text before it, even when the code does not parse
    assert extract_code("def h(:\n[DONE]", "strict") == extract_code("def h(:\n[DONE]", "lenient") == "def h(:"
    # an answer that parses whole (ended by EOS, not by the budget) is the same under both rules
    assert extract_code("def k():\n    return 5\n", "strict") == extract_code("def k():\n    return 5\n", "lenient")
    with pytest.raises(UserError, match="--extraction must be one of strict, lenient"):
        extract_code("x = 1", "loose")


def test_truncated_answer_fails_under_strict_and_passes_under_lenient():
    """The rule reaches the executed code: the same cut-off answer, scored through the sandbox."""
    from cocos import sandbox
    from cocos.episodes.rollout import score_responses

    p = Problem(task_id=1, text="Add one.", tests=["assert f(1) == 2", "assert f(2) == 3"])
    text = "def f(x):\n    return x + 1\n\n\ndef f(x):\n    return x +"  # budget ran out in a repeated copy
    strict, lenient = (score_responses([(p, [text])], extraction=rule)[0].turns[0] for rule in ("strict", "lenient"))
    assert strict.n_passed == 0 and strict.outcomes[0].error_type == "SyntaxError" and strict.reward == 0.0
    assert lenient.n_passed == 2 and lenient.reward == 1.0
    # what the default (strict) runs is exactly the text: the sandbox sees the same failure
    assert [o.status for o in sandbox.run_batch([(text, p.tests)])[0]] == [o.status for o in strict.outcomes]


def test_eval_extraction_option_reaches_metrics_json(tmp_path):
    """`cocos eval --extraction`: strict by default, named in metrics.json and config.json."""
    import json

    from cocos.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"task_id": 1, "text": "Add one.", "test_list": ["assert f(1) == 2"]}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": 1, "turns": ["def f(x):\n    return x + 1\ndef f(x):\n    return x +"]}) + "\n")
    got = {}
    for rule in (None, "lenient"):
        out = tmp_path / f"run-{rule}"
        args = ["eval", "--samples", str(samples), "--dataset", f"jsonl:{data}", "--out", str(out)]
        assert main(args + (["--extraction", rule] if rule else [])) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert json.loads((out / "config.json").read_text())["extraction"] == m["extraction"]
        got[m["extraction"]] = m["acc@1"]
    assert got == {"strict": 0.0, "lenient": 1.0}
