"""Dataset loaders: split sizes, HumanEval/ODEX test splitting, jsonl files, clear errors."""

import json
import os

import pytest

from cocos.data.problems import DataNotFound, humaneval_split_stats, load_problems, split_check
from cocos.errors import UserError


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.needs_data("mbpp")
@pytest.mark.parametrize("split,n,first,last", [("test", 500, 11, 510), ("validation", 90, 511, 600),
                                                ("train", 374, 601, 974), ("prompt", 10, 1, 10), ("all", 974, 1, 974)])
def test_mbpp_splits_by_task_id(split, n, first, last):
    problems = load_problems("mbpp", split)
    assert len(problems) == n
    assert (problems[0].task_id, problems[-1].task_id) == (first, last)
    assert all(len(p.tests) == 3 and p.reference and p.text for p in problems)


@pytest.mark.needs_data("mbpp")
def test_mbpp_limit_and_fields():
    problems = load_problems("mbpp", "test", limit=3)
    assert [p.task_id for p in problems] == [11, 12, 13]
    p = problems[0]
    assert p.text == "Write a python function to remove first and last occurrence of a given character from the string."
    assert p.tests[0] == 'assert remove_Occ("hello","l") == "heo"'
    assert p.shown_tests == p.tests and "\r" not in p.reference
    assert p.meta["source"].startswith("local:")
    with pytest.raises(UserError, match="--limit"):
        load_problems("mbpp", limit=0)


@pytest.mark.needs_data("mbpp")
def test_mbpp_setup_code_runs_after_the_answer():
    p = {q.task_id: q for q in load_problems("mbpp")}[367]
    assert p.setup == "" and p.tests[0].startswith("root = Node(1) \nroot.left = Node(2) \n")
    assert p.tests[0].endswith("\n" + p.shown_tests[0]) and p.shown_tests[0].startswith("assert is_tree_balanced(")


@pytest.mark.needs_data("mbpp-sanitized")
def test_mbpp_sanitized_gets_import_math():
    problems = {p.task_id: p for p in load_problems("mbpp-sanitized", "all")}
    assert len(problems) == 427 and len(load_problems("mbpp-sanitized", "test")) == 257
    needs = {98, 124, 137, 139, 163, 233, 246, 248, 276, 300}
    assert {t for t, p in problems.items() if "import math" in p.setup} == needs


def test_humaneval_checks_split_one_assert_per_test():
    problems = load_problems("humaneval")
    assert len(problems) == 164
    p = problems[0]
    assert p.task_id == "HumanEval/0" and p.entry_point == "has_close_elements"
    assert len(p.tests) == 7
    assert p.tests[0] == "candidate = has_close_elements\nassert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True"
    assert p.setup.startswith("from typing import List") and p.meta["humaneval_prompt"] == p.setup
    for q in problems:  # every test and setup is valid Python on its own
        compile(q.setup, q.task_id, "exec")
        for t in q.tests:
            compile(t, q.task_id, "exec")
    stats = humaneval_split_stats()
    assert stats["kept_whole"] == 5
    assert stats["problems_with_kept_whole"] == ["HumanEval/32", "HumanEval/38", "HumanEval/44", "HumanEval/50", "HumanEval/53"]


def _authors_humaneval_prompt(entry_point, test_list, previous=None):
    """The authors' make_prompt_humaneval (github.com/jeonghun3572/CoCoS, cocos/prompts.py lines 71-87)."""
    prompt = (
        f"You are an expert Python programmer, and here is your task: "
        f"Write a python function {entry_point}. Your code should pass these tests:\n\n"
        f"{chr(10).join(test_list).strip()}\n\n[BEGIN]\n"
    )
    if previous is not None:
        prompt += (f"{previous.rstrip()}\n[DONE]" + "\n\nThere might be an error in the code above because of lack of "
                   "understanding of the question. Please correct the error, if any, and rewrite the solution. Only "
                   "output the final correct Python program!\n\n" + "[CORRECT]\n")
    return prompt


def test_humaneval_prompt_is_the_authors_with_every_test_shown():
    from cocos.data.prompts import paper_prompt

    problems = {p.task_id: p for p in load_problems("humaneval")}
    p = problems["HumanEval/0"]
    shown = [
        "assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True",
        "assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False",
        "assert has_close_elements([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True",
        "assert has_close_elements([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False",
        "assert has_close_elements([1.0, 2.0, 3.0, 4.0, 5.0, 2.0], 0.1) == True",
        "assert has_close_elements([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True",
        "assert has_close_elements([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False",
    ]
    assert p.text == "Write a python function has_close_elements." and p.shown_tests == shown
    assert paper_prompt(p) == _authors_humaneval_prompt("has_close_elements", shown)
    code = "def has_close_elements(numbers, threshold):\n    return False"
    assert paper_prompt(p, [code]) == _authors_humaneval_prompt("has_close_elements", shown, code)
    # a test with context lines shows them once, before the asserts that need them; no-op lines are left out
    assert problems["HumanEval/53"].shown_tests[:2] == ["import random", "assert add(0, 1) == 1"]
    assert not any(line == "print" for line in problems["HumanEval/129"].shown_tests)
    for q in problems.values():  # every test that runs is in the prompt (the authors show all of test_list)
        text = "\n".join(q.shown_tests)
        assert q.text == f"Write a python function {q.entry_point}." and "candidate" not in text
        assert "assert True" not in text and q.entry_point in text
        for t in q.tests:
            assert t.splitlines()[-1].replace("candidate", q.entry_point) in text, (q.task_id, t)


