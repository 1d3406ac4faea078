"""The router as a pure function, and the breaker / latency estimates it is fed.

Its speed is measured in ``bench/router_overhead.py``, not asserted here."""

from __future__ import annotations

import pytest

from edgewise.errors import (
    BudgetError,
    ClearanceError,
    ConfigError,
    ContextLengthError,
    InvalidRequestError,
    NoTierAvailableError,
    UnknownModelError,
)
from edgewise.levels import Level
from edgewise.routing import RouteRequest, route, score
from edgewise.tiers import BreakerState, CircuitBreaker, LatencyEstimate, TierView

DEVICE = TierView("device", Level.PHI, 0.0, energy_per_token_j=0.05, max_context=2048,
                  models=("smollm2-135m-instruct",), expected_s=2.0)
GATEWAY = TierView("gateway", Level.PII, 0.1, energy_per_token_j=0.2, max_context=8192,
                   models=("qwen-1.5b",), expected_s=1.0)
CLOUD = TierView("cloud", Level.PUBLIC, 0.6, energy_per_token_j=0.01, max_context=128_000,
                 models=("big",), expected_s=0.5)
FLEET = (DEVICE, GATEWAY, CLOUD)


def down(t: TierView) -> TierView:
    return TierView(t.name, t.clearance, t.cost_per_1k_tokens, t.energy_per_token_j,
                    t.max_context, t.models, available=0, down_reason="breaker open")


def test_cheapest_eligible_tier_first_then_escalation_path() -> None:
    d = route(RouteRequest(), FLEET)
    assert d.plan == ("device", "gateway", "cloud")
    assert d.reason == "cheapest eligible tier"


@pytest.mark.parametrize(("sensitivity", "plan"), [
    ("public", ("device", "gateway", "cloud")),
    ("internal", ("device", "gateway")),
    ("pii", ("device", "gateway")),
    ("phi", ("device",)),
])
def test_clearance_is_a_hard_filter(sensitivity: str, plan: tuple[str, ...]) -> None:
    assert route(RouteRequest(sensitivity=Level(sensitivity)), FLEET).plan == plan


def test_explicit_tier_or_model_is_still_subject_to_clearance() -> None:
    assert route(RouteRequest(model="cloud"), FLEET).plan == ("cloud",)
    assert route(RouteRequest(model="qwen-1.5b"), FLEET).plan == ("gateway",)
    with pytest.raises(ClearanceError, match="pii data may not be sent to cloud"):
        route(RouteRequest(model="cloud", sensitivity=Level.PII), FLEET)
    with pytest.raises(UnknownModelError, match=r"'qwen-1\.5b'") as unknown:
        route(RouteRequest(model="gpt-9"), FLEET)  # says what is served instead
    assert unknown.value.param == "model" and unknown.value.status == 404


def test_min_tier_header() -> None:
    assert route(RouteRequest(min_tier="gateway"), FLEET).plan == ("gateway", "cloud")
    with pytest.raises(InvalidRequestError, match="names no tier") as bad:
        route(RouteRequest(min_tier="nowhere"), FLEET)
    assert bad.value.param == "x-edgewise-min-tier" and bad.value.status == 400


def test_context_fit_and_budget() -> None:
    big = RouteRequest(prompt_tokens=3000, max_tokens=500)
    assert route(big, FLEET).plan == ("gateway", "cloud")
    with pytest.raises(ContextLengthError, match="200000 tokens"):
        route(RouteRequest(prompt_tokens=200_000), FLEET)
    # 1000 tokens: gateway costs 0.1, cloud 0.6
    budget = RouteRequest(prompt_tokens=3000, max_tokens=500, max_cost=0.5)
    assert route(budget, FLEET).plan == ("gateway",)
    with pytest.raises(BudgetError, match=r"costs ≤ 0\.01"):
        route(RouteRequest(prompt_tokens=9000, max_cost=0.01), FLEET)


def test_a_tier_that_cannot_hold_max_tokens_still_answers_when_none_can() -> None:
    # 1800 + 500 fits gateway and cloud, not device: they are preferred ...
    assert route(RouteRequest(prompt_tokens=1800, max_tokens=500), FLEET).plan == (
        "gateway", "cloud")
    # ... but a phi request may only go to device: it answers until its window is full
    d = route(RouteRequest(prompt_tokens=1800, max_tokens=500, sensitivity=Level.PHI), FLEET)
    assert d.plan == ("device",)


def test_unreachable_tiers_are_skipped_and_named() -> None:
    d = route(RouteRequest(), (down(DEVICE), GATEWAY, CLOUD))
    assert d.plan == ("gateway", "cloud")
    assert "skipped device (breaker open)" in d.reason
    with pytest.raises(NoTierAvailableError) as none:
        route(RouteRequest(sensitivity=Level.PHI), (down(DEVICE), GATEWAY, CLOUD))
    assert none.value.message == "no eligible tier is reachable: device (breaker open)"
    assert none.value.status == 503


def test_latency_slo_reorders_softly() -> None:
    d = route(RouteRequest(max_latency_ms=1500), FLEET)
    assert d.plan == ("gateway", "cloud", "device")
    assert "latency SLO" in d.reason
    d = route(RouteRequest(max_latency_ms=100), FLEET)
    assert d.plan == ("cloud", "gateway", "device")
    assert "no tier is expected to meet the latency SLO" in d.reason


