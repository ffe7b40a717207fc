"""Training a Self-Corrector (Welleck et al. 2023; the method, its data and its actor: `actor` beside this module).

    cfg = load_self_corrector_config("configs/self_corrector.yaml", ["limit=20"])
    run_self_corrector(cfg, "runs/sc")     # cocos self-corrector --config ... --out runs/sc

Steps:
1. the generator (`model`) samples `samples` answers per training problem; each is run against its tests and
   goes into the data pool with its value (`reward`); with `include_reference` the reference solution too;
2. the corrector starts from `corrector_init` (default: the generator's checkpoint, a separate copy);
3. fit 0: value-improving pairs of the pool (gain above `min_gain`), at most `max_pairs` drawn by improvement and
   proximity (`alpha`, `beta`), fine-tuned on with TRL's SFTTrainer (loss on the corrected code only);
4. each of `rounds` exploration rounds: the corrector corrects `corrections_per_problem` hypotheses per problem
   (temperature `explore_temperature`), the corrections are run and added to the pool, then a fit as in 3.

The run folder OUT: the generator's checkpoint at OUT itself (so `cocos eval --model OUT` loads it), the corrector
in OUT/corrector/, pool.jsonl (every hypothesis: code, value, source), pairs_round_<r>.jsonl (each fit's examples),
stats.json (counts per round: pool size, pairs, corrections that improved), self_corrector_config.yaml, and
rounds/round_<r>/log.jsonl (the trainer's logs).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from cocos.baselines.self_corrector.actor import (CORRECTOR_DIR, Hypothesis, Pool, corrector_prompt,
                                                  hypotheses_to_correct, pair_example, select_pairs,
                                                  value_improving_pairs)
from cocos.errors import UserError
from cocos.finetune.baseline_train import (BaselineTrainConfig, drop_long, load_baseline_config, own_answers, start_run,
                                           write_jsonl)
from cocos.generation.sampling import Sampling


@dataclass
class SelfCorrectorConfig(BaselineTrainConfig):
    corrector_init: str | None = None  # the corrector's starting checkpoint; None: the generator's (`model`)
    include_reference: bool = False  # also put each problem's reference solution into the pool (not in the paper)
    min_gain: float = 0.0  # a pair needs v(y') - v(y) above this
    max_pairs: int | None = None  # examples per fit, drawn from the value-improving pairs; None: all of them
    alpha: float = 1.0  # weight of the improvement when drawing pairs
    beta: float = 1.0  # weight of the proximity (edit similarity) when drawing pairs
    rounds: int = 1  # exploration rounds after the first fit
    corrections_per_problem: int = 2  # hypotheses the corrector corrects per problem each round
    explore_temperature: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if self.rounds < 0:
            raise UserError(f"rounds: must be 0 or more (got {self.rounds})")
        if self.corrections_per_problem < 1:
            raise UserError(f"corrections_per_problem: must be at least 1 (got {self.corrections_per_problem})")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise UserError(f"max_pairs: must be a positive number or null (got {self.max_pairs})")
        if self.explore_temperature < 0:
            raise UserError(f"explore_temperature: must be >= 0 (got {self.explore_temperature})")


def load_self_corrector_config(path, overrides: list[str] | None = None) -> SelfCorrectorConfig:
    return load_baseline_config(SelfCorrectorConfig, path, overrides, example="configs/self_corrector.yaml")


def score_codes(problems_and_codes: list, cfg: BaselineTrainConfig, source: str) -> list[Hypothesis]:
    """(problem, code) pairs -> Hypotheses with their values, one sandbox batch."""
    from cocos.episodes.rollout import score_responses

    trajs = score_responses([(p, [f"{code}\n[DONE]"]) for p, code in problems_and_codes], reward=cfg.reward,
                            timeout=cfg.timeout, extraction=cfg.extraction)
    return [Hypothesis(p.task_id, tr.turns[0].code, tr.turns[0].reward, tr.turns[0].n_passed, len(tr.turns[0].outcomes),
                       source) for (p, _), tr in zip(problems_and_codes, trajs)]


def explore(corrector, pool: Pool, problems: list, cfg: SelfCorrectorConfig, rnd: int, rng: random.Random) -> dict:
    """One exploration round: corrections of hypotheses drawn from the pool, run and added to it. -> counts."""
    by_id = {p.task_id: p for p in problems}
    drafts = hypotheses_to_correct(pool, list(by_id), cfg.corrections_per_problem, rng)
    gens = corrector.generate([corrector_prompt(by_id[h.task_id], h.code) for h in drafts],
                              Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.explore_temperature,
                                       top_p=cfg.top_p, seed=cfg.seed + 1000 * rnd))
    from cocos.data.prompts import extract_code

    scored = score_codes([(by_id[h.task_id], extract_code(g.text, cfg.extraction)) for h, g in zip(drafts, gens)], cfg,
                         f"corrector round {rnd}")
    improved = sum(new.value > old.value for old, new in zip(drafts, scored))
    added = sum(pool.add(h) for h in scored)
    return {"corrected": len(drafts), "improved": improved, "new_in_pool": added}


def fit(corrector, examples: list[dict], cfg: SelfCorrectorConfig, folder: Path) -> None:
    from cocos.finetune.sft import make_trainer
    from cocos.generation.device import sdpa_without_cudnn

    model = corrector.model
    folder.mkdir(parents=True, exist_ok=True)
    model.train()
    trainer = make_trainer(model, corrector.tokenizer, examples, cfg.sft_config(), folder)
    with sdpa_without_cudnn(next(model.parameters()).device):
        trainer.train()
    model.eval()


def run_self_corrector(cfg: SelfCorrectorConfig, out_dir: str | Path) -> Path:
    from cocos.data.problems import load_problems
    from cocos.generation.policy import load_policy

    out = start_run(out_dir, cfg, "self_corrector_config.yaml")
    if (out / CORRECTOR_DIR / "config.json").exists():
        raise UserError(f"{out}/{CORRECTOR_DIR} already holds a corrector: pick another --out")
    problems = load_problems(cfg.dataset, cfg.split, cfg.limit)
    generator = load_policy(cfg.model, dtype=cfg.dtype, backend=cfg.backend, rollout_dtype=cfg.rollout_dtype)
    pool = Pool()
    pool.add_trajectories(own_answers(generator, problems, cfg, seed=cfg.seed), "generator")
    if cfg.include_reference:
        for h in score_codes([(p, p.reference.strip()) for p in problems if p.reference], cfg, "reference"):
            pool.add(h)
    # the generator is saved now and freed: the corrector is a separate model
    generator.model.save_pretrained(str(out))
    generator.tokenizer.save_pretrained(str(out))
    del generator
    corrector = load_policy(cfg.corrector_init or cfg.model, dtype=cfg.dtype, backend=cfg.backend,
                            rollout_dtype=cfg.rollout_dtype)
    by_id = {p.task_id: p for p in problems}
    rng = random.Random(cfg.seed)
    stats = []
    for rnd in range(cfg.rounds + 1):
        row = {"round": rnd}
        if rnd > 0:
            row |= explore(corrector, pool, problems, cfg, rnd, rng)
        pairs = value_improving_pairs(pool, cfg.min_gain)
        chosen = select_pairs(pairs, cfg.max_pairs, rng, cfg.alpha, cfg.beta)
        examples, n_long = drop_long([pair_example(by_id[p.task_id], p) for p in chosen], corrector.tokenizer,
                                     cfg.max_length, ("completion",))
        row |= {"pool": len(pool), "value_improving_pairs": len(pairs), "examples": len(examples),
                "dropped_too_long": n_long}
        write_jsonl(out / f"pairs_round_{rnd}.jsonl", examples)
        stats.append(row)
        if cfg.progress:
            print("self-corrector:", json.dumps(row))
        if not examples:
            if rnd == 0:
                raise UserError("self-corrector: the generator's samples hold no value-improving pair (every answer of a "
                                "problem earned the same reward): raise samples, temperature or limit, or set "
                                "include_reference=true")
            continue
        fit(corrector, examples, cfg, out / "rounds" / f"round_{rnd}")
    corrector.model.save_pretrained(str(out / CORRECTOR_DIR))
    corrector.tokenizer.save_pretrained(str(out / CORRECTOR_DIR))
    write_jsonl(out / "pool.jsonl", pool.records())
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return out
