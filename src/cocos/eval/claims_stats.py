"""The statistics of the claims page (cocos.eval.claims): a difference between two arms over training seeds, its
standard error, and a verdict by the rule in RULE (paired over common seeds, else Welch; Student's t).

    d = diff({0: 0.31, 1: 0.28, 2: 0.35}, {0: 0.22, 1: 0.25, 2: 0.24})   # arm a - arm b, {seed: value} each
    verdict(d, +1) -> ("confirmed" | "contradicted" | "not measurable", why, what would decide it)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_SEEDS = 100  # past this many seeds per arm, "would resolve it" is no practical advice: say no effect is seen
# Student's t at 97.5% (two-sided 95%) by degrees of freedom: with 3 seeds (2 df) a difference must exceed 4.3 SE,
# not the normal 1.96: seeds are few, and their SE is itself a rough estimate
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
RULE = (
    "Each test compares a difference d with its standard error SE(d) over training seeds. Arms run with the same "
    "seeds are **paired**: a seed fixes the order of the training problems and the first samples, so each seed gives "
    "one difference (arm a − arm b, or one arm alone against 0), and d is their mean, SE(d) their standard "
    "deviation / sqrt(n), with n − 1 degrees of freedom. When the arms share at least 2 seeds but one ran more, "
    "the pairs of the shared seeds are compared and the others left out (the page says how many). Arms with fewer "
    "than 2 seeds in common are compared unpaired (Welch: SE(d) = sqrt(SE_a² + SE_b²), Welch–Satterthwaite degrees "
    "of freedom). A test is **confirmed** when d lies more "
    "than t SE(d) from 0 in the claimed direction, **contradicted** when it lies more than t SE(d) from 0 the other "
    "way, otherwise **not measurable at this scale**; t is Student's 97.5% quantile for those degrees of freedom "
    "(a two-sided 5% test: 4.30 with 3 paired seeds, 12.7 with 2). With fewer than 2 seeds the SE is unavailable, "
    "and when every seed gave the same value the SE is 0: in both cases the test is not measurable. A claim is "
    "confirmed when all its tests are, contradicted when any is, otherwise not measurable. Seeds needed: the "
    "smallest number of seeds per arm at which the observed d would pass the rule if the spread over seeds stays as "
    f"observed (past {MAX_SEEDS}, the page says no effect is seen). The SE over seeds measures the randomness of "
    "training (and of its sampling); every seed is evaluated on the same held-out problems, so it leaves out the "
    "choice of problems: a share of N problems carries a further binomial SE of up to 0.5/sqrt(N) (3.5 points at "
    "N = 200)."
)


# ---- statistics ---------------------------------------------------------------------------------
@dataclass
class Stat:
    n: int
    mean: float | None
    se: float | None  # None when n < 2
    df: float | None = None  # degrees of freedom of se (n - 1 for one arm or paired seeds; Welch's for unpaired)
    paired: bool = False  # a difference over seeds that both arms ran
    welch: bool = False  # a difference of two arms with too few seeds in common (unpaired)
    left_out: int = 0  # seeds that only one arm ran, left out of a paired difference

    def fmt(self, pct: bool = False, digits: int = 3) -> str:
        if self.mean is None:
            return "—"
        f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.{digits}f}")
        se = f" ± {f(self.se)}" if self.se is not None else " (SE n/a)"
        left = f", {self.left_out} unpaired seed(s) left out" if self.left_out else ""
        return f"{f(self.mean)}{se} (n={self.n}{', paired' if self.paired else ''}{left})"


def mean_se(xs) -> Stat:
    xs = [float(x) for x in xs if x is not None]
    n = len(xs)
    if not n:
        return Stat(0, None, None)
    m = sum(xs) / n
    if n < 2:
        return Stat(n, m, None)
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return Stat(n, m, math.sqrt(var / n), df=n - 1)


def t975(df: float) -> float:
    """Student's t 97.5% quantile; df rounded down (conservative); past 30 df the Cornish-Fisher expansion."""
    k = max(1, int(df))
    if k <= len(T975):
        return T975[k - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * k) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * k ** 2)


