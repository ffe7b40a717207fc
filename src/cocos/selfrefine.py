"""Self-Refine baseline (Madaan et al. 2023, as the CoCoS paper runs it): no training, the model
critiques its own code, then revises it with its critique in view.

How it plugs in: `cocos eval --prompt-format self-refine` (or `run_episodes(..., prompt_format=
"self-refine")`) wraps the policy in `SelfRefinePolicy` and plays the episode in the paper format.
Turn 1 is unchanged. For a turn t > 1 the rollout asks for the paper's correction prompt
(turn-1 prompt + "{code}\\n[DONE]" + INSTRUCTION + "[CORRECT]\\n"); the wrapper replaces that single
generation with two:

    1. feedback:  turn-1 prompt + "{code}\\n[DONE]" + FEEDBACK_INSTRUCTION        -> critique, ends at [END]
    2. revision:  feedback prompt + critique + "\\n[END]" + REFINE_INSTRUCTION     -> code, ends at [DONE]

and returns one Generation whose text is critique + "\\n[END]" + REFINE_INSTRUCTION + revision, so the
saved samples show the critique and `extract_code` (text after the last [CORRECT], before [DONE])
still finds the revised code. `completion_ids` are the revision's tokens. The critique is kept out of
later turns' prompts (the rollout rebuilds them from the codes).

Only the paper prompt format is supported (a chat model can use it too).
"""

from __future__ import annotations

from cocos.errors import UserError
from cocos.policy import Generation
from cocos.prompts import BEGIN, CORRECT, DONE, INSTRUCTION

END = "[END]"
_FEEDBACK_TOKENS = 256  # default budget of a feedback generation (python -m cocos.selfrefine: feedback_tokens)
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


class SelfRefinePolicy:
    """Wraps a policy: turn-t>1 prompts get a feedback generation, then a revision."""

    def __init__(self, policy, feedback_tokens: int | None = None):
        self.policy = policy
        self.feedback_tokens = feedback_tokens or _FEEDBACK_TOKENS

    def __getattr__(self, name):  # model, tokenizer, device, ... of the wrapped policy
        return getattr(self.policy, name)

    @staticmethod
    def feedback_prompt(prompt: str) -> str:
        """The correction prompt with its last instruction replaced by the feedback request."""
        head = prompt[: prompt.rindex(INSTRUCTION)]
        return head + FEEDBACK_INSTRUCTION

    def generate(self, prompts: list[str], **kw) -> list[Generation]:
        refine = [i for i, p in enumerate(prompts) if INSTRUCTION in p]
        if not refine:
            return self.policy.generate(prompts, **kw)
        if any(INSTRUCTION.strip() in p and INSTRUCTION not in p for p in prompts):
            raise UserError("prompt format self-refine works on the paper format only; drop --prompt-format chat")
        out: list[Generation | None] = [None] * len(prompts)
        first = [i for i in range(len(prompts)) if i not in set(refine)]
        if first:
            for i, g in zip(first, self.policy.generate([prompts[i] for i in first], **kw)):
                out[i] = g
        fb_prompts = [self.feedback_prompt(prompts[i]) for i in refine]
        fb_kw = dict(kw, max_new_tokens=min(self.feedback_tokens, kw.get("max_new_tokens", self.feedback_tokens)), stop=(END, DONE))
        feedback = [_clean_feedback(g.text) for g in self.policy.generate(fb_prompts, **fb_kw)]
        bridges = [f"{fb}\n{END}{REFINE_INSTRUCTION}" for fb in feedback]
        revisions = self.policy.generate([fp + b for fp, b in zip(fb_prompts, bridges)], **kw)
        for i, bridge, g in zip(refine, bridges, revisions):
            out[i] = Generation(text=bridge + g.text, prompt_ids=g.prompt_ids, completion_ids=g.completion_ids, finish_reason=g.finish_reason)
        return out


def main(argv: list[str] | None = None) -> int:
    """python -m cocos.selfrefine --config configs/self_refine.yaml --out DIR [--set key=value ...]"""
    import argparse
    import sys

    from cocos.evaluate import EvalConfig, run_eval

    ap = argparse.ArgumentParser(prog="python -m cocos.selfrefine", description="Self-Refine baseline evaluation")
    ap.add_argument("--config", default=None, help="YAML of cocos eval settings (configs/self_refine.yaml)")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    try:
        from cocos.train.config import apply_overrides, build_config, read_config_file

        values = apply_overrides(read_config_file(args.config, example="configs/self_refine.yaml"), args.set)
        from cocos import selfrefine  # the module the rollout imports (this file may run as __main__)

        selfrefine._FEEDBACK_TOKENS = int(values.pop("feedback_tokens", selfrefine._FEEDBACK_TOKENS))
        if "out" in values:
            raise UserError("out: pass the run folder with --out")
        values["prompt_format"] = "self-refine"
        run_eval(build_config({**values, "out": args.out}, EvalConfig, what="setting (cocos eval's options, or feedback_tokens)"))
    except UserError as e:
        print(f"cocos.selfrefine: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/metrics.json, {args.out}/samples.jsonl, {args.out}/config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
