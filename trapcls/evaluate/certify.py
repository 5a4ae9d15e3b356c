"""A blank threshold with a stated guarantee: at most a given share of animal frames set aside as blank.

The question a field team asks: "if we throw away every frame with P(blank) >= t, how many
animals do we throw away?" With labelled frames we can answer with a confidence bound that
holds for the threshold actually chosen, not just on average:

- For a threshold t, the miss rate m(t) is the share of non-blank frames (animal, human,
  vehicle) with P(blank) >= t. Among n labelled non-blank frames, k(t) of them are missed; k
  is Binomial(n, m(t)) for frames like the calibration ones (exchangeable with them).
- The Clopper-Pearson bound: the largest m for which seeing k or fewer misses still has
  probability above 1 - confidence. It is exact (no normal approximation), so it stays valid
  with few frames and zero misses, where approximations fail.
- Choosing t from the same data would void a bound computed for one fixed t. Fixed-sequence
  testing (the "Learn then Test" recipe of Angelopoulos, Bates et al. 2021) fixes that: walk a
  grid of thresholds fixed in advance from high (sets little aside) to low, test at each
  "m(t) > target" with the exact binomial p-value, and stop at the first threshold that cannot
  be certified. Because the order is fixed before looking at the data, the probability that any
  certified threshold has a true miss rate above target is at most 1 - confidence, with no
  multiplicity correction; the lowest certified threshold (the most frames set aside) keeps
  the guarantee.

Why not scipy: the runtime stays small enough for a Jetson, and the exact binomial tail is a
few lines of numpy; tests check it against scipy's beta quantiles and hand-worked values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from trapcls.core.options import check_value
from trapcls.core.system.exceptions import DataError
from trapcls.evaluate.config import EvaluateConfig

# The thresholds tested, in order: 1.000, 0.999, ..., 0.000. Fixed in advance, as the
# fixed-sequence procedure requires; 0.001 is finer than any difference a user would act on.
GRID = np.round(np.linspace(1.0, 0.0, 1001), 3)
METHOD = ("exact Clopper-Pearson bound with fixed-sequence testing over thresholds 1.000, 0.999, ..., 0.000 "
          "(Learn then Test)")


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lf = _log_factorials(n)
    i = np.arange(k + 1)
    logs = lf[n] - lf[i] - lf[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    """The one-sided exact upper confidence bound on a binomial proportion after k successes in n trials."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = k / n, 1.0  # binomial_cdf(k, n, p) falls from >= 1/2-ish to 0 as p goes up: bisect for alpha
    for _ in range(200):
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return hi


def frames_needed(target: float, confidence: float) -> int:
    """The fewest non-blank frames that can certify `target`: zero misses and (1 - target)^n <= 1 - confidence."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-target))


@dataclass(frozen=True)
class BlankCertificate:
    """The lowest certified threshold and what it does on the calibration frames."""

    threshold: float
    target_miss: float
    confidence: float
    animal_frames: int  # labelled non-blank frames (animal, human, vehicle)
    blank_frames: int
    misses: int  # non-blank frames with P(blank) >= threshold
    observed_miss_rate: float
    certified_miss_bound: float  # Clopper-Pearson upper bound at `confidence`
    set_aside_share: float  # of all calibration frames
    blanks_caught: float  # share of blank frames set aside
    method: str = METHOD

    def to_json(self) -> dict:
        return asdict(self)


def certify_blank_threshold(p_blank_animals: np.ndarray, p_blank_blanks: np.ndarray, *, target: float,
                            confidence: float) -> BlankCertificate:
    """The lowest threshold t on P(blank) whose miss rate is certified <= target (see the module docstring).

    `p_blank_animals`: P(blank) of the labelled non-blank frames; `p_blank_blanks`: of the blank ones.
    Raises DataError when the frames cannot certify the target, saying how many it has and needs.
    """
    check_value(EvaluateConfig, "blank_miss", target)
    check_value(EvaluateConfig, "confidence", confidence)
    animals = np.sort(np.asarray(p_blank_animals, dtype=np.float64))
    blanks = np.asarray(p_blank_blanks, dtype=np.float64)
    n, need = len(animals), frames_needed(target, confidence)
    if n < need:
        raise DataError(f"The labels have {n} non-blank frames; certifying that at most {target:.1%} of animal "
                        f"frames are set aside with {confidence:.0%} confidence needs at least {need}, even if none "
                        "is missed. Label more non-blank frames, or ask for a looser --blank-miss or --confidence.")
    # P(X <= k) under the boundary hypothesis m = target, for every k: a fixed table, then the walk is lookups.
    cdf = np.minimum(np.cumsum(np.exp(_binomial_log_pmf(n, target))), 1.0)
    misses = n - np.searchsorted(animals, GRID, side="left")  # frames with P(blank) >= t, per threshold
    chosen = None
    for t, k in zip(GRID, misses):
        if cdf[k] > 1.0 - confidence:  # "miss rate > target" cannot be rejected here: stop
            break
        chosen = (float(t), int(k))
    if chosen is None:
        raise DataError(f"No threshold certifies a miss rate of at most {target:.1%} with {confidence:.0%} "
                        f"confidence: {int(misses[0])} of the {n} non-blank frames already have P(blank) = 1.")
    t, k = chosen
    total = n + len(blanks)
    return BlankCertificate(
        threshold=t, target_miss=target, confidence=confidence, animal_frames=n, blank_frames=len(blanks),
        misses=k, observed_miss_rate=k / n, certified_miss_bound=clopper_pearson_upper(k, n, confidence),
        set_aside_share=(k + int((blanks >= t).sum())) / total if total else 0.0,
        blanks_caught=float((blanks >= t).mean()) if len(blanks) else 0.0)


def _binomial_log_pmf(n: int, p: float) -> np.ndarray:
    lf = _log_factorials(n)
    i = np.arange(n + 1)
    return lf[n] - lf[i] - lf[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