def test_split_check_context_loops_and_trivial_asserts():
    src = (
        "import math\nMETADATA = {}\n\ndef check(candidate):\n    import random\n    assert candidate(1) == 2\n"
        "    assert True\n    x = [1,\n         2]\n    assert candidate(x[0]) == 2, 'msg'\n"
        "    for i in range(3):\n        assert candidate(i) == i + 1\n"
    )
    tests, kept = split_check(src, "inc")
    assert kept == 1
    assert tests == [
        "import math\n\ncandidate = inc\nimport random\nassert candidate(1) == 2",
        "import math\n\ncandidate = inc\nimport random\nx = [1,\n     2]\nassert candidate(x[0]) == 2, 'msg'",
        "import math\n\ncandidate = inc\nimport random\nx = [1,\n     2]\nfor i in range(3):\n    assert candidate(i) == i + 1",
    ]


@pytest.mark.needs_data("odex")
def test_odex_tests_setup_and_library():
    problems = load_problems("odex")
    assert len(problems) == 439
    by_id = {p.task_id: p for p in problems}
    assert len(by_id) == 439 and by_id["3283984_0"].meta["odex_task_id"] == 3283984
    p = by_id["3844801_0"]
    assert p.entry_point == "f_3844801" and p.meta["library"] == []
    assert p.text == "check if all elements in list `myList` are identical. Write it as the function `def f_3844801(myList)`."
    assert p.tests[0] == "def check(candidate):\n    assert candidate([1,2,3]) == False\n\ncheck(f_3844801)\n"
    assert p.shown_tests[0] == "assert f_3844801([1,2,3]) == False"
    assert p.reference == "def f_3844801(myList):\n\treturn all(x == myList[0] for x in myList)"
    q = by_id["18079563_0"]
    assert q.setup == "import pandas as pd\n" and q.meta["library"] == ["pandas"] and len(q.tests) == 3
    assert sum(len(p.tests) for p in problems) > 439


def test_jsonl_dataset(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"task_id": "a", "text": "Add one.", "code": "def f(x):\r\n    return x + 1", "test_list": ["assert f(1) == 2"]},
        {"task_id": "b", "text": "Double.", "test_list": ["assert g(2) == 4", "assert g(0) == 0"], "test_setup_code": "import math"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = load_problems(f"jsonl:{path}")
    assert [p.task_id for p in problems] == ["a", "b"]
    assert problems[0].reference == "def f(x):\n    return x + 1"
    # test_setup_code runs after the answer, at the head of each test; the prompt shows the bare asserts
    assert problems[1].setup == "" and problems[1].tests == ["import math\nassert g(2) == 4", "import math\nassert g(0) == 0"]
    assert problems[1].shown_tests == ["assert g(2) == 4", "assert g(0) == 0"]
    with pytest.raises(UserError, match="no split"):
        load_problems(f"jsonl:{path}", "train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": 1, "text": "x"}) + "\n")
    with pytest.raises(UserError, match="lacks test_list"):
        load_problems(f"jsonl:{bad}")
    with pytest.raises(UserError, match="no such file"):
        load_problems(f"jsonl:{tmp_path / 'nope.jsonl'}")


def test_errors_name_the_fix(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'mbbp'"):
        load_problems("mbbp")
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load_problems("mbpp", "dev")
    with pytest.raises(UserError, match="unknown split 'train' for humaneval: use test .* train-half"):
        load_problems("humaneval", "train")
    monkeypatch.setenv("COCOS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFound) as e:
        load_problems("mbpp")
    msg = str(e.value)
    assert str(tmp_path / "mbpp.jsonl") in msg and "offline" in msg and "set COCOS_DATA_DIR" in msg
    assert "--split train-half / eval-half" in msg  # names the data that needs no download
    assert e.value.dataset == "mbpp" and e.value.where == f"the Hub (offline or unreachable) and {tmp_path / 'mbpp.jsonl'}"
    monkeypatch.delenv("COCOS_DATA_DIR")
    with pytest.raises(DataNotFound, match="COCOS_DATA_DIR \\(not set\\)"):
        load_problems("odex")


def test_humaneval_halves_are_disjoint_and_cover_the_benchmark(monkeypatch):
    monkeypatch.delenv("COCOS_DATA_DIR", raising=False)  # HumanEval needs no data folder
    whole = load_problems("humaneval")
    train, held_out = load_problems("humaneval", "train-half"), load_problems("humaneval", "eval-half")
    assert len(train) == len(held_out) == 82
    assert [p.task_id for p in train[:3]] == ["HumanEval/0", "HumanEval/2", "HumanEval/4"]
    assert [p.task_id for p in held_out[:3]] == ["HumanEval/1", "HumanEval/3", "HumanEval/5"]
    ids = lambda ps: {p.task_id for p in ps}  # noqa: E731
    assert not ids(train) & ids(held_out) and ids(train) | ids(held_out) == ids(whole)
    assert [p.task_id for p in load_problems("humaneval", "eval-half", limit=2)] == ["HumanEval/1", "HumanEval/3"]
    assert held_out[0].tests == whole[1].tests and held_out[0].dataset == "humaneval"
