"""Differential privacy for federated rounds: clipping, distributed Gaussian noise, and
an accountant that stops a run before it overspends.

Per round (DP-FedAvg, McMahan et al. 2018, "Learning differentially private recurrent
language models", Algorithm 1, with the noise split across clients as under secure
aggregation):

1. each sampled client clips its update ``Δ`` (every adapter tensor together) to L2
   norm ``C``: ``Δ · min(1, C / ‖Δ‖)`` (:func:`clip`), so one client — one node's whole
   dataset: the unit of privacy here is the node — changes the sum by at most ``C``;
2. each of the ``n`` clients the round expects adds ``N(0, (z C)² / n)`` to its clipped
   update (:func:`noise_share`), so the *sum* carries ``N(0, (z C)²)`` even though the
   server only ever sees that sum — noise multiplier ``z``. If only ``m < n`` of them
   report, the sum carries ``(z C)² m / n``: the round's effective multiplier is
   ``z √(m / n)`` (:func:`effective_multiplier`) and that is what is accounted;
3. the accountant composes one Gaussian mechanism (multiplier ``z_eff``, sensitivity
   ``C``) per round, *amplified by subsampling* only when clients really are sampled by
   independent coin flips with probability ``q`` (Poisson sampling: the server cannot
   choose who takes part); a fixed-size or hand-picked cohort is accounted with ``q = 1``
   — no amplification, the safe choice.

The accountant is Google's ``dp_accounting`` (RDP over integer orders 2–256, Mironov 2017 and
Mironov, Talwar, Zhang 2019 for the subsampled Gaussian): an upper bound on ε at the
given δ, never below the tight value (``tests/test_federated_privacy.py`` checks it
against the analytic Gaussian mechanism and a privacy-loss-distribution accountant).
Flower's own ``RdpAccountant`` wrappers apply only to its fixed-clipping strategies
without subsampling credit, hence a module of our own around the library's accountant.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edgewise.errors import ConfigError, MissingDependencyError, PrivacyBudgetError

__all__ = ["DpAccountant", "DpConfig", "clip", "effective_multiplier", "noise_share"]

Array = npt.NDArray[np.float64]
#: RDP orders the accountant optimises over: integers (the library's closed form for
#: the subsampled Gaussian), dense where the optimum usually lies. Any set of orders
#: gives a valid upper bound; more orders only tighten it.
ORDERS = (*range(2, 65), 80, 96, 128, 192, 256)


@dataclass(frozen=True)
class DpConfig:
    """The ``privacy`` section of a federated recipe."""

    #: ``z``: the summed update's noise std is ``z · clip_norm``; 0 turns DP off.
    noise_multiplier: float = 0.0
    #: ``C``: each client's update is clipped to this L2 norm.
    clip_norm: float = 1.0
    delta: float = 1e-5
    #: The run stops before a round that would take ε beyond this (``None``: no limit).
    max_epsilon: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(f"privacy.noise_multiplier {self.noise_multiplier!r}: a "
                              "number >= 0 (0: no differential privacy)")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(f"privacy.clip_norm {self.clip_norm!r}: a number > 0")
        if not 0 < self.delta < 1:
            raise ConfigError(f"privacy.delta {self.delta!r}: between 0 and 1, below 1/N "
                              "for N nodes (e.g. 1e-5)")
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ConfigError(f"privacy.max_epsilon {self.max_epsilon!r}: a number > 0")
        if self.max_epsilon is not None and self.noise_multiplier == 0:
            raise ConfigError("privacy.max_epsilon needs privacy.noise_multiplier > 0 (with "
                              "no noise ε is infinite)")

    @property
    def enabled(self) -> bool:
        return self.noise_multiplier > 0


def clip(update: Mapping[str, npt.ArrayLike], clip_norm: float
         ) -> tuple[dict[str, Array], float]:
    """``update`` scaled to L2 norm at most ``clip_norm`` (all tensors as one vector), and
    its norm before clipping."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in update.items()}
    norm = math.sqrt(sum(float(np.sum(a * a)) for a in arrays.values()))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: a * scale for k, a in arrays.items()}, norm


