"""The router: a pure function (request, sensitivity, fleet state) -> decision.

No sockets, no clocks: everything it needs is in its arguments, so every policy is a
unit test. Steps:

1. **Steering.** ``model: "auto"`` (or ``default``) lets the router choose;
   ``model: "<tier>"`` or a model name served by one tier pins that tier (still subject
   to clearance). ``x-edgewise-min-tier`` drops the tiers below it.
2. **Clearance (hard).** A tier is eligible as is (mode ``clear``) if its clearance ≥
   the request's sensitivity. A tier below it is eligible only by its ``escalation``
   policy: ``redact`` (mode ``redact``: it gets the request with the sensitive spans
   replaced by placeholders — possible only if the request's *declared* floor is within
   the tier's clearance, since redaction removes what the detector found, never what a
   label declared) or ``allow`` (mode ``allow``: as is, audited). Whether the redacted
   text really scans within the clearance is checked when the tier is reached
   (``edgewise.privacy.enforce``). If no tier qualifies, the request is refused.
3. **Fit.** Tiers whose ``max_context`` cannot hold prompt + max_tokens are dropped, and
   so are tiers that cannot call functions when the request uses tools.
4. **Budget (hard).** With ``x-edgewise-max-cost``, tiers whose cost for this request
   (``cost_per_1k × (prompt + max_tokens) / 1000``) exceeds it are dropped.
5. **Health.** Tiers with no available endpoint (all breakers open) are skipped; the
   reason names them. No eligible tier up → the decision says so (503 or async queue).
6. **Order.** The rest are ranked by ``cost + energy_weight × energy_per_token ×
   tokens``, then mode (``clear`` before ``redact`` before ``allow``), then ladder
   position — cheapest first. The first answers; the
   others are the cascade's escalation path and the failover order.
7. **Latency SLO (soft).** With ``x-edgewise-max-latency-ms``, tiers whose live estimate
   (EWMA TTFT + max_tokens / tokens-per-second) exceeds it go to the back of the plan;
   if none meets it the fastest estimate leads and the reason says the SLO is at risk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgewise.config import CLEARANCE_LEVELS

__all__ = ["MODES", "Decision", "RouteRequest", "TierView", "level", "route"]

#: How a tier may receive a request, most preferred first (see step 2).
MODES: tuple[str, ...] = ("clear", "redact", "allow")


def level(name: str) -> int:
    """Position of a clearance / sensitivity name (public=0 … phi=3)."""
    return CLEARANCE_LEVELS.index(name)


@dataclass(frozen=True)
class TierView:
    """What the router may know about a tier right now."""

    name: str
    clearance: str
    cost_per_1k_tokens: float = 0.0
    energy_per_token_j: float = 0.0
    max_context: int | None = None
    #: Model names the tier's endpoints serve (for ``model: "<name>"`` steering).
    models: tuple[str, ...] = ()
    #: Endpoints whose breaker lets a request through now.
    available: int = 1
    #: Live estimate of seconds for this request (None: unknown).
    expected_s: float | None = None
    #: Why the tier is down, for the reason string (e.g. "breaker open").
    down_reason: str | None = None
    #: Policy for requests above its clearance: ``forbid``, ``redact`` or ``allow``.
    escalation: str = "forbid"
    #: Whether the tier serves function calling (remote tiers do; the local engine not).
    tools: bool = False


@dataclass(frozen=True)
class RouteRequest:
    #: The request's level: max(declared floor, what the detector found).
    sensitivity: str = "public"
    #: What a label (request header, API key, ``routing.default_sensitivity``) declared;
    #: redaction cannot take a request below it. ``None``: same as ``public``.
    declared: str | None = None
    model: str = "auto"
    prompt_tokens: int = 0
    max_tokens: int = 256
    max_latency_ms: float | None = None
    max_cost: float | None = None
    min_tier: str | None = None
    #: The request carries tools, tool calls or tool results.
    uses_tools: bool = False


@dataclass(frozen=True)
class Decision:
    #: Tiers to try, in order: the first answers; later ones are escalation/failover.
    plan: tuple[str, ...]
    reason: str
    #: Set when nothing may serve the request: ``clearance``, ``budget``, ``context``,
    #: ``tools``, ``unknown_model`` (client errors) or ``unavailable`` (eligible tiers
    #: all down).
    refused: str | None = None
    skipped: tuple[str, ...] = field(default=())
    #: How each tier of ``plan`` receives the request (``clear``, ``redact``, ``allow``).
    modes: tuple[str, ...] = field(default=())

    @property
    def tier(self) -> str | None:
        return self.plan[0] if self.plan else None

    def mode(self, tier: str) -> str:
        """How ``tier`` may receive the request (``clear`` when not set)."""
        if tier in self.plan and len(self.modes) == len(self.plan):
            return self.modes[self.plan.index(tier)]
        return "clear"


def _mode(t: TierView, need: int, floor: int) -> str | None:
    """How tier ``t`` may receive a request of level ``need`` declared at ``floor``."""
    if level(t.clearance) >= need:
        return "clear"
    if t.escalation == "redact" and level(t.clearance) >= floor:
        return "redact"
    if t.escalation == "allow":
        return "allow"
    return None


def _cost(t: TierView, tokens: int) -> float:
    return t.cost_per_1k_tokens * tokens / 1000.0


def route(req: RouteRequest, fleet: Sequence[TierView], *, energy_weight: float = 0.0
          ) -> Decision:
    tokens = req.prompt_tokens + req.max_tokens
    names = [t.name for t in fleet]
    candidates = list(fleet)

    # 1. steering
    if req.model not in ("auto", "default"):
        pinned = [t for t in fleet if t.name == req.model or req.model in t.models]
        if not pinned:
            # the client's string is not quoted: messages never echo request content
            return Decision((), "no tier is named or serves the requested model (tiers: "
                                f"{', '.join(names)}; GET /v1/models lists the models)",
                            refused="unknown_model")
        candidates = pinned[:1]
    if req.min_tier is not None:
        if req.min_tier not in names:
            return Decision((), f"x-edgewise-min-tier names no tier (tiers: {', '.join(names)})",
                            refused="unknown_model")
        floor = names.index(req.min_tier)
        candidates = [t for t in candidates if names.index(t.name) >= floor]

    # 2. clearance (hard), or the tier's escalation policy
    need = level(req.sensitivity)
    floor = level(req.declared or "public")
    modes = {t.name: m for t in candidates if (m := _mode(t, need, floor)) is not None}
    cleared = [t for t in candidates if t.name in modes]
    if not cleared:
        if len(candidates) == 1:
            t = candidates[0]
            why = (f"clearance {t.clearance}, escalation {t.escalation}"
                   + ("; a declared label is not lifted by redaction"
                      if t.escalation == "redact" else ""))
            return Decision((), f"{req.sensitivity} data may not be sent to {t.name} "
                                f"({why})", refused="clearance")
        return Decision((), f"{req.sensitivity} data may not be sent to any eligible tier "
                            "(clearance too low)", refused="clearance")

    # 3. context fit, function calling
    fits = [t for t in cleared if t.max_context is None or tokens <= t.max_context]
    if not fits:
        return Decision((), f"prompt + max_tokens = {tokens} tokens exceeds every eligible "
                            "tier's max_context", refused="context")
    if req.uses_tools:
        fits = [t for t in fits if t.tools]
        if not fits:
            barred = [t.name for t in candidates if t.tools]
            if barred:  # tiers that could call functions exist, but not for this data
                return Decision((), f"{req.sensitivity} data may not be sent to "
                                    f"{', '.join(barred)}, the only tiers that call functions "
                                    "(clearance too low)", refused="clearance")
            return Decision((), "the request uses tools and no eligible tier calls functions "
                                "(only remote tiers do)", refused="tools")

    # 4. budget (hard)
    if req.max_cost is not None:
        affordable = [t for t in fits if _cost(t, tokens) <= req.max_cost]
        if not affordable:
            return Decision((), f"no eligible tier costs ≤ {req.max_cost} for {tokens} tokens",
                            refused="budget")
        fits = affordable

    # 5. health
    up = [t for t in fits if t.available > 0]
    down = tuple(f"{t.name} ({t.down_reason or 'unavailable'})" for t in fits
                 if t.available <= 0)
    if not up:
        return Decision((), "no eligible tier is reachable: " + ", ".join(down),
                        refused="unavailable", skipped=down)

    # 6. order: cheapest (cost + weighted energy), then ladder position
    def rank(t: TierView) -> tuple[float, int, int]:
        energy = t.energy_per_token_j * tokens * energy_weight
        return (_cost(t, tokens) + energy, MODES.index(modes[t.name]), names.index(t.name))

    ordered = sorted(up, key=rank)
    reason = "cheapest eligible tier" if req.model in ("auto", "default") else "requested"

    # 7. latency SLO (soft)
    if req.max_latency_ms is not None:
        slo = req.max_latency_ms / 1000.0
        meets = [t for t in ordered if t.expected_s is None or t.expected_s <= slo]
        if meets:
            ordered = meets + [t for t in ordered if t not in meets]
            if meets[0] is not sorted(up, key=rank)[0]:
                reason += " meeting the latency SLO"
        else:
            ordered.sort(key=lambda t: t.expected_s or 0.0)
            reason = "fastest tier (no tier is expected to meet the latency SLO)"
    if down:
        reason += "; skipped " + ", ".join(down)
    return Decision(tuple(t.name for t in ordered), reason, skipped=down,
                    modes=tuple(modes[t.name] for t in ordered))
