"""The curriculum (`curriculum_k` > 0): train only on problems where the starting model's turn-1 samples leave
something to learn, by one of two rules (`curriculum_rule`):

    variance   the k samples earned different rewards (turn-1 RLOO has a signal)
    partial    some sample failed a test and some sample passed one: the problems are neither always solved nor
               never touched, so a second turn has something to fix and a model that can fix it (a problem whose
               samples all pass 1 of 3 tests is kept here, not under `variance`)
"""

from __future__ import annotations

import json
from pathlib import Path

from cocos.config import CHOICES
from cocos.episodes.rewards import turn_reward
from cocos.errors import UserError


RULES = {
    "variance": lambda rewards: max(rewards) > min(rewards),
    "partial": lambda rewards: min(rewards) < 1.0 and max(rewards) > 0.0,
}


def keep_problems(cfg, problems: list, out: Path, sample, *, resume: bool, is_main: bool = True) -> list:
    """Keep the training problems on which the starting model's turn-1 samples earned different rewards.

    A problem whose k samples all earn the same reward (usually all 0 for a small model) gives RLOO no
    signal: with skip_uniform_groups it costs a rollout and trains nothing. The choice is made once, with
    the model the run starts from, and saved (OUT/curriculum.json), so a resumed run trains on the same problems.

    cfg: the TrainConfig (curriculum_k, curriculum_rule, curriculum_from, seed); `sample(problems, k, seed)`: k
    one-turn trajectories per problem from the starting model (the trainer's episodes); is_main: this process
    writes the file and prints.
    """
    path = out / "curriculum.json"
    if resume and path.exists():
        data = json.loads(path.read_text())
        kept = data["kept"]
    elif cfg.curriculum_from:
        kept, data = reuse(problems, Path(cfg.curriculum_from), path, is_main=is_main)
    else:
        trajs = sample(problems, cfg.curriculum_k, cfg.seed)
        rewards: dict = {}
        for t in trajs:
            rewards.setdefault(str(t.task_id), []).append(round(t.rewards[0], 4))
        kept = [tid for tid, r in rewards.items() if RULES[cfg.curriculum_rule](r)]
        data = {"k": cfg.curriculum_k, "rule": cfg.curriculum_rule, "problems": len(rewards), "kept": kept,
                "turn1_rewards": rewards}
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1))
    # the rule the file was chosen by (a copied or resumed one may differ from this config's; older files: the config's)
    rule, k = data.get("rule", cfg.curriculum_rule), data.get("k", cfg.curriculum_k)
    if not kept:
        if is_main:
            print(f"cocos: curriculum: no training problem passed the {rule} rule over {k} samples; training on all "
                  "of them")
        return problems
    if is_main:
        print(f"cocos: curriculum: {len(kept)} of {len(problems)} training problems passed the "
              f"{rule} rule over {k} turn-1 samples; training on those ({path})")
    keep = set(kept)
    return [p for p in problems if str(p.task_id) in keep]


def reuse(problems: list, source: Path, path: Path, *, is_main: bool = True) -> tuple[list, dict]:
    """The kept ids of a curriculum.json written by another run (`curriculum_from`), copied to this run's `path`,
    and the file's record."""
    try:
        data = json.loads(source.read_text())
        kept = [str(t) for t in data["kept"]]
    except FileNotFoundError:
        raise UserError(f"curriculum_from: {source} does not exist (a run with curriculum_k > 0 writes OUT/curriculum.json)")
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"curriculum_from: {source} is not a curriculum.json (a JSON object with a 'kept' list of task ids)")
    ids = {str(p.task_id) for p in problems}
    missing = [t for t in kept if t not in ids]
    if missing and is_main:
        print(f"cocos: curriculum: {len(missing)} kept id(s) of {source} are not among this run's training problems "
              f"(e.g. {missing[0]}); they are left out")
    if is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**data, "from": str(source)}, indent=1))
    return kept, data


# ---- choosing a rule: which selection leaves turn 2 more to learn -----------------------------------------------
def turn_rewards(sample: dict, reward: str | None) -> list[float]:
    """A sample's per-turn rewards: as recorded (reward None), or rescored from its tests passed by a reward kind
    (a run with reward=binary keeps the problems that rule leaves under binary rewards)."""
    return [t["reward"] if reward is None else turn_reward(t["passed"], t["total"], reward) for t in sample["turns"]]


def rule_signal(samples: list[dict], reward: str | None = None) -> dict:
    """For each rule, from k two-turn samples per problem (`cocos eval --samples-per-problem k --temperature 0.9
    --turns 2`'s samples.jsonl records), the problems it keeps and how much signal turn 2 has on them, under the
    recorded rewards or those of `reward` (a kind of cocos.episodes.rewards.turn_reward).

    -> {rule: {"kept", "turn1_signal", "turn2_signal", "turn2_improves"}} with rule in RULES and "all": the share of
    kept problems whose k turn-1 (turn-2) rewards differ, and the share of their samples whose turn-2 reward is above
    their turn-1 reward.
    """
    groups: dict[str, list[list[float]]] = {}
    for s in samples:
        groups.setdefault(str(s["task_id"]), []).append(turn_rewards(s, reward))
    out = {}
    for rule, keep in {"all": lambda r: True, **RULES}.items():
        kept = [g for g in groups.values() if keep([r[0] for r in g])]
        n = len(kept) or 1
        out[rule] = {
            "kept": len(kept),
            "turn1_signal": sum(len({r[0] for r in g}) > 1 for g in kept) / n,
            "turn2_signal": sum(len({r[-1] for r in g}) > 1 for g in kept) / n,
            "turn2_improves": sum(r[-1] > r[0] for g in kept for r in g) / max(1, sum(len(g) for g in kept)),
        }
    return out


def curriculum_from_samples(samples: list[dict], rule: str, reward: str | None = None) -> dict:
    """A curriculum.json (for `curriculum_from`) from two-turn samples: the problems whose turn-1 rewards (as
    recorded, or under `reward`) pass `rule`."""
    rewards: dict[str, list[float]] = {}
    for s in samples:
        rewards.setdefault(str(s["task_id"]), []).append(round(turn_rewards(s, reward)[0], 4))
    kept = [tid for tid, r in rewards.items() if RULES[rule](r)]
    k = max((len(r) for r in rewards.values()), default=0)
    return {"k": k, "rule": rule, "problems": len(rewards), "kept": kept, "turn1_rewards": rewards,
            **({"reward": reward} if reward else {})}


def main(argv: list[str] | None = None) -> int:
    """python -m cocos.rl.curriculum SAMPLES.jsonl [--rule partial --out curriculum.json]: each rule's kept
    problems and their turn-2 signal; with --out, the chosen rule's curriculum.json."""
    import argparse

    from cocos.eval.runs import read_jsonl

    ap = argparse.ArgumentParser(prog="python -m cocos.rl.curriculum", description=main.__doc__)
    ap.add_argument("samples", type=Path)
    ap.add_argument("--rule", choices=sorted(RULES), default="partial")
    ap.add_argument("--reward", choices=CHOICES["reward"], default=None,
                    help="rescore the samples' turns by this reward kind (default: the rewards they were sampled with)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not args.samples.is_file():
        raise SystemExit(f"{args.samples}: no such samples file (cocos eval writes OUT/samples.jsonl)")
    samples = read_jsonl(args.samples)
    table = rule_signal(samples, args.reward)
    print(json.dumps(table, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(curriculum_from_samples(samples, args.rule, args.reward), indent=1))
        (args.out.parent / "rule_signal.json").write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
