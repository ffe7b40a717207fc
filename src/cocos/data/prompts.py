"""Prompt formats, the correction instruction, few-shot examples and code extraction.

Paper format (DESIGN.md; the layout of the paper's public code, github.com/jeonghun3572/CoCoS,
`cocos/prompts.py`), byte-exact:

    turn 1:  "You are an expert Python programmer, and here is your task: {text} Your code should pass
              these tests:\n\n{tests joined by \n}\n\n[BEGIN]\n"
    turn t:  turn t-1 prompt + "{code of turn t-1}\n[DONE]" + INSTRUCTION + "[CORRECT]\n"

Decisions:
- T > 2: prompts chain, turn t extends turn t-1's prompt, so the model sees every earlier answer
  (the public code keeps only the last answer; for T = 2 both are the same string).
- The previous answer put in the prompt is its extracted code (as in the public code), not the raw text.
- Few-shot: solved MBPP examples go before the turn-1 prompt only, each laid out as a turn-1 prompt
  followed by "{code}\n[DONE]\n\n" (the public code's `make_fewshot`); turns t > 1 are built on the
  zero-shot turn-1 prompt (the public code drops the examples after turn 1 too). The examples are MBPP
  task ids 2, 3, 4 (`FEWSHOT_TASK_IDS`), the 3-shot prompt of the MBPP paper (Austin et al. 2021) used by
  most MBPP evaluations; the public code reads the examples from a user-given file, so it fixes none.
  (The public code also writes "[BEGIN]\n" instead of "[CORRECT]\n" after the instruction in few-shot
  mode; we keep DESIGN.md's "[CORRECT]\n" in every mode.)
- Chat format (instruct models): the user message is the turn-1 text without the "[BEGIN]" marker, the
  model answers as the assistant; turn t adds the previous code (in a ```python fence) as the assistant
  message and INSTRUCTION (stripped) as the next user message. Few-shot examples become user/assistant
  pairs before the first user message (turn 1 only, as in the paper format). The tokenizer's chat
  template renders the conversation with the generation prompt.

Code extraction (`extract_code(text, extraction)`): the text before the first "[DONE]" (the whole text
when there is none); inside it, the part after the last "[BEGIN]"/"[CORRECT]" marker if the model repeated
one; then the first markdown fence's content if there is a fence; then dedented, blank lines around it
removed. An answer without "[DONE]" (cut off by the token budget, or ended by EOS) is then handled by the
rule `extraction` (`CHOICES["extraction"]`), the one place where it is decided, for evaluation and training rewards:
- "strict" (default; the paper's rule): executed as extracted, whole. The authors' `code_process`
  (cocos/prompts.py, lines 10-29, github.com/jeonghun3572/CoCoS) returns the text unchanged when no
  "[DONE]" matches, so a truncated answer fails there (its cut-off last line does not parse).
- "lenient": only its longest prefix of whole top-level statements that parses is executed, so a correct
  first function followed by a repeated, cut-off copy still passes. Not the paper's rule: it credits
  truncated answers the paper does not.
An answer that parses whole gives the same code under both rules.
Where the answer holds more than code, `code_process` deletes the markers and the strings "```python\n" /
"\n```" in place before [DONE] (and changes nothing without [DONE]), keeping any prose around them; under
both rules we keep the part after the last marker and the first fenced block, so prose is not executed
(the same code when there is none; chat answers, which never write [DONE], still lose their fences).
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Sequence

from cocos.config import CHOICES
from cocos.data.problems import Problem
from cocos.errors import UserError

BEGIN, DONE, CORRECT = "[BEGIN]", "[DONE]", "[CORRECT]"
INSTRUCTION = (
    "\n\nThere might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct Python program!\n\n"
)
FEWSHOT_TASK_IDS = (2, 3, 4)


def task_text(problem: Problem) -> str:
    """The task statement with its tests, as the paper writes it (without the [BEGIN] marker)."""
    tests = "\n".join(problem.shown_tests).strip()
    return (
        f"You are an expert Python programmer, and here is your task: {problem.text} "
        f"Your code should pass these tests:\n\n{tests}"
    )


def first_turn_prompt(problem: Problem) -> str:
    return task_text(problem) + f"\n\n{BEGIN}\n"


def fewshot_prefix(examples: Sequence[Problem]) -> str:
    """Solved examples, each a turn-1 prompt followed by its code and [DONE]."""
    return "".join(f"{first_turn_prompt(ex)}{ex.reference.strip()}\n{DONE}\n\n" for ex in examples)


def load_fewshot_examples(task_ids: Sequence[int] = FEWSHOT_TASK_IDS) -> list[Problem]:
    from cocos.data.problems import load_problems

    by_id = {p.task_id: p for p in load_problems("mbpp", split="prompt")}
    return [by_id[t] for t in task_ids]


def paper_prompt(problem: Problem, previous_codes: Sequence[str] = (), fewshot: str = "") -> str:
    """Prompt for turn len(previous_codes) + 1 in the paper's format."""
    if not previous_codes:
        return fewshot + first_turn_prompt(problem)
    prompt = first_turn_prompt(problem)
    for code in previous_codes:
        prompt += f"{code}\n{DONE}{INSTRUCTION}{CORRECT}\n"
    return prompt


