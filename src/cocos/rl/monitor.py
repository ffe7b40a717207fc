"""What the trainer watches: per-step statistics (log.jsonl), the failure signatures of the paper (watchdog),
generation time, and memory handed back between steps.

Correction monitors (turn 1 against the last turn T of each trajectory):
    copy_if_wrong   share of the trajectories whose turn 1 fails that copy it at turn T (edit similarity
                     >= COPY_SIMILARITY): the "no revision" behaviour that keeps delta_i2c at 0
    delta_i2c/c2i    share of all trajectories wrong at turn 1 and right at turn T, and the reverse
    edit_sim_if_wrong  edit similarity of turn 1 and turn T where turn 1 fails (_if_right: where it passes)
    keep_selectivity AUROC: the chance that a trajectory right at turn 1 keeps more of it at turn T than one wrong
                     at turn 1 (0.5: turn T rewrites right and wrong alike; selective correction is above 0.5)
    confidence_auroc AUROC of turn 1's mean token log-prob (under the sampler) for right against wrong: whether
                     the policy could tell which turn-1 answers to revise
    turnT_signal     share of groups (the k samples of a problem) whose turn-T rewards differ: the groups where
                     the last turn's reward can rank samples at all
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from cocos.eval.metrics import COPY_SIMILARITY, auroc


def mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs) / len(xs)) if xs else 0.0


def std(xs) -> float:
    xs = list(xs)
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


class TimedPolicy:
    """Wraps a Policy so the trainer can split rollout time into generating and executing."""

    def __init__(self, policy):
        self._policy, self.gen_time, self.gen_tokens = policy, 0.0, 0

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def generate(self, prompts, *args, **kw):
        t = time.perf_counter()
        out = self._policy.generate(prompts, *args, **kw)
        self.gen_time += time.perf_counter() - t
        self.gen_tokens += sum(len(g.completion_ids) for g in out)
        return out


# ---- failure signatures (the paper's, section on reward hacking) --------------------------------
@dataclass
class Watchdog:
    window: int = 5
    kl_max: float = 20.0
    edit_sim_max: float = 0.98
    copy_max: float = 0.9  # share of wrong turn-1 answers copied at turn T above which "no revision" is named
    hardcoded_max: float = 0.2  # share of turn-T answers returning a shown test's expected value: a reward hack
    sandbag_gap: float = 0.1  # turn T's reward this far above turn 1's, turn 1's halved: turn 1 gives up its answers
    history: list[dict] = field(default_factory=list)

    def check(self, stats: dict) -> list[str]:
        self.history.append(stats)
        h, w, out = self.history, self.window, []
        if stats["kl"] is not None and stats["kl"] > self.kl_max:
            out.append(f"KL to the reference is exploding: {stats['kl']:.2f} nats per trajectory (> {self.kl_max})")
        T = stats["turns"]
        if T >= 2 and len(h) >= 2 * w:
            old, new = h[-2 * w:-w], h[-w:]
            d1 = mean(s["reward@1"] for s in new) - mean(s["reward@1"] for s in old)
            dT = mean(s[f"reward@{T}"] for s in new) - mean(s[f"reward@{T}"] for s in old)
            if d1 < -0.05 and dT > 0.05:
                out.append(f"reward hacking? turn-1 reward falls ({d1:+.3f}) while turn-{T} reward rises ({dT:+.3f}) "
                           f"over the last {w} steps")
        if T >= 2 and len(h) >= 4 * w:
            # Over 2w steps: turn 1's reward below half its best earlier 2w-step mean, turn T's well above it. With
            # gamma < 1 the accumulated reward pays wrong -> right (1) more than right -> right (gamma), so turn 1
            # can learn to answer wrong where turn T knows the answer; the turn-1 -> T rise of "reward hacking?"
            # above misses it when turn T only holds its level.
            span = 2 * w
            r1 = [s["reward@1"] for s in h]
            best = max(mean(r1[i:i + span]) for i in range(len(h) - 2 * span + 1))
            now = mean(r1[-span:])
            gap = mean(s[f"reward@{T}"] for s in h[-span:]) - now
            if now < 0.5 * best and gap > self.sandbag_gap:
                out.append(f"turn 1 gives up its answers: its reward is {now:.3f} over the last {span} steps (it "
                           f"reached {best:.3f}) while turn {T}'s is {gap:+.3f} above it. The accumulated reward with "
                           "gamma < 1 pays a wrong turn 1 that a later turn fixes more than a right one: gamma >= 1 or "
                           "last-turn mode (turn 1 not trained) removes the incentive, a stronger KL on turn 1 "
                           "(SCoRe's score_beta1) restrains it")
        if T >= 2 and len(h) >= w and all(s.get(f"edit_sim(1,{T})", 0) > self.edit_sim_max for s in h[-w:]):
            out.append(f"no revision: edit similarity of turns 1 and {T} above {self.edit_sim_max} for {w} steps")
        copies = [s.get("copy_if_wrong") for s in h[-w:]]
        if T >= 2 and len(h) >= w and all(c is not None and c >= self.copy_max for c in copies):
            out.append(f"no revision behaviour (the paper's failure signature): turn {T} copies {mean(copies):.0%} of "
                       f"the wrong turn-1 answers (edit similarity >= {COPY_SIMILARITY}) over the last {w} steps, so it "
                       "cannot correct them")
        echoes = [s.get(f"hardcoded@{T}") for s in h[-w:]]
        if len(h) >= w and all(e is not None and e >= self.hardcoded_max for e in echoes):
            out.append(f"reward hacking: {mean(echoes):.0%} of the turn-{T} answers return a value that a test shown in "
                       f"the prompt expects, over the last {w} steps (a hard-coded literal earns that test's share of "
                       "the progressive reward)")
        if len(h) >= 2 * w:
            first = mean(s["reward_mean"] for s in h[:w])
            last = mean(s["reward_mean"] for s in h[-w:])
            if first > 0.02 and last < 0.1 * first:
                out.append(f"reward collapsed: mean reward {last:.3f} over the last {w} steps (was {first:.3f})")
        return out


# ---- step statistics (one log.jsonl line) -------------------------------------------------------
def trajectory_stats(traj, score: float, advantage: float, kl: list[float] | None,
                     turn_advantages: list[float | None], problem=None) -> dict:
    """What the step's statistics need of one trajectory, with its score, advantage, per-turn KL (None: not
    trained) and per-turn advantages (None on turns not trained) from its batch; `problem` (its shown tests) says
    which turns return a value a shown test expects."""
    from cocos.eval.metrics import edit_similarity, returns_shown_value

    T = len(traj.turns)
    return {
        # None without the problem: not measured (0 would say "measured, none")
        "hardcoded": None if problem is None else [returns_shown_value(tr.code, problem) for tr in traj.turns],
        "task_id": traj.task_id, "sample": traj.sample_index,
        "rewards": traj.rewards, "correct": [tr.all_passed for tr in traj.turns],
        "lengths": [len(tr.completion_ids) for tr in traj.turns],
        "confidence": [tr.mean_logprob for tr in traj.turns],
        "edit_sim": edit_similarity(traj.turns[0].code, traj.turns[-1].code) if T > 1 else 1.0,
        "score": score, "advantage": advantage, "kl": kl,
        "trained": kl is not None,
        "turn_advantages": turn_advantages,  # None on turns not trained
    }


def batch_trajectory_stats(batch, problems: dict | None = None) -> list[dict]:
    """trajectory_stats of every trajectory of an updated batch (cocos.rl.batch.Batch), in its order; `problems`
    maps task ids to their problems."""
    rows = zip(batch.trajectories, batch.scores().tolist(), batch.trajectory_advantages(), batch.kl(),
               batch.turn_advantages())
    problems = problems or {}
    return [trajectory_stats(traj, score, adv, kl, turn_adv, problems.get(traj.task_id))
            for traj, score, adv, kl, turn_adv in rows]


def correction_stats(local: list[dict], T: int, k: int) -> dict:
    """The correction monitors (module docstring) of one step's trajectories, in groups of k consecutive ones."""
    if T < 2:
        return {}
    wrong1 = [d for d in local if not d["correct"][0]]
    right1 = [d for d in local if d["correct"][0]]
    groups = [local[g:g + k] for g in range(0, len(local), k)]
    selectivity = auroc([d["edit_sim"] for d in right1], [d["edit_sim"] for d in wrong1])
    confident = None
    if all(d.get("confidence") and d["confidence"][0] is not None for d in local):
        confident = auroc([d["confidence"][0] for d in right1], [d["confidence"][0] for d in wrong1])
    return {
        "copy_if_wrong": mean(float(d["edit_sim"] >= COPY_SIMILARITY) for d in wrong1) if wrong1 else None,
        "delta_i2c": mean(float(not d["correct"][0] and d["correct"][-1]) for d in local),
        "delta_c2i": mean(float(d["correct"][0] and not d["correct"][-1]) for d in local),
        "edit_sim_if_wrong": mean(d["edit_sim"] for d in wrong1) if wrong1 else None,
        "edit_sim_if_right": mean(d["edit_sim"] for d in right1) if right1 else None,
        "keep_selectivity": selectivity[0] if selectivity else None,
        "confidence_auroc": confident[0] if confident else None,
        f"turn{T}_signal": mean(float(len({d["rewards"][-1] for d in g}) > 1) for g in groups),
    }


