"""The fleet web page: the control plane's view of its nodes, rendered on the server.

The control plane knows each node from its enrolment (name, SPIFFE ID, tier, certificate)
and from its heartbeats (model, version, queue, latency, traffic, breakers, audit head,
config). :class:`FleetPage` turns a list of :class:`NodeRow` into three HTML pages — the
fleet table, one node's detail, and the admin login form — with Jinja2 templates that
ship in the package (``templates/``) and one stylesheet (``static/fleet.css``) inlined
into every page, so the page needs no second request, no CDN and no internet.

Why it is built this way:

* **Heartbeat values are attacker-influenced.** A compromised node chooses its model
  name, version, tier and breaker names and its config error text. Jinja's autoescape is
  on for every template and no node value is ever marked safe; the only ``Markup`` is the
  package's own stylesheet. A node's link is its name percent-encoded as one path
  segment (``/`` and ``?`` included, which Jinja's ``urlencode`` leaves alone), and
  names are wrapped in ``<bdi>`` so a right-to-left override cannot reorder the row. Long
  values are clipped for display (the full text, within reason, stays in a ``title``).
* **It works under a strict Content-Security-Policy** — ``default-src 'none'; style-src
  'self' 'unsafe-inline'; img-src 'self' data:`` — which the control plane sets as a
  header: no script at all (auto-refresh is ``<meta http-equiv="refresh">``), styles
  inline, the favicon a ``data:`` URL so the browser asks for nothing else.
* **Formatting happens in Python**, once per row, into plain strings: the templates only
  place them, which keeps them readable and 200 nodes render in a few milliseconds.
  Missing numbers (a node that has not sent a heartbeat yet) and non-finite ones show
  as an em dash.
"""

from __future__ import annotations

import math
import shlex
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from edgewise.errors import ConfigError
from edgewise.federated.status import RunStatus

__all__ = ["BREAKER_STATES", "STATUSES", "FleetPage", "FleetSummary", "NodeRow", "summarize"]

#: Node statuses the page knows; each has a badge colour (``status-<name>`` in the CSS).
STATUSES = ("online", "offline", "revoked", "enrolled")
#: Circuit-breaker states the page knows (``breaker-<name>`` in the CSS).
BREAKER_STATES = ("closed", "open", "half_open")
#: What a missing or non-finite number shows as.
DASH = "—"
#: Characters of a heartbeat string shown in a table cell / on the detail page / in a title.
_CELL_CHARS, _DETAIL_CHARS, _TITLE_CHARS = 48, 2048, 512
#: Colours of the tier-share bar: the usual tier names get fixed ones, others a hash.
_TIER_COLOURS = {"device": 0, "gateway": 1, "regional": 2, "cloud": 3}
_PALETTE_SIZE = 6
#: A certificate closer than this to expiry is flagged (node certs are short-lived and
#: renewed well before; one this close has missed its renewals).
_CERT_SOON_S = 3600.0


@dataclass(frozen=True)
class NodeRow:
    """One node as the control plane sees it: enrolment facts plus its last heartbeat."""

    name: str
    spiffe_id: str
    tier: str
    status: str  # "online" | "offline" | "revoked" | "enrolled"
    cert_not_after: datetime | None
    last_seen: datetime | None
    version: str | None = None  # the edgewise version the node runs
    model: str | None = None
    model_digest: str | None = None  # sha256 hex
    queue_depth: int | None = None
    tokens_per_s: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    error_rate: float | None = None  # 0..1
    requests: int | None = None  # requests since the node started
    tier_share: Mapping[str, float] = field(default_factory=dict)  # tier -> share 0..1
    escalations: int | None = None
    redactions: int | None = None
    breakers: Mapping[str, str] = field(default_factory=dict)  # tier -> closed/open/half_open
    energy_j: float | None = None
    audit_head: str | None = None  # "seq:hash"
    config_version: str | None = None
    config_error: str | None = None
    #: Signed model updates: "gemma@3 (stable), current" or why the last was refused.
    update: str | None = None