def _fence(code: str) -> str:
    return f"```python\n{code}\n```"


def chat_messages(
    problem: Problem, previous_codes: Sequence[str] = (), fewshot_examples: Sequence[Problem] = ()
) -> list[dict]:
    """The conversation for turn len(previous_codes) + 1 in the chat format."""
    messages = []
    if not previous_codes:
        for ex in fewshot_examples:
            messages += [
                {"role": "user", "content": task_text(ex)},
                {"role": "assistant", "content": _fence(ex.reference.strip())},
            ]
    messages.append({"role": "user", "content": task_text(problem)})
    for code in previous_codes:
        messages += [
            {"role": "assistant", "content": _fence(code)},
            {"role": "user", "content": INSTRUCTION.strip()},
        ]
    return messages


class PromptBuilder:
    """Turn-t prompts for one run: fixes the format, the tokenizer (chat) and the few-shot examples."""

    def __init__(self, prompt_format: str = "paper", *, tokenizer=None, fewshot: bool = False):
        if prompt_format not in CHOICES["prompt_format"]:
            formats = ", ".join(CHOICES["prompt_format"])
            raise UserError(f"--prompt-format must be one of {formats}, got {prompt_format!r}")
        if prompt_format == "chat":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise UserError(
                    "--prompt-format chat needs a tokenizer with a chat template and this model has none; "
                    "use --prompt-format paper"
                )
        self.format = prompt_format
        self.tokenizer = tokenizer
        self.examples = load_fewshot_examples() if fewshot else []
        self.prefix = fewshot_prefix(self.examples)

    def __call__(self, problem: Problem, previous_codes: Sequence[str] = ()) -> str:
        if self.format == "paper":
            return paper_prompt(problem, previous_codes, self.prefix)
        messages = chat_messages(problem, previous_codes, self.examples)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


_FENCE_LINE = re.compile(r"^[ \t]*```.*$", re.MULTILINE)


def check_extraction(extraction: str, flag: str = "--extraction") -> str:
    if extraction not in CHOICES["extraction"]:
        raise UserError(
            f"{flag} must be one of {', '.join(CHOICES['extraction'])} (strict = the paper's rule), got {extraction!r}"
        )
    return extraction


def extract_code(text: str, extraction: str = "strict") -> str:
    """The code in a model answer: the only text that is executed. `extraction`: see the module docstring."""
    check_extraction(extraction)
    span = text.split(DONE, 1)[0]
    cut = max(span.rfind(BEGIN) + len(BEGIN) if BEGIN in span else -1,
              span.rfind(CORRECT) + len(CORRECT) if CORRECT in span else -1)
    if cut >= 0:
        span = span[cut:]
    fences = list(_FENCE_LINE.finditer(span))
    if len(fences) >= 2:  # the first fenced block
        span = span[fences[0].end() : fences[1].start()]
    elif len(fences) == 1:  # a lone fence: an opener when nothing precedes it, else a closer
        f = fences[0]
        span = span[f.end() :] if not span[: f.start()].strip() else span[: f.start()]
    lines = span.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    code = textwrap.dedent("\n".join(lines)).rstrip()
    if DONE not in text and extraction == "lenient":
        # Small models repeat their function or start another few-shot example until cut off mid-line:
        # keep the longest whole-statement prefix that parses, so a correct first function is not lost.
        code = _longest_parsing_prefix(code)
    return code


def _longest_parsing_prefix(code: str) -> str:
    lines = code.splitlines()
    # candidate ends: before each top-level line (a new statement starts there), and the whole text
    ends = [len(lines)] + [i for i in range(len(lines) - 1, 0, -1) if lines[i][:1] not in ("", " ", "\t")]
    for end in ends:
        candidate = "\n".join(lines[:end]).rstrip()
        try:
            ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
        return candidate
    return code
