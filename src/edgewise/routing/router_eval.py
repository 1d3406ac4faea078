"""The standard router metrics: PGR, APGR, CPT, and threshold calibration.

A router scores each prompt ("how much does it need the larger model"); routing the
share ``r`` of prompts with the highest scores to the large model and the rest to the
small one gives accuracy ``acc(r)``. With ``s_i``, ``l_i`` the small / large model's
correctness (0/1) on example ``i`` (Ong et al., *RouteLLM*, 2024):

    PGR(r)    = (acc(r) − acc_small) / (acc_large − acc_small)      performance gap recovered
    APGR      = ∫₀¹ PGR(r) dr                                        area under the curve
    CPT(x)    = min { r : PGR(r) ≥ x }                               call-performance threshold

``acc_small = mean(s)``, ``acc_large = mean(l)`` (the always-small / always-large
routers). A random router has APGR 0.5 in expectation; PGR can exceed 1 (the small model
is right where the large one is wrong) and fall below 0.

**Ties.** Examples with equal scores form one group, ordered randomly by a real router
(the threshold cannot split them). The curve is evaluated at group boundaries and joined
by straight lines — the expectation over random tie-breaking — so a constant scorer has
APGR exactly 0.5. CPT interpolates on the same lines.

**Confidence.** :func:`bootstrap` resamples the examples with replacement (scores kept
with their examples) and reports percentile intervals; resamples where the two models
are equally accurate (PGR undefined) are dropped and counted.

**Thresholds.** :func:`threshold_for_share` picks, on a calibration split, the score
threshold that sends a target share of prompts to the large model (or the nearest share
ties allow) (route to the large
model when ``score ≥ t``); :func:`share_at` says which share a threshold realizes on
other data — how far it lands from the target is the calibration error to report.

Written here (numpy only): RouteLLM's evaluation code computes the same quantities but
is tied to its hosted-API routers and benchmark files, and no library ships them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Curve",
    "Interval",
    "RouterMetrics",
    "accuracy_at",
    "bootstrap",
    "curve",
    "metrics",
    "share_at",
    "threshold_for_quality",
    "threshold_for_share",
]


@dataclass(frozen=True)
class Curve:
    """``acc[j]`` at ``share[j]`` of prompts sent to the large model (group boundaries,
    ``share[0] = 0`` … ``share[-1] = 1``), and the thresholds realizing them:
    ``thresholds[j]`` routes exactly ``share[j]`` (``score ≥ thresholds[j]``)."""

    share: np.ndarray
    acc: np.ndarray
    thresholds: np.ndarray
    acc_small: float
    acc_large: float

    @property
    def gap(self) -> float:
        return self.acc_large - self.acc_small

    def pgr(self) -> np.ndarray:
        return (self.acc - self.acc_small) / self.gap

    def acc_at(self, share: float) -> float:
        """Accuracy (expected over ties) with ``share`` of prompts sent large."""
        return float(np.interp(share, self.share, self.acc))


@dataclass(frozen=True)
class RouterMetrics:
    n: int
    acc_small: float
    acc_large: float
    apgr: float
    cpt50: float
    cpt80: float
    #: PGR and accuracy with half of the prompts sent to the large model.
    pgr_at_50: float
    acc_at_50: float
    #: Accuracy over always-large's with half of the prompts sent large.
    acc_ratio_at_50: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _arrays(scores: Sequence[float] | np.ndarray, small: Sequence[bool] | np.ndarray,
            large: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(small, dtype=np.float64)
    b = np.asarray(large, dtype=np.float64)
    if not (s.shape == a.shape == b.shape) or s.ndim != 1:
        raise ValueError("scores, small and large need the same length")
    if s.size == 0:
        raise ValueError("no examples")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers")
    return s, a, b


def curve(scores: Sequence[float] | np.ndarray, small: Sequence[bool] | np.ndarray,
          large: Sequence[bool] | np.ndarray) -> Curve:
    """The quality-vs-share-of-large-calls curve of a router (see the module docstring)."""
    s, a, b = _arrays(scores, small, large)
    n = s.size
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    gain = (b - a)[order]
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    # group boundaries: after the last of each run of equal scores
    ends = np.flatnonzero(np.diff(s_sorted) != 0) + 1
    k = np.concatenate([[0], ends, [n]])
    acc = (a.sum() + cum[k]) / n
    # thresholds: k prompts go large when score ≥ the k-th highest score; 0 prompts when
    # the threshold is above every score
    top = np.nextafter(s_sorted[0], math.inf)
    thresholds = np.concatenate([[top], s_sorted[k[1:] - 1]])
    return Curve(k / n, acc, thresholds, float(a.mean()), float(b.mean()))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _cpt(c: Curve, x: float) -> float:
    """Smallest share whose (interpolated) PGR reaches ``x``; 1.0 if none does."""
    p = c.pgr()
    hit = np.flatnonzero(p >= x)
    if hit.size == 0:
        return 1.0
    j = int(hit[0])
    if j == 0:
        return 0.0
    # linear between boundaries j-1 and j
    p0, p1 = p[j - 1], p[j]
    r0, r1 = c.share[j - 1], c.share[j]
    return float(r0 + (x - p0) / (p1 - p0) * (r1 - r0))


def metrics(scores: Sequence[float] | np.ndarray, small: Sequence[bool] | np.ndarray,
            large: Sequence[bool] | np.ndarray) -> RouterMetrics:
    """APGR, CPT(50 %), CPT(80 %) and the 50 %-calls point of a router on labelled data.

    Raises ``ValueError`` when both models are equally accurate (PGR is undefined)."""
    c = curve(scores, small, large)
    if c.gap == 0:
        raise ValueError(f"the small and the large model are equally accurate here "
                         f"({c.acc_large:.3f}): the performance gap is zero, PGR is undefined")
    p = c.pgr()
    acc50 = c.acc_at(0.5)
    return RouterMetrics(
        n=int(np.asarray(scores).size), acc_small=c.acc_small,
        acc_large=c.acc_large, apgr=_trapezoid(p, c.share), cpt50=_cpt(c, 0.5),
        cpt80=_cpt(c, 0.8), pgr_at_50=float(np.interp(0.5, c.share, p)), acc_at_50=acc50,
        acc_ratio_at_50=acc50 / c.acc_large if c.acc_large else math.nan)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap(scores: Sequence[float] | np.ndarray, small: Sequence[bool] | np.ndarray,
              large: Sequence[bool] | np.ndarray, *, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[dict[str, Interval], int]:
    """Percentile intervals of every :class:`RouterMetrics` field over ``resamples``
    bootstrap resamples, and how many resamples were dropped (zero gap)."""
    s, a, b = _arrays(scores, small, large)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, float]] = []
    dropped = 0
    for _ in range(resamples):
        idx = rng.integers(0, s.size, s.size)
        if a[idx].mean() == b[idx].mean():
            dropped += 1
            continue
        rows.append(metrics(s[idx], a[idx], b[idx]).as_dict())
    if not rows:
        raise ValueError("every bootstrap resample had a zero performance gap")
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {key: Interval(float(np.percentile([r[key] for r in rows], lo)),
                         float(np.percentile([r[key] for r in rows], hi)))
           for key in rows[0] if key != "n"}
    return out, dropped


def threshold_for_share(scores: Sequence[float] | np.ndarray, share: float) -> float:
    """The threshold that sends ``share`` of these prompts (``score ≥ t``) to the large
    model. Tied scores cannot be split: the tie group's lower or upper edge is taken,
    whichever share is nearer the target (the lower one when equally near)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError("share must be in [0, 1]")
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = s.size
    if n == 0:
        raise ValueError("no scores")
    k = math.floor(share * n + 0.5)  # half up (round() goes to even)
    if k == 0:
        return float(np.nextafter(s[0], math.inf))
    t = s[k - 1]
    if k == n or s[k] != t:
        return float(t)
    below = int(np.sum(s > t))  # share if the tie group stays small
    above = int(np.sum(s >= t))  # share if it goes large
    if abs(above - share * n) < abs(share * n - below):
        return float(t)
    return float(s[below - 1]) if below else float(np.nextafter(t, math.inf))


