"""Self-Refine (Madaan et al. 2023), as the CoCoS paper runs it: no training; the model critiques its own code,
then revises it with its critique in view.

    cocos eval --config configs/self_refine.yaml --out runs/self_refine   (or --actor self-refine)

Turn 1 is the policy's own answer (paper format). A turn t > 1 is two generations:

    1. feedback:  the paper prompt up to the last code + "\\n[DONE]" + FEEDBACK_INSTRUCTION     -> critique, ends at [END]
    2. revision:  feedback prompt + critique + "\\n[END]" + REFINE_INSTRUCTION                  -> code, ends at [DONE]

The turn records the paper's correction prompt (what CoCoS would have been asked) and, as its text, critique +
"\\n[END]" + REFINE_INSTRUCTION + revision, so the samples show the critique and `extract_code` (text after the
last [CORRECT], before [DONE]) finds the revised code. The token ids are the revision's. Later turns' prompts are
rebuilt from the codes: the critique is not carried forward. Paper prompt format only.
"""

from __future__ import annotations

from cocos.data.prompts import BEGIN, CORRECT, DONE, paper_prompt
from cocos.episodes.actors import PolicyActor
from cocos.episodes.records import Draft
from cocos.errors import UserError
from cocos.generation.sampling import Generation, Sampling, repeat_each

END = "[END]"
FEEDBACK_INSTRUCTION = (
    "\n\nReview the code above against the task and its tests. Go through it step by step and say what is "
    "wrong, if anything: wrong logic, wrong edge cases, wrong return value, syntax errors. "
    "Write only the feedback, not code.\n\n[FEEDBACK]\n"
)
REFINE_INSTRUCTION = (
    "\n\nUse the feedback above to correct the code, if needed, and rewrite the solution. "
    f"Only output the final correct Python program!\n\n{CORRECT}\n"
)


def _clean_feedback(text: str) -> str:
    """The critique without its stop string or any marker that would confuse code extraction."""
    for marker in (END, DONE):
        text = text.split(marker, 1)[0]
    for marker in (BEGIN, CORRECT):
        text = text.replace(marker, "")
    return text.strip()


def feedback_prompt(problem, codes: list[str]) -> str:
    """The paper prompt with the last answer shown and the feedback request in place of the correction request."""
    return paper_prompt(problem, codes[:-1]) + f"{codes[-1]}\n{DONE}{FEEDBACK_INSTRUCTION}"


class SelfRefineActor:
    def __init__(self, policy, settings, feedback_tokens: int = 256):
        if settings.prompt_format != "paper":
            raise UserError("actor self-refine works on the paper prompt format only; set prompt_format=paper")
        self.policy, self.feedback_tokens = policy, int(feedback_tokens)
        self.first = PolicyActor(policy, settings)

    def write(self, problems, histories, sampling: Sampling, n: int = 1) -> list[Draft]:
        if not histories[0]:  # turn 1: the policy's own answer
            return self.first.write(problems, histories, sampling, n=n)
        problems, histories = repeat_each(problems, n), repeat_each(histories, n)  # each sample its own critique
        codes = [[h.code for h in hist] for hist in histories]
        fb_prompts = [feedback_prompt(p, c) for p, c in zip(problems, codes)]
        fb = Sampling(max_new_tokens=min(self.feedback_tokens, sampling.max_new_tokens), temperature=sampling.temperature,
                      top_p=sampling.top_p, seed=sampling.seed, stop=(END, DONE))
        feedback = [_clean_feedback(g.text) for g in self.policy.generate(fb_prompts, fb)]
        bridges = [f"{text}\n{END}{REFINE_INSTRUCTION}" for text in feedback]
        revisions = self.policy.generate([fp + b for fp, b in zip(fb_prompts, bridges)], sampling)
        return [
            Draft(paper_prompt(p, c), Generation(text=b + g.text, prompt_ids=g.prompt_ids, completion_ids=g.completion_ids,
                                                 finish_reason=g.finish_reason))
            for p, c, b, g in zip(problems, codes, bridges, revisions)
        ]
