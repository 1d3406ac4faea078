"""The router: a pure function (request, sensitivity, fleet state) -> decision.

No sockets, no clocks: everything it needs is in its arguments, so every policy is a
unit test. A request nothing may serve raises the :mod:`edgewise.errors` exception that
says why (the API turns it into the HTTP error). Steps:

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
   (``edgewise.privacy.enforce``). If no tier qualifies: :class:`ClearanceError`.
3. **Fit.** Tiers whose context window (``max_context``; the local engine's ``n_ctx``)
   holds prompt + ``max_tokens`` are kept; if none does, those with room left after the
   prompt (the answer stops at the window, ``finish_reason: length``, as a single node
   does). Tiers that cannot call functions are dropped when the request uses tools.
4. **Budget (hard).** With ``x-edgewise-max-cost``, tiers whose cost for this request
   (``cost_per_1k × (prompt + max_tokens) / 1000``, with :data:`EXPECTED_COMPLETION`
   tokens when ``max_tokens`` is unset) exceeds it are dropped.
5. **Health.** Tiers with no available endpoint (all breakers open) are skipped; the
   reason names them. No eligible tier up: :class:`NoTierAvailableError` (503, or the
   durable queue for an async request).
6. **Order.** The rest are ranked by ``cost + energy_weight × energy_per_token ×
   tokens``, then mode (``clear`` before ``redact`` before ``allow``), then ladder
   position — cheapest first. The first answers; the
   others are the cascade's escalation path and the failover order.
7. **Latency SLO (soft).** With ``x-edgewise-max-latency-ms``, tiers whose live estimate
   (EWMA TTFT + max_tokens / tokens-per-second) exceeds it go to the back of the plan;
   if none meets it the fastest estimate leads and the reason says the SLO is at risk.

After ``route``, a configured learned router (``routing.router``) may send the request
straight to the top of the plan (:func:`apply_router_score`; the service scores the
prompt, off the event loop, and passes the number in — this module stays pure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgewise.errors import (
    BudgetError,
    ClearanceError,
    ContextLengthError,
    InvalidRequestError,
    NoTierAvailableError,
    UnknownModelError,
)
from edgewise.levels import Level
from edgewise.tiers.base import TierView

__all__ = ["EXPECTED_COMPLETION", "MODES", "Decision", "RouteRequest", "apply_router_score",
           "route"]

#: How a tier may receive a request, most preferred first (see step 2).
MODES: tuple[str, ...] = ("clear", "redact", "allow")

#: Completion tokens assumed for cost and latency estimates when a request sets no
#: ``max_tokens`` (the answer itself is only limited by the tier's context window).
EXPECTED_COMPLETION = 256


@dataclass(frozen=True)
class RouteRequest:
    #: The request's level: max(declared floor, what the detector found).
    sensitivity: Level = Level.PUBLIC
    #: What a label (request header, API key, ``routing.default_sensitivity``) declared;
    #: redaction cannot take a request below it.
    declared: Level = Level.PUBLIC
    model: str = "auto"
    prompt_tokens: int = 0
    #: ``None``: not set by the client (:data:`EXPECTED_COMPLETION` for estimates).
    max_tokens: int | None = None
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
    #: Tiers skipped because they are down (named in ``reason``).
    skipped: tuple[str, ...] = field(default=())
    #: How each tier of ``plan`` receives the request (``clear``, ``redact``, ``allow``).
    modes: tuple[str, ...] = field(default=())
    #: Whether the cascade may score the tiers below the last one (False: the plan is
    #: a failover order only — the learned router sent the request to the top tier).
    cascade: bool = True
    #: What the learned router scored ("learned router scored 0.31 < 0.60"), kept in the
    #: reason when another tier than the plan's first one answers.
    router_note: str = ""

    @property
    def tier(self) -> str | None:
        return self.plan[0] if self.plan else None

    def mode(self, tier: str) -> str:
        """How ``tier`` may receive the request (``clear`` when not set)."""
        if tier in self.plan and len(self.modes) == len(self.plan):
            return self.modes[self.plan.index(tier)]
        return "clear"


def _mode(t: TierView, need: Level, floor: Level) -> str | None:
    """How tier ``t`` may receive a request of level ``need`` declared at ``floor``."""
    if t.clearance >= need:
        return "clear"
    if t.escalation == "redact" and t.clearance >= floor:
        return "redact"
    if t.escalation == "allow":
        return "allow"
    return None


def _cost(t: TierView, tokens: int) -> float:
    return t.cost_per_1k_tokens * tokens / 1000.0


def route(req: RouteRequest, fleet: Sequence[TierView], *, energy_weight: float = 0.0
          ) -> Decision:
    """The plan for ``req``; raises ``UnknownModelError``, ``ClearanceError``,
    ``ContextLengthError``, ``InvalidRequestError`` (tools), ``BudgetError`` or
    ``NoTierAvailableError`` when nothing may or can serve it."""
    tokens = req.prompt_tokens + (req.max_tokens or EXPECTED_COMPLETION)
    names = [t.name for t in fleet]
    candidates = list(fleet)

    # 1. steering
    if req.model not in ("auto", "default"):
        pinned = [t for t in fleet if t.name == req.model or req.model in t.models]
        if not pinned:
            # the client's string is not quoted: messages never echo request content
            served = ", ".join(t.name + (f" serving {', '.join(map(repr, t.models))}"
                                         if t.models else "") for t in fleet)
            raise UnknownModelError(
                f"the requested model is not served here; available: 'auto', the tier "
                f"names or their models ({served}); GET /v1/models lists them",
                param="model")
        candidates = pinned[:1]
    if req.min_tier is not None:
        if req.min_tier not in names:
            raise InvalidRequestError(
                f"header x-edgewise-min-tier names no tier of this node (tiers: "
                f"{', '.join(names)})", param="x-edgewise-min-tier", code="invalid_value")
        floor_at = names.index(req.min_tier)
        candidates = [t for t in candidates if names.index(t.name) >= floor_at]

    # 2. clearance (hard), or the tier's escalation policy
    need, floor = req.sensitivity, req.declared
    modes = {t.name: m for t in candidates if (m := _mode(t, need, floor)) is not None}
    cleared = [t for t in candidates if t.name in modes]
    if not cleared:
        if len(candidates) == 1:
            t = candidates[0]
            why = (f"clearance {t.clearance}, escalation {t.escalation}"
                   + ("; a declared label is not lifted by redaction"
                      if t.escalation == "redact" else ""))
            raise ClearanceError(f"{need} data may not be sent to {t.name} ({why})")
        raise ClearanceError(f"{need} data may not be sent to any eligible tier "
                             "(clearance too low)")

    # 3. context fit: tiers that hold prompt + max_tokens; else those with room left to
    # answer at all (the answer stops at the window); function calling
    want = req.prompt_tokens + (req.max_tokens or 1)
    fits = [t for t in cleared if t.max_context is None or want <= t.max_context] or [
        t for t in cleared if t.max_context is None or req.prompt_tokens < t.max_context]
    if not fits:
        if len(cleared) == 1:
            raise ContextLengthError(
                f"this model's context window is {cleared[0].max_context} tokens and the "
                f"prompt uses {req.prompt_tokens}; shorten the messages (or serve with a "
                "larger engine.n_ctx)", param="messages")
        windows = ", ".join(f"{t.name} {t.max_context}" for t in cleared)
        raise ContextLengthError(
            f"the prompt uses {req.prompt_tokens} tokens and leaves no room for an answer "
            f"in the context window of any eligible tier ({windows} tokens); shorten the "
            "messages", param="messages")
    if req.uses_tools:
        fits = [t for t in fits if t.tools]
        if not fits:
            barred = [t.name for t in candidates if t.tools]
            if barred:  # tiers that could call functions exist, but not for this data
                raise ClearanceError(f"{need} data may not be sent to {', '.join(barred)}, "
                                     "the only tiers that call functions (clearance too low)")
            raise InvalidRequestError(
                "the request uses tools and no eligible tier calls functions (a local "
                "llama.cpp engine or a remote tier does)", param="tools",
                code="unsupported_parameter")

    # 4. budget (hard)
    if req.max_cost is not None:
        affordable = [t for t in fits if _cost(t, tokens) <= req.max_cost]
        if not affordable:
            raise BudgetError(f"no eligible tier costs ≤ {req.max_cost} for {tokens} tokens",
                              param="x-edgewise-max-cost")
        fits = affordable

    # 5. health
    up = [t for t in fits if t.available > 0]
    down = tuple(f"{t.name} ({t.down_reason or 'unavailable'})" for t in fits
                 if t.available <= 0)
    if not up:
        raise NoTierAvailableError("no eligible tier is reachable: " + ", ".join(down))

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


def apply_router_score(decision: Decision, score: float | None, threshold: float, *,
                       unavailable: str | None = None) -> Decision:
    """``decision`` after the learned router scored the prompt (``score``; ``None``: not
    scored, ``unavailable`` says why).

    At or above ``threshold`` the last tier of the plan — the most capable eligible one
    — answers first, without the cascade, and the others follow in descending order as
    failover (an answer from a lower tier beats none when the top one is down). Below
    it, the plan is unchanged. The reason says what the router scored (ASCII only: it
    becomes the ``x-edgewise-route-reason`` header)."""
    if len(decision.plan) < 2:
        return decision
    if score is None:
        if unavailable is None:
            return decision
        return dataclasses.replace(decision,
                                   reason=f"{decision.reason}; learned router {unavailable}")
    if score < threshold:
        note = f"learned router scored {score:.3f} < {threshold:.3f}"
        return dataclasses.replace(decision, reason=f"{note}; {decision.reason}",
                                   router_note=note)
    order = (decision.plan[-1], *reversed(decision.plan[:-1]))
    modes = tuple(decision.mode(t) for t in order) if decision.modes else ()
    note = f"learned router scored {score:.3f} >= {threshold:.3f}"
    reason = f"{note}: straight to the top eligible tier"
    if decision.skipped:
        reason += "; skipped " + ", ".join(decision.skipped)
    return Decision(order, reason, skipped=decision.skipped, modes=modes, cascade=False,
                    router_note=note)