def accuracy_at(scores: Sequence[float] | np.ndarray, small: Sequence[bool] | np.ndarray,
                large: Sequence[bool] | np.ndarray, threshold: float) -> float:
    """Accuracy when prompts scored ``≥ threshold`` get the large model's answer and the
    rest the small model's."""
    s, a, b = _arrays(scores, small, large)
    return float(np.where(s >= threshold, b, a).mean())


def share_at(scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    """Share of prompts a threshold sends to the large model (``score ≥ threshold``)."""
    s = np.asarray(scores, dtype=np.float64)
    return float(np.mean(s >= threshold)) if s.size else 0.0


def threshold_for_quality(scores: Sequence[float] | np.ndarray,
                          small: Sequence[bool] | np.ndarray,
                          large: Sequence[bool] | np.ndarray, target: float) -> float:
    """The threshold with the fewest large-model calls whose accuracy on this data is at
    least ``target`` × always-large's: just above the highest score (no prompt goes
    large) when always-small already meets it, the lowest score (every prompt goes
    large) when nothing cheaper does."""
    c = curve(scores, small, large)
    need = target * c.acc_large
    hit = np.flatnonzero(c.acc >= need - 1e-12)
    j = int(hit[0]) if hit.size else len(c.acc) - 1
    return float(c.thresholds[j])