def test_energy_weight_can_outrank_cost() -> None:
    greedy = TierView("device", Level.PHI, 0.0, energy_per_token_j=1.0)
    green = TierView("cloud", Level.PUBLIC, 0.1, energy_per_token_j=0.0)
    assert route(RouteRequest(max_tokens=1000), (greedy, green)).plan[0] == "device"
    assert route(RouteRequest(max_tokens=1000), (greedy, green),
                 energy_weight=1.0).plan[0] == "cloud"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, cooldown_s=5.0, clock=clock)
    for _ in range(2):
        b.record_failure("boom")
    assert b.state is BreakerState.CLOSED and b.available()
    b.record_failure("boom")
    assert b.state is BreakerState.OPEN and not b.available() and not b.acquire()
    clock.t = 4.9
    assert b.state is BreakerState.OPEN
    clock.t = 5.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.acquire() and not b.acquire()  # exactly one trial at a time
    b.record_failure("still down")
    assert b.state is BreakerState.OPEN and b.last_error == "still down"
    clock.t = 10.0
    assert b.acquire()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.failures == 0 and b.available()


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failure_threshold=2)
    b.record_failure("x")
    b.record_success()
    b.record_failure("y")
    assert b.state is BreakerState.CLOSED


def test_latency_ewma() -> None:
    est = LatencyEstimate(alpha=0.5)
    assert est.expected_s(100) is None
    est.observe(1.0, 50.0)
    est.observe(0.0, 100.0)
    assert est.ttft_s == pytest.approx(0.5) and est.tokens_per_s == pytest.approx(75.0)
    assert est.expected_s(150) == pytest.approx(2.5)


@pytest.mark.parametrize(("name", "lps", "want"), [
    ("mean_prob", [-0.1, -0.1, -0.1], 0.904837),
    ("min_prob", [-0.01, -2.0, -0.01], 0.135335),
    ("tail_mean_prob", [-0.01] * 19 + [-3.0], 0.222017),  # k=2: exp((-3 - 0.01) / 2)
    ("mean_prob", [], 0.0),
])
def test_confidence_scorers(name: str, lps: list[float], want: float) -> None:
    assert score(name, lps) == pytest.approx(want, abs=1e-5)


def test_unknown_scorer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"routing.cascade.scorer: unknown scorer 'vibes'; "
                                          r"registered: agreement, answer_prob"):
        score("vibes", [-1.0])


def with_escalation(t: TierView, escalation: str) -> TierView:
    return TierView(t.name, t.clearance, t.cost_per_1k_tokens, t.energy_per_token_j,
                    t.max_context, t.models, expected_s=t.expected_s, escalation=escalation)


def test_redact_tiers_join_the_plan_in_redact_mode() -> None:
    fleet = (DEVICE, GATEWAY, with_escalation(CLOUD, "redact"))
    d = route(RouteRequest(sensitivity=Level.PHI), fleet)
    assert d.plan == ("device", "cloud")
    assert d.modes == ("clear", "redact")
    assert d.mode("device") == "clear" and d.mode("cloud") == "redact"
    # below the tier's clearance nothing needs redacting
    assert route(RouteRequest(sensitivity=Level.PUBLIC), fleet).modes == ("clear",) * 3


def test_a_declared_label_is_a_floor_redaction_cannot_lift() -> None:
    fleet = (DEVICE, GATEWAY, with_escalation(CLOUD, "redact"))
    d = route(RouteRequest(sensitivity=Level.PHI, declared=Level.PII), fleet)
    assert d.plan == ("device",)  # cloud (public) is below the declared pii
    assert route(RouteRequest(sensitivity=Level.PHI, declared=Level.PUBLIC),
                 fleet).plan == ("device", "cloud")
    with pytest.raises(ClearanceError) as refused:
        route(RouteRequest(model="cloud", sensitivity=Level.PII, declared=Level.PII), fleet)
    assert refused.value.message == (
        "pii data may not be sent to cloud (clearance public, escalation redact; a "
        "declared label is not lifted by redaction)")
    assert refused.value.status == 403 and refused.value.code == "clearance"


def test_allow_tiers_take_anything_and_rank_after_clear_ones_at_equal_cost() -> None:
    free_cloud = TierView("cloud", Level.PUBLIC, 0.0, expected_s=0.5, escalation="allow")
    d = route(RouteRequest(sensitivity=Level.PHI, declared=Level.PHI), (DEVICE, free_cloud))
    assert d.plan == ("device", "cloud") and d.modes == ("clear", "allow")
    redact_first = TierView("edge", Level.PUBLIC, 0.0, escalation="redact")
    d = route(RouteRequest(sensitivity=Level.PII), (redact_first, free_cloud, GATEWAY))
    assert d.plan == ("edge", "cloud", "gateway")  # cost first, then mode
    assert d.modes == ("redact", "allow", "clear")


def test_forbid_is_the_default() -> None:
    with pytest.raises(ClearanceError, match=r"\(clearance public, escalation forbid\)"):
        route(RouteRequest(model="cloud", sensitivity=Level.INTERNAL), FLEET)