@dataclass(frozen=True)
class FleetSummary:
    """The counts in the page header."""

    nodes: int
    online: int
    offline: int
    revoked: int
    requests: int
    escalations: int
    redactions: int


def summarize(rows: Sequence[NodeRow]) -> FleetSummary:
    """Count nodes by status and add up their traffic (a missing count adds nothing)."""
    return FleetSummary(
        nodes=len(rows),
        online=sum(r.status == "online" for r in rows),
        offline=sum(r.status == "offline" for r in rows),
        revoked=sum(r.status == "revoked" for r in rows),
        requests=sum(r.requests or 0 for r in rows),
        escalations=sum(r.escalations or 0 for r in rows),
        redactions=sum(r.redactions or 0 for r in rows),
    )


class FleetPage:
    """Renders the fleet pages; one instance per control plane, safe to share."""

    def __init__(self, *, fleet: str, refresh_s: int = 5) -> None:
        if not isinstance(refresh_s, int) or isinstance(refresh_s, bool) or refresh_s < 1:
            raise ConfigError(f"fleet page refresh_s must be a whole number of seconds >= 1, "
                              f"got {refresh_s!r}")
        self.fleet_name = fleet
        self.refresh_s = refresh_s
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("edgewise.control", "templates"),
            autoescape=jinja2.select_autoescape(["html"], default_for_string=True,
                                                default=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # The package's own stylesheet, the one trusted blob on the page.
        css = resources.files("edgewise.control").joinpath("static/fleet.css")
        self._css = Markup(css.read_text(encoding="utf-8"))

    def fleet(self, rows: Sequence[NodeRow], *, now: datetime, ca_fingerprint: str,
              admin: bool, rollouts: Sequence[dict[str, Any]] = (),
              federated: Sequence[tuple[str, RunStatus | None]] = ()) -> str:
        """The fleet table: a header with counts and one row per node; then the newest
        rollouts (``Rollout.to_json()``): step, nodes on the new version, gate values,
        decision; then the newest federated runs: rounds, nodes, held-out loss and exact
        match per round, ε spent against the budget."""
        now = _utc(now)
        return self._render("fleet.html", now, refresh=True, admin=admin,
                            ca_fingerprint=ca_fingerprint, summary=summarize(rows),
                            rows=[_row_view(r, now, _CELL_CHARS) for r in rows],
                            rollouts=[_rollout_view(r) for r in rollouts],
                            federated=[_federated_view(n, s) for n, s in federated])

    def node(self, row: NodeRow, *, now: datetime, admin: bool) -> str:
        """One node's detail page: everything in its row, its breakers and audit head."""
        now = _utc(now)
        view = _row_view(row, now, _DETAIL_CHARS)
        return self._render("node.html", now, refresh=True, admin=admin, row=view,
                            revoke_command=f"edgewise control revoke "
                                           f"{shlex.quote(row.name)}")

    def login(self, *, error: str | None = None, next_path: str = "/") -> str:
        """The admin login form: POSTs ``token`` (an admin access token) and ``next``."""
        # Only a local path goes back into the form; the POST handler checks it again.
        if not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
            next_path = "/"
        return self._render("login.html", datetime.now(UTC), refresh=False, admin=False,
                            error=error, next_path=next_path)

    def _render(self, template: str, now: datetime, *, refresh: bool, **context: Any) -> str:
        return self._env.get_template(template).render(
            fleet=self.fleet_name, refresh_s=self.refresh_s if refresh else None,
            css=self._css, rendered_at=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
            rendered_iso=now.isoformat(timespec="seconds"), **context)


# -- formatting: NodeRow -> the strings the templates place ----------------------------

def _rollout_view(r: dict[str, Any]) -> SimpleNamespace:
    gv = r.get("gate_values") or {}
    gates = []
    for text, g in (gv.get("gates") or {}).items():
        verdict = {True: "pass", False: "fail", None: "no data"}.get(g.get("pass"), "no data")
        value = g.get("value")
        gates.append(SimpleNamespace(text=_clip(str(text), 40), verdict=verdict,
                                     value="—" if value is None else f"{float(value):.4g}"))
    return SimpleNamespace(
        id=int(r["id"]), ref=_clip(f"{r['model']}@{r['version']}", 80),
        incumbent=int(r["incumbent"]), alias=_clip(str(r["alias"]), 64),
        state=str(r["state"]).replace("_", " "), state_class=str(r["state"]),
        step=f"{r['step']}/{r['steps']} {r['phase']}"
             + (f", A/B {float(split) * 100:g}%" if (split := (r.get("plan") or {})
                                                     .get("split")) else ""),
        nodes=_clip(", ".join(r["assigned"]), _DETAIL_CHARS),
        n_nodes=len(r["assigned"]), eligible=len(r["eligible"]), gates=gates,
        reason=_clip(str(r.get("reason") or "—"), _DETAIL_CHARS),
        started=str(r["created_at"])[:19].replace("T", " "))


def _federated_view(name: str, s: RunStatus | None) -> SimpleNamespace:
    if s is None:
        return SimpleNamespace(name=_clip(name, 64), state="missing", state_class="failed",
                               rounds="—", nodes="—", curve=[], privacy="—",
                               error="its run folder is gone or unreadable")
    p = s.privacy
    budget = p.get("max_epsilon")
    privacy = ("no DP" if not p else
               f"ε {_num(s.epsilon, '{:.2f}')} of {budget if budget is not None else 'no limit'}"
               f" (δ {p.get('delta')})")
    taking_part = sum(1 for n in s.nodes.values() if n.rounds)
    dropped = sum(1 for n in s.nodes.values() if n.state == "dropped")
    curve = [SimpleNamespace(round=r.round, nodes=f"{len(r.replied)}/{len(r.sampled)}",
                             loss=_num(r.eval_loss, "{:.3f}"),
                             exact="—" if r.eval_exact is None else f"{100 * r.eval_exact:.0f}%",
                             epsilon=_num(r.epsilon, "{:.2f}")) for r in s.rounds[-12:]]
    return SimpleNamespace(
        name=_clip(s.run, 64), state=s.state, state_class=s.state,
        rounds=f"{len(s.rounds)}/{s.rounds_planned}",
        nodes=f"{taking_part} took part" + (f", {dropped} dropped" if dropped else ""),
        strategy=_clip(f"{s.strategy} + {s.aggregation}", 40), curve=curve,
        privacy=_clip(privacy, 64), error=_clip(s.error or "—", _DETAIL_CHARS))


def _row_view(r: NodeRow, now: datetime, chars: int) -> SimpleNamespace:
    """The row as display strings (a namespace: Jinja reads attributes fastest)."""
    cert_text, cert_class = _cert_expiry(r.cert_not_after, now)
    digest = (r.model_digest or "").removeprefix("sha256:")
    return SimpleNamespace(**{
        "name": _clip(r.name, chars),
        "name_title": _clip(r.name, _TITLE_CHARS),
        "href": "/nodes/" + quote(r.name, safe=""),
        "spiffe_id": _clip(r.spiffe_id, max(chars, 96)),
        "tier": _clip(r.tier, chars),
        "status": _clip(r.status, chars),
        "status_class": "status-" + (r.status if r.status in STATUSES else "unknown"),
        "cert": cert_text,
        "cert_class": cert_class,
        "cert_iso": _iso(r.cert_not_after),
        "last_seen": _last_seen(r.last_seen, now),
        "last_seen_iso": _iso(r.last_seen),
        "version": _text(r.version, chars),
        "model": _text(r.model, chars),
        "model_title": _clip(r.model or "", _TITLE_CHARS),
        "digest_short": digest[:12] if digest else "",
        "digest": _clip(digest, 128),
        "queue": _int(r.queue_depth),
        "tokens_per_s": _num(r.tokens_per_s, "{:,.1f}"),
        "ttft": f"{_num(r.ttft_p50_ms, '{:,.0f}')} / {_num(r.ttft_p95_ms, '{:,.0f}')}",
        "ttft_p50": _num(r.ttft_p50_ms, "{:,.0f} ms"),
        "ttft_p95": _num(r.ttft_p95_ms, "{:,.0f} ms"),
        "error_rate": _num(None if r.error_rate is None else r.error_rate * 100, "{:.1f} %"),
        "requests": _int(r.requests),
        "shares": _shares(r.tier_share, chars),
        "escalations": _int(r.escalations),
        "redactions": _int(r.redactions),
        "breakers": [SimpleNamespace(tier=_clip(t, chars), state=_clip(s.replace("_", "-"), chars),
                                     cls="breaker-" + (s if s in BREAKER_STATES else "unknown"))
                     for t, s in sorted(r.breakers.items())],
        "energy": _num(r.energy_j, "{:,.1f} J"),
        "audit_head": _text(r.audit_head, chars),
        "config_version": _text(r.config_version, chars),
        "config_error": None if r.config_error is None else _clip(r.config_error, chars),
        "config_error_title": _clip(r.config_error or "", _TITLE_CHARS),
        "update": None if r.update is None else _clip(r.update, chars),
    })


def _shares(share: Mapping[str, float], chars: int) -> list[SimpleNamespace]:
    """Tier shares, largest first: label, percentage text and bar width (0..100)."""
    items = [(t, s) for t, s in share.items() if isinstance(s, int | float) and math.isfinite(s)]
    items.sort(key=lambda ts: (-ts[1], ts[0]))
    out = []
    for tier, s in items:
        pct = min(max(s, 0.0), 1.0) * 100
        text = "<1 %" if 0 < pct < 0.5 else f"{pct:.0f} %"
        colour = _TIER_COLOURS.get(tier, zlib.crc32(tier.encode("utf-8", "replace"))
                                   % _PALETTE_SIZE)
        out.append(SimpleNamespace(tier=_clip(tier, chars), pct=text, width=f"{pct:.1f}",
                                   cls=f"seg-{colour}"))
    return out


def _cert_expiry(not_after: datetime | None, now: datetime) -> tuple[str, str]:
    if not_after is None:
        return DASH, ""
    left = (_utc(not_after) - now).total_seconds()
    if left <= 0:
        return f"expired {_span(left)} ago", "cert-expired"
    return f"in {_span(left)}", "cert-soon" if left < _CERT_SOON_S else ""


def _last_seen(seen: datetime | None, now: datetime) -> str:
    if seen is None:
        return "never"
    ago = (now - _utc(seen)).total_seconds()
    return "just now" if ago < 5 else f"{_span(ago)} ago"  # (a future time is clock skew)


def _span(seconds: float) -> str:
    """A duration as people read it: ``42 s``, ``5 min``, ``23 h``, ``3 d`` (rounded down)."""
    s = abs(seconds)
    if s < 60:
        return f"{int(s)} s"
    if s < 3600:
        return f"{int(s // 60)} min"
    if s < 48 * 3600:
        return f"{int(s // 3600)} h"
    return f"{int(s // 86400)} d"


def _utc(dt: datetime) -> datetime:
    """Aware UTC; a naive time is taken to be UTC already (the control store keeps UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _iso(dt: datetime | None) -> str:
    return "" if dt is None else _utc(dt).isoformat(timespec="seconds")


def _num(value: float | None, fmt: str) -> str:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return DASH
    return fmt.format(value)


def _int(value: int | None) -> str:
    return DASH if value is None or not isinstance(value, int) else f"{value:,}"


def _text(value: str | None, chars: int) -> str:
    return DASH if value is None or value == "" else _clip(value, chars)


def _clip(value: str, chars: int) -> str:
    return value if len(value) <= chars else value[: chars - 1] + "…"
