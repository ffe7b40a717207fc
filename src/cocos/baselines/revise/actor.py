"""ReVISE (Lee et al. 2025, "Learning to Refine at Test-Time via Intrinsic Self-Verification"): the model checks its
own answer and, when it judges it wrong, emits a refine token and writes a corrected answer.

    cocos revise --config configs/revise.yaml --out runs/revise        (training: `train` beside this)
    cocos eval --model runs/revise --actor revise --out runs/revise_eval

One episode is one sequence. After an answer ("{code}\\n[DONE]") the model's next token is its verdict: end of
sequence (the answer stands) or REFINE ("[REFINE]", a token added to the tokenizer and saved with the checkpoint),
after which it writes a new answer:

    turn-1 prompt  code_1 \\n[DONE]  [REFINE] \\n  code_2 \\n[DONE]  [REFINE] \\n  code_3 \\n[DONE]  <eos>

Turn t > 1 (`ReviseActor`): the verification context is the zero-shot turn-1 prompt, then each earlier answer as
its extracted code + "\\n[DONE]", joined by "[REFINE]\\n" (`verify_context`). One token is generated from it. If
it is REFINE, the model writes turn t from the context + "[REFINE]\\n" (the turn's recorded prompt). Otherwise the
turn is unrefined: it keeps the previous turn's text (so the same code runs and earns the same reward, and
Δ, Δi→c and Δc→i count it as unchanged), its recorded prompt is the verification context (no REFINE at its end),
and every later turn of that episode is unrefined too (the sequence has ended).

Training data (`verify_pairs`, `correct_pairs`; prompts are verification contexts, TRL's DPO trainer appends EOS to
every chosen and rejected text, so "" means "stop here"):
- stage 1, verify: each of the model's own answers; right -> chosen "" (stop), rejected REFINE; wrong -> chosen
  REFINE, rejected "".
- stage 2, correct (from the stage-1 model's own answers): a wrong answer -> chosen REFINE + a right answer of the
  same problem (the first right sample, else the reference solution when `reference_fallback`), rejected REFINE +
  another wrong sample of the problem (else the same wrong answer again); a right answer, when the problem also
  has a wrong sample -> chosen "" (keep it), rejected REFINE + that wrong answer.
Because of that EOS, stage 1's chosen "[REFINE]" also raises EOS right after the token; stage 2 then trains what
follows the token, and at inference the context always continues with "\n" after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocos.data.prompts import DONE, first_turn_prompt
from cocos.episodes.actors import PolicyActor
from cocos.episodes.records import Draft
from cocos.errors import UserError
from cocos.generation.sampling import Generation, Sampling, repeat_each

REFINE = "[REFINE]"
REFINE_SUFFIX = f"{REFINE}\n"  # what the model's context gets after the token: the new answer starts on a new line


# ---- the token ----------------------------------------------------------------------------------
def add_refine_token(model, tokenizer) -> int:
    """Add REFINE to the tokenizer (a plain added token: it decodes as itself) and grow the model's embeddings. -> its id.

    The new output row is a copy of EOS's: REFINE is the alternative to stopping, so it starts exactly as likely as
    EOS wherever the model would stop, and the verdict is then what training makes it (from the default mean row it
    would start far below EOS, and a short DPO run never brings it up: measured on SmolLM2-135M, 8 steps at 1e-5).
    The new input row is the mean of the old ones (transformers' default), unless the model ties the two."""
    import torch
    from tokenizers import AddedToken

    if REFINE not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(REFINE, normalized=False, special=False)])
    token_id = tokenizer.convert_tokens_to_ids(REFINE)
    if model.get_input_embeddings().weight.shape[0] <= token_id:
        model.resize_token_embeddings(len(tokenizer))
        head = model.get_output_embeddings()
        eos = tokenizer.eos_token_id
        if eos is not None:
            with torch.no_grad():
                head.weight[token_id] = head.weight[eos]
                if getattr(head, "bias", None) is not None:
                    head.bias[token_id] = head.bias[eos]
    return token_id


def refine_token_id(tokenizer) -> int | None:
    return tokenizer.get_vocab().get(REFINE) if tokenizer is not None else None


# ---- contexts -----------------------------------------------------------------------------------
def verify_context(problem, codes: list[str]) -> str:
    """The sequence up to the model's verdict on its last answer `codes[-1]`."""
    if not codes:
        raise ValueError("verify_context needs at least one answer")
    return first_turn_prompt(problem) + "".join(f"{c}\n{DONE}{REFINE_SUFFIX}" for c in codes[:-1]) + f"{codes[-1]}\n{DONE}"


def answer(code: str) -> str:
    """An answer as the model writes it after [BEGIN] or REFINE."""
    return f"{code.strip()}\n{DONE}"


def refined(code: str) -> str:
    """A refinement as a completion of a verification context: the token, then the new answer."""
    return REFINE_SUFFIX + answer(code)