def diff(a: dict[int, float], b: dict[int, float] | None = None) -> Stat:
    """a - b over seeds ({seed: value} of each arm; b None: a against 0). Paired over the seeds both arms ran when
    there are >= 2 of them (the others left out: pairing removes the problems' difficulty, which dominates), else
    unpaired with Welch's SE and degrees of freedom; n = the smaller arm."""
    if b is None:
        return mean_se(a.values())
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        d = mean_se([a[s] - b[s] for s in common])
        d.paired, d.left_out = True, len(set(a) ^ set(b))
        return d
    sa, sb = mean_se(a.values()), mean_se(b.values())
    if sa.mean is None or sb.mean is None:
        return Stat(min(sa.n, sb.n), None, None)
    if sa.se is None or sb.se is None:
        return Stat(min(sa.n, sb.n), sa.mean - sb.mean, None)
    va, vb = sa.se ** 2, sb.se ** 2
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1)) if va + vb > 0 else None
    return Stat(min(sa.n, sb.n), sa.mean - sb.mean, math.sqrt(va + vb), df=df, welch=True)


def seeds_needed(d: Stat) -> int | None:
    """Smallest seeds per arm at which d would pass the rule, its spread over seeds as observed (None: > MAX_SEEDS)."""
    for m in range(2, MAX_SEEDS + 1):
        df = 2 * m - 2 if d.welch else m - 1
        if t975(df) * d.se * math.sqrt(d.n / m) < abs(d.mean):
            return m
    return None


def verdict(d: Stat, direction: int, undefined: str = "") -> tuple[str, str, str]:
    """(verdict, why, need) for a difference d whose claimed sign is `direction` (+1 or -1), by RULE: `why` explains
    the verdict, `need` says in a few words what would decide an undecided test ('' when decided). `undefined`:
    when the quantity can be undefined in a finished run, why, and what would define it."""
    if d.mean is None:
        why = "no value in any seed: the runs are missing or not finished" + (f", or {undefined}" if undefined else "")
        return "not measurable", why, "finished runs" + (f" ({undefined})" if undefined else "")
    if d.se is None:
        return ("not measurable", f"SE unavailable with n = {d.n} seed(s): no verdict; at least 2 seeds per arm are needed",
                "at least 2 seeds per arm")
    how = f"{'paired' if d.paired else 'unpaired' if d.welch else 'one arm'}, n = {d.n}"
    if d.left_out:
        how += f", {d.left_out} seed(s) only one arm ran left out"
    if d.se == 0:  # every seed gave the same value: the seeds did not vary, so there is no SE to judge d by
        return "not measurable", (f"d = {d.mean:+.4f} with no spread over the seeds ({how}: every seed gave the same "
                                  "value, so the SE is 0 and cannot bound d): the runs did not differ where this is "
                                  "measured; it needs longer training or more evaluation problems before more seeds"), (
            "longer training or more evaluation problems (every seed gave the same value), before more seeds")
    z, t = direction * d.mean / d.se, t975(d.df)
    if z > t:
        return "confirmed", f"d = {d.mean:+.4f} is {z:.1f} SE in the claimed direction ({how}; t = {t:.2f})", ""
    if z < -t:
        return "contradicted", f"d = {d.mean:+.4f} is {-z:.1f} SE against the claimed direction ({how}; t = {t:.2f})", ""
    if d.mean == 0:
        return ("not measurable", f"d = 0 ({how}): no difference observed; seeds alone cannot show one",
                "a difference to measure (none observed): seeds alone cannot show one")
    side = "in" if z > 0 else "against"
    head = f"d = {d.mean:+.4f} ± {d.se:.4f} ({abs(z):.1f} SE, {side} the claimed direction; {how}, t = {t:.2f}); "
    m = seeds_needed(d)
    if m is None:  # d is a sliver of its spread: as measured, no effect, and no practical seed count changes that
        need = f"no effect is seen: more than {MAX_SEEDS} seeds per arm would be needed at this spread"
    else:
        need = (f"about {m} seeds per arm at this spread would decide it, "
                + ("toward confirmed if d held" if z > 0 else "toward contradicted: d points against the claim"))
    return "not measurable", head + need, need


def claim_verdict(tests: list[dict]) -> str:
    vs = [t["verdict"] for t in tests]
    if vs and all(v == "confirmed" for v in vs):
        return "confirmed at this scale"
    if any(v == "contradicted" for v in vs):
        return "contradicted at this scale"
    return "not measurable at this scale"