def turn_advantage_stats(local: list[dict], T: int) -> dict:
    """adv_rms@t: root mean square of turn t's advantages over the trajectories whose turn t was trained (None when
    none was). Under per-turn credit, how much signal each turn's tokens get."""
    stats = {}
    for t in range(T):
        xs = [d["turn_advantages"][t] for d in local
              if d.get("turn_advantages") is not None and d["turn_advantages"][t] is not None]
        stats[f"adv_rms@{t + 1}"] = math.sqrt(mean(x * x for x in xs)) if xs else None
    return stats


def step_stats(local: list[dict], timing_all: list[dict], T: int, time_step: float, k: int = 1) -> dict:
    """Rewards, accuracy, lengths, scores, KL, log-prob gaps, advantages, correction monitors and timings of one step,
    over every rank's trajectories (`local`, from trajectory_stats, in groups of k) and timings."""
    stats = {}
    for t in range(T):
        stats[f"reward@{t + 1}"] = mean(d["rewards"][t] for d in local)
        stats[f"acc@{t + 1}"] = mean(float(d["correct"][t]) for d in local)
        stats[f"length@{t + 1}"] = mean(d["lengths"][t] for d in local)
        echoes = [float(d["hardcoded"][t]) for d in local if d.get("hardcoded") is not None]
        stats[f"hardcoded@{t + 1}"] = mean(echoes) if echoes else None
    stats["reward_mean"] = mean(mean(d["rewards"]) for d in local)
    stats["score"] = mean(d["score"] for d in local)
    if T > 1:
        stats[f"edit_sim(1,{T})"] = mean(d["edit_sim"] for d in local)
    stats.update(correction_stats(local, T, k))
    # KL over the trajectories that were trained on, in total and per turn (SCoRe's collapse is a turn-1 curve);
    # None (null in log.jsonl) when the step trained none (skip_uniform_groups): not measured, where 0.0 would say
    # "at the reference" and pull a sparse-reward run's KL curve toward 0
    trained = [d for d in local if d["trained"]]
    stats["kl"] = mean(sum(d["kl"]) for d in trained) if trained else None
    for t in range(T):
        stats[f"kl@{t + 1}"] = mean(d["kl"][t] for d in trained) if trained else None
    # |sampler log-prob - trainer log-prob| per trained token: ~0 when on-policy (bf16 rollouts or autocast
    # make it grow; a large value means the update is not on the distribution that sampled)
    gap_n = sum(x["gap_n"] for x in timing_all)
    stats["logprob_gap_mean"] = sum(x["gap_sum"] for x in timing_all) / gap_n if gap_n else 0.0
    stats["logprob_gap_max"] = max(x["gap_max"] for x in timing_all)
    stats["trained_frac"] = mean(float(d["trained"]) for d in local)
    stats["entropy"] = mean(x["entropy"] for x in timing_all)
    advs = [d["advantage"] for d in local]
    stats.update({"adv_mean": mean(advs), "adv_std": std(advs), "adv_min": min(advs), "adv_max": max(advs),
                  "adv_zero_frac": mean(float(abs(a) < 1e-8) for a in advs)})
    gen = max(x["gen"] for x in timing_all)
    rollout = max(x["rollout"] for x in timing_all)
    stats.update({"time_generate": gen, "time_execute": max(0.0, rollout - gen),
                  "time_train": max(x["train"] for x in timing_all), "time_step": time_step,
                  "gen_tokens": sum(x["tokens"] for x in timing_all)})
    stats["tokens_per_s"] = stats["gen_tokens"] / gen if gen > 0 else 0.0
    stats["n_trajectories"] = len(local)
    return stats


# ---- the console --------------------------------------------------------------------------------
def progress_text(stats: dict) -> str:
    """The progress bar's line of a step: rewards per turn, the correction monitors, KL, seconds per step."""
    T = stats["turns"]
    return (" ".join(f"r{t}={stats[f'reward@{t}']:.3f}" for t in range(1, T + 1)) + correction_text(stats)
            + f" kl={kl_text(stats['kl'], 3)} {stats['time_step']:.0f}s/step")


def correction_text(stats: dict) -> str:
    """The console's correction monitors: wrong turn-1 answers copied, and the batch's i->c / c->i."""
    if "delta_i2c" not in stats:
        return ""
    copy = stats["copy_if_wrong"]
    return (f" copy={'n/a' if copy is None else f'{copy:.0%}'} i2c={stats['delta_i2c']:.3f}"
            f" c2i={stats['delta_c2i']:.3f}")


def kl_text(kl: float | None, digits: int) -> str:
    return "n/a (no group trained)" if kl is None else f"{kl:.{digits}f}"
