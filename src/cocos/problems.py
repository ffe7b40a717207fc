"""Benchmark problems: the `Problem` record and one loader per dataset.

Loaders are filled in by the evaluation-path work (issue 3); the record is shared by every module.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    task_id: int | str  # the dataset's own id: MBPP's integer, "HumanEval/0", ODEX's id
    text: str  # the natural-language task ({text} in the prompt)
    tests: list[str]  # single test cases, each run on its own by the sandbox
    setup: str = ""  # code run before the program (MBPP test_setup_code, imports)
    entry_point: str | None = None  # function name the tests call, where the dataset names one
    reference: str = ""  # canonical solution
    prompt_tests: list[str] | None = None  # tests shown in the prompt; None -> `tests`
    dataset: str = ""
    meta: dict = field(default_factory=dict)  # dataset-specific extras (ODEX library, ...)

    @property
    def shown_tests(self) -> list[str]:
        return self.tests if self.prompt_tests is None else self.prompt_tests