def noise_share(like: Mapping[str, Array], *, noise_multiplier: float, clip_norm: float,
                clients: int, rng: np.random.Generator) -> dict[str, Array]:
    """One client's share of the round's noise: ``N(0, (z C)² / n)`` per coordinate, so
    the ``n`` shares sum to ``N(0, (z C)²)`` (step 2 of the module docstring)."""
    if clients < 1:
        raise ValueError("clients must be >= 1")
    std = noise_multiplier * clip_norm / math.sqrt(clients)
    return {k: rng.normal(0.0, std, size=a.shape) for k, a in like.items()}


def effective_multiplier(noise_multiplier: float, *, expected: int, reported: int) -> float:
    """The noise multiplier of a sum of ``reported`` shares planned for ``expected``
    clients: ``z √(m / n)`` (fewer shares, less noise)."""
    if reported < 1 or expected < reported:
        raise ValueError(f"reported {reported} of {expected} expected clients")
    return noise_multiplier * math.sqrt(reported / expected)


@dataclass
class DpAccountant:
    """ε spent so far at ``delta``, one composed Gaussian mechanism per round."""

    delta: float
    #: ``q``: each client's chance of taking part in a round, when sampling is Poisson
    #: (independent coin flips); 1.0 otherwise (no amplification).
    sampling_rate: float = 1.0
    rounds: list[float] = field(default_factory=list)  # effective multiplier per round

    def __post_init__(self) -> None:
        if not 0 < self.sampling_rate <= 1:
            raise ConfigError(f"sampling rate {self.sampling_rate!r}: in (0, 1]")

    def _epsilon(self, multipliers: list[float]) -> float:
        if not multipliers:
            return 0.0
        if min(multipliers) <= 0:
            return math.inf
        try:
            import dp_accounting  # type: ignore[import-untyped]
            from dp_accounting.rdp import RdpAccountant  # type: ignore[import-untyped]
        except ImportError as exc:
            raise MissingDependencyError(
                "the differential-privacy accountant needs dp-accounting, from edgewise's "
                "`federated` extra: run `.venv/bin/pip install -e '.[federated]'`") from exc

        acc = RdpAccountant(orders=list(ORDERS))
        # Rounds with the same multiplier compose as one self-composed event (RDP adds
        # up per order), so a long run costs one term per distinct multiplier.
        for z, count in sorted(Counter(multipliers).items()):
            event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
            if self.sampling_rate < 1:
                event = dp_accounting.PoissonSampledDpEvent(self.sampling_rate, event)
            acc.compose(event, count)
        return float(acc.get_epsilon(self.delta))

    def epsilon(self) -> float:
        """ε after the rounds recorded (0 before any; ``inf`` if a round had no noise)."""
        return self._epsilon(self.rounds)

    def epsilon_after(self, multiplier: float) -> float:
        """ε if one more round with this effective multiplier were run."""
        return self._epsilon([*self.rounds, multiplier])

    def spend(self, multiplier: float, *, max_epsilon: float | None = None) -> float:
        """Record a round; PrivacyBudgetError (nothing recorded) if it would take ε
        beyond ``max_epsilon``. Returns ε after it."""
        after = self.epsilon_after(multiplier)
        if max_epsilon is not None and after > max_epsilon:
            raise PrivacyBudgetError(
                f"round {len(self.rounds) + 1} would spend ε = {after:.3f} (δ = "
                f"{self.delta:g}), over privacy.max_epsilon {max_epsilon:g}; the run stops "
                f"after {len(self.rounds)} round(s) at ε = {self.epsilon():.3f}")
        self.rounds.append(multiplier)
        return after

    def rounds_within(self, multiplier: float, max_epsilon: float, *,
                      limit: int = 100_000) -> int:
        """How many rounds at ``multiplier`` fit in ``max_epsilon`` (from none spent)."""
        lo, hi = 0, 1
        while hi <= limit and self._epsilon([multiplier] * hi) <= max_epsilon:
            lo, hi = hi, hi * 2
        hi = min(hi, limit + 1)
        while hi - lo > 1:  # lo fits, hi does not
            mid = (lo + hi) // 2
            if self._epsilon([multiplier] * mid) <= max_epsilon:
                lo = mid
            else:
                hi = mid
        return lo
