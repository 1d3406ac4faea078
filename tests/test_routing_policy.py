"""The router as a pure function, and the breaker / latency estimates it is fed."""

from __future__ import annotations

import time

import pytest

from edgewise.routing import (
    BreakerState,
    CircuitBreaker,
    LatencyEstimate,
    RouteRequest,
    TierView,
    route,
    score,
)

DEVICE = TierView("device", "phi", 0.0, energy_per_token_j=0.05, max_context=2048,
                  models=("smollm2-135m-instruct",), expected_s=2.0)
GATEWAY = TierView("gateway", "pii", 0.1, energy_per_token_j=0.2, max_context=8192,
                   models=("qwen-1.5b",), expected_s=1.0)
CLOUD = TierView("cloud", "public", 0.6, energy_per_token_j=0.01, max_context=128_000,
                 models=("big",), expected_s=0.5)
FLEET = (DEVICE, GATEWAY, CLOUD)


def down(t: TierView) -> TierView:
    return TierView(t.name, t.clearance, t.cost_per_1k_tokens, t.energy_per_token_j,
                    t.max_context, t.models, available=0, down_reason="breaker open")


def test_cheapest_eligible_tier_first_then_escalation_path() -> None:
    d = route(RouteRequest(), FLEET)
    assert d.plan == ("device", "gateway", "cloud") and d.refused is None
    assert d.reason == "cheapest eligible tier"


@pytest.mark.parametrize(("sensitivity", "plan"), [
    ("public", ("device", "gateway", "cloud")),
    ("internal", ("device", "gateway")),
    ("pii", ("device", "gateway")),
    ("phi", ("device",)),
])
def test_clearance_is_a_hard_filter(sensitivity: str, plan: tuple[str, ...]) -> None:
    assert route(RouteRequest(sensitivity=sensitivity), FLEET).plan == plan


def test_explicit_tier_or_model_is_still_subject_to_clearance() -> None:
    assert route(RouteRequest(model="cloud"), FLEET).plan == ("cloud",)
    assert route(RouteRequest(model="qwen-1.5b"), FLEET).plan == ("gateway",)
    d = route(RouteRequest(model="cloud", sensitivity="pii"), FLEET)
    assert d.refused == "clearance" and d.plan == ()
    assert "pii data may not be sent to cloud" in d.reason
    assert route(RouteRequest(model="gpt-9"), FLEET).refused == "unknown_model"


def test_min_tier_header() -> None:
    assert route(RouteRequest(min_tier="gateway"), FLEET).plan == ("gateway", "cloud")
    assert route(RouteRequest(min_tier="nowhere"), FLEET).refused == "unknown_model"


def test_context_fit_and_budget() -> None:
    big = RouteRequest(prompt_tokens=3000, max_tokens=500)
    assert route(big, FLEET).plan == ("gateway", "cloud")
    assert route(RouteRequest(prompt_tokens=200_000), FLEET).refused == "context"
    # 1000 tokens: gateway costs 0.1, cloud 0.6
    budget = RouteRequest(prompt_tokens=3000, max_tokens=500, max_cost=0.5)
    assert route(budget, FLEET).plan == ("gateway",)
    assert route(RouteRequest(prompt_tokens=9000, max_cost=0.01), FLEET).refused == "budget"


def test_unreachable_tiers_are_skipped_and_named() -> None:
    d = route(RouteRequest(), (down(DEVICE), GATEWAY, CLOUD))
    assert d.plan == ("gateway", "cloud")
    assert "skipped device (breaker open)" in d.reason
    d = route(RouteRequest(sensitivity="phi"), (down(DEVICE), GATEWAY, CLOUD))
    assert d.refused == "unavailable" and d.plan == ()
    assert d.reason == "no eligible tier is reachable: device (breaker open)"


def test_latency_slo_reorders_softly() -> None:
    d = route(RouteRequest(max_latency_ms=1500), FLEET)
    assert d.plan == ("gateway", "cloud", "device")
    assert "latency SLO" in d.reason
    d = route(RouteRequest(max_latency_ms=100), FLEET)
    assert d.plan == ("cloud", "gateway", "device")
    assert "no tier is expected to meet the latency SLO" in d.reason


def test_energy_weight_can_outrank_cost() -> None:
    greedy = TierView("device", "phi", 0.0, energy_per_token_j=1.0)
    green = TierView("cloud", "public", 0.1, energy_per_token_j=0.0)
    assert route(RouteRequest(max_tokens=1000), (greedy, green)).plan[0] == "device"
    assert route(RouteRequest(max_tokens=1000), (greedy, green),
                 energy_weight=1.0).plan[0] == "cloud"


def test_router_overhead_is_small() -> None:
    req = RouteRequest(sensitivity="internal", max_latency_ms=1500, prompt_tokens=100)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        route(req, FLEET)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 0.001  # generous bound for CI; bench reports the real p99


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
    from edgewise.errors import ConfigError

    with pytest.raises(ConfigError, match="available: mean_prob"):
        score("vibes", [-1.0])


def with_escalation(t: TierView, escalation: str) -> TierView:
    return TierView(t.name, t.clearance, t.cost_per_1k_tokens, t.energy_per_token_j,
                    t.max_context, t.models, expected_s=t.expected_s, escalation=escalation)


def test_redact_tiers_join_the_plan_in_redact_mode() -> None:
    fleet = (DEVICE, GATEWAY, with_escalation(CLOUD, "redact"))
    d = route(RouteRequest(sensitivity="phi"), fleet)
    assert d.plan == ("device", "cloud")
    assert d.modes == ("clear", "redact")
    assert d.mode("device") == "clear" and d.mode("cloud") == "redact"
    # below the tier's clearance nothing needs redacting
    assert route(RouteRequest(sensitivity="public"), fleet).modes == ("clear",) * 3


def test_a_declared_label_is_a_floor_redaction_cannot_lift() -> None:
    fleet = (DEVICE, GATEWAY, with_escalation(CLOUD, "redact"))
    d = route(RouteRequest(sensitivity="phi", declared="pii"), fleet)
    assert d.plan == ("device",)  # cloud (public) is below the declared pii
    assert route(RouteRequest(sensitivity="phi", declared="public"), fleet).plan == (
        "device", "cloud")
    d = route(RouteRequest(model="cloud", sensitivity="pii", declared="pii"), fleet)
    assert d.refused == "clearance"
    assert d.reason == ("pii data may not be sent to cloud (clearance public, escalation "
                        "redact; a declared label is not lifted by redaction)")


def test_allow_tiers_take_anything_and_rank_after_clear_ones_at_equal_cost() -> None:
    free_cloud = TierView("cloud", "public", 0.0, expected_s=0.5, escalation="allow")
    d = route(RouteRequest(sensitivity="phi", declared="phi"), (DEVICE, free_cloud))
    assert d.plan == ("device", "cloud") and d.modes == ("clear", "allow")
    redact_first = TierView("edge", "public", 0.0, escalation="redact")
    d = route(RouteRequest(sensitivity="pii"), (redact_first, free_cloud, GATEWAY))
    assert d.plan == ("edge", "cloud", "gateway")  # cost first, then mode
    assert d.modes == ("redact", "allow", "clear")


def test_forbid_is_the_default() -> None:
    d = route(RouteRequest(model="cloud", sensitivity="internal"), FLEET)
    assert d.refused == "clearance"
    assert "(clearance public, escalation forbid)" in d.reason