# ---- the actor ----------------------------------------------------------------------------------
class ReviseActor:
    """Turn 1: the policy's answer. Turn t > 1: refine only after the model emits REFINE (module docstring)."""

    def __init__(self, policy, settings, require_token: bool = True):
        if settings.prompt_format != "paper":
            raise UserError("actor revise works on the paper prompt format only; set prompt_format=paper")
        self.policy = policy
        self.first = PolicyActor(policy, settings)
        self.token_id = refine_token_id(getattr(policy, "tokenizer", None))
        if self.token_id is None and require_token:
            raise UserError(f"actor revise: the model has no {REFINE} token, so it can never refine; evaluate a folder "
                            "written by `cocos revise` (--model RUN), or pass --actor-arg require_token=false to "
                            "evaluate a model without it (every episode then stops at its first answer)")

    @staticmethod
    def ended(history) -> bool:
        """Whether the episode's sequence has ended: its last turn was left unrefined."""
        return len(history) >= 2 and not history[-1].prompt.endswith(REFINE_SUFFIX)

    def write(self, problems, histories, sampling: Sampling, n: int = 1) -> list[Draft]:
        if not histories[0]:  # turn 1: the policy's own answer
            return self.first.write(problems, histories, sampling, n=n)
        problems, histories = repeat_each(problems, n), repeat_each(histories, n)  # each sample its own verdict
        live = [i for i, hist in enumerate(histories) if not self.ended(hist)]
        # an ended episode's context stays the one its last verdict was given on
        contexts = [hist[-1].prompt if self.ended(hist) else verify_context(p, [h.code for h in hist])
                    for p, hist in zip(problems, histories)]
        verdict = Sampling(max_new_tokens=1, temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
                           stop=())
        refine = [i for i, g in zip(live, self._generate([contexts[i] for i in live], verdict)) if self._is_refine(g)]
        drafts: list[Draft | None] = [None] * len(problems)
        for i, g in zip(refine, self._generate([contexts[i] + REFINE_SUFFIX for i in refine], sampling)):
            drafts[i] = Draft(contexts[i] + REFINE_SUFFIX, g)
        for i, hist in enumerate(histories):
            if drafts[i] is None:  # unrefined: the answer stands
                drafts[i] = Draft(contexts[i], Generation(text=hist[-1].text, finish_reason="eos"))
        return drafts

    def _is_refine(self, g: Generation) -> bool:
        if self.token_id is not None and g.completion_ids:
            return g.completion_ids[0] == self.token_id
        return g.text.startswith(REFINE)

    def _generate(self, prompts: list[str], s: Sampling) -> list[Generation]:
        return self.policy.generate(prompts, s) if prompts else []


# ---- training data ------------------------------------------------------------------------------
@dataclass
class Attempt:
    """One of the model's own answers with its verdict from the tests."""
    problem: object  # cocos.data.problems.Problem
    code: str
    correct: bool  # every test passed
    reward: float = 0.0


def attempts_from_trajectories(trajectories, problems) -> list[Attempt]:
    """Turn 1 of each trajectory as an Attempt; a problem's repeated code is kept once (it teaches nothing new)."""
    by_id = {p.task_id: p for p in problems}
    seen, out = set(), []
    for tr in trajectories:
        t1 = tr.turns[0]
        if (tr.task_id, t1.code) in seen:
            continue
        seen.add((tr.task_id, t1.code))
        out.append(Attempt(by_id[tr.task_id], t1.code, t1.all_passed, t1.reward))
    return out


def _pair(a: Attempt, chosen: str, rejected: str, kind: str) -> dict:
    return {"prompt": verify_context(a.problem, [a.code]), "chosen": chosen, "rejected": rejected, "kind": kind,
            "task_id": str(a.problem.task_id)}


def verify_pairs(attempts: list[Attempt]) -> list[dict]:
    """Stage 1: one pair per answer; the verdict token the tests call for is chosen, the other rejected."""
    return [_pair(a, "", REFINE, "verify_right") if a.correct else _pair(a, REFINE, "", "verify_wrong")
            for a in attempts]


def correct_pairs(attempts: list[Attempt], reference_fallback: bool = True) -> tuple[list[dict], dict]:
    """Stage 2 pairs (module docstring) and counts, including the wrong answers left without a right target."""
    groups: dict = {}
    for a in attempts:
        groups.setdefault(a.problem.task_id, []).append(a)
    pairs, stats = [], {"refine_to_right": 0, "keep_right": 0, "no_target": 0, "target_reference": 0}
    for group in groups.values():
        right = [a for a in group if a.correct]
        wrong = [a for a in group if not a.correct]
        reference = (group[0].problem.reference or "").strip()
        target = right[0].code if right else (reference if reference_fallback and reference else None)
        for a in wrong:
            if target is None:
                stats["no_target"] += 1
                continue
            other = next((w.code for w in wrong if w.code != a.code), a.code)
            pairs.append(_pair(a, refined(target), refined(other), "refine_to_right"))
            stats["refine_to_right"] += 1
            stats["target_reference"] += int(not right)
        for a in right:
            if wrong:
                pairs.append(_pair(a, "", refined(wrong[0].code), "keep_right"))
                stats["keep_right"] += 1
    return pairs, stats
