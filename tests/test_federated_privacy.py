"""Differential privacy of federated rounds: clipping bounds a node's contribution, the
noise shares add up to the planned noise, and the ε the accountant reports is never
below a tight reference — the analytic Gaussian mechanism (no subsampling) and a
privacy-loss-distribution accountant (Poisson subsampling) — nor absurdly above it."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from edgewise.errors import ConfigError, PrivacyBudgetError
from edgewise.federated.privacy import (
    DpAccountant,
    DpConfig,
    clip,
    effective_multiplier,
    noise_share,
)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """The exact ε of the Gaussian mechanism with sensitivity 1 and noise ``sigma`` at
    ``delta`` (Balle & Wang 2018, Theorem 8: δ(ε) = Φ(1/2σ − εσ) − e^ε Φ(−1/2σ − εσ)),
    by bisection; δ(ε) decreases in ε."""
    def d(eps: float) -> float:
        return _phi(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * _phi(-1 / (2 * sigma)
                                                                         - eps * sigma)
    lo, hi = 0.0, 1.0
    while d(hi) > delta:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if d(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize(("z", "rounds"), [(0.8, 1), (1.0, 10), (2.0, 50), (5.0, 200)])
def test_epsilon_without_subsampling_is_an_upper_bound_close_to_the_exact_one(
        z: float, rounds: int) -> None:
    acc = DpAccountant(delta=1e-5)
    for _ in range(rounds):
        acc.spend(z)
    got = acc.epsilon()
    # T Gaussian mechanisms with multiplier z compose to one with z / sqrt(T) (exact)
    exact = analytic_gaussian_epsilon(z / math.sqrt(rounds), 1e-5)
    assert got >= exact - 1e-9
    assert got <= 1.6 * exact  # RDP's conversion is loose, not wild


@pytest.mark.parametrize(("z", "q", "rounds"), [(1.0, 0.1, 100), (1.5, 0.05, 300)])
def test_epsilon_with_poisson_sampling_is_never_below_a_pld_accountant(
        z: float, q: float, rounds: int) -> None:
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    acc = DpAccountant(delta=1e-6, sampling_rate=q, rounds=[z] * (rounds - 1))
    acc.spend(z)
    ref = PLDAccountant()
    ref.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds))
    tight = float(ref.get_epsilon(1e-6))
    assert acc.epsilon() >= tight * 0.999
    assert acc.epsilon() <= 2.0 * tight
    # and sampling amplifies: the same rounds without it cost more
    assert DpAccountant(delta=1e-6, rounds=[z] * rounds).epsilon() > acc.epsilon()


def test_the_budget_stops_a_run_before_it_is_exceeded() -> None:
    acc = DpAccountant(delta=1e-5)
    fit = acc.rounds_within(2.0, 3.0)
    assert DpAccountant(delta=1e-5, rounds=[2.0] * fit).epsilon() <= 3.0
    assert DpAccountant(delta=1e-5, rounds=[2.0] * (fit + 1)).epsilon() > 3.0
    for _ in range(fit):
        acc.spend(2.0, max_epsilon=3.0)
    with pytest.raises(PrivacyBudgetError, match=rf"round {fit + 1} would spend ε = .*"
                                                 r"over privacy.max_epsilon 3"):
        acc.spend(2.0, max_epsilon=3.0)
    assert len(acc.rounds) == fit  # the refused round is not counted
    assert DpAccountant(delta=1e-5).epsilon() == 0.0
    assert DpAccountant(delta=1e-5, rounds=[0.0]).epsilon() == math.inf


def test_clipping_bounds_the_whole_update() -> None:
    upd = {"a": np.full((3, 4), 1.0), "b": np.full(5, 2.0)}  # norm sqrt(12 + 20)
    clipped, norm = clip(upd, 1.0)
    assert norm == pytest.approx(math.sqrt(32))
    total = math.sqrt(sum(float(np.sum(v ** 2)) for v in clipped.values()))
    assert total == pytest.approx(1.0)
    np.testing.assert_allclose(clipped["b"] / clipped["a"][0, 0], 2.0)  # direction kept
    small, n = clip({"a": np.array([0.3, 0.4])}, 1.0)
    assert n == pytest.approx(0.5) and np.allclose(small["a"], [0.3, 0.4])


def test_noise_shares_sum_to_the_planned_noise_and_dropouts_reduce_it() -> None:
    rng = np.random.default_rng(0)
    like = {"w": np.zeros(200_000)}
    shares = [noise_share(like, noise_multiplier=1.5, clip_norm=0.5, clients=10, rng=rng)
              for _ in range(10)]
    total = sum(s["w"] for s in shares)
    assert float(np.std(total)) == pytest.approx(0.75, rel=0.01)  # z C
    seven = sum(s["w"] for s in shares[:7])  # 3 of 10 dropped out
    assert float(np.std(seven)) == pytest.approx(0.75 * math.sqrt(0.7), rel=0.01)
    assert effective_multiplier(1.5, expected=10, reported=7) == pytest.approx(
        1.5 * math.sqrt(0.7))
    with pytest.raises(ValueError):
        effective_multiplier(1.5, expected=10, reported=0)


def test_the_privacy_section_is_checked_with_the_key_named() -> None:
    assert not DpConfig().enabled and DpConfig(noise_multiplier=1.0).enabled
    with pytest.raises(ConfigError, match=re.escape("privacy.noise_multiplier -1")):
        DpConfig(noise_multiplier=-1)
    with pytest.raises(ConfigError, match=re.escape("privacy.delta 0")):
        DpConfig(delta=0)
    with pytest.raises(ConfigError, match=re.escape("privacy.clip_norm 0")):
        DpConfig(clip_norm=0)
    with pytest.raises(ConfigError, match=re.escape("needs privacy.noise_multiplier > 0")):
        DpConfig(max_epsilon=3.0)
    with pytest.raises(ConfigError, match="sampling rate 0"):
        DpAccountant(delta=1e-5, sampling_rate=0)
