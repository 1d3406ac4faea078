"""Canary rollouts: a registry version moved through the fleet step by step, each step
baked under gates, rolled back on its own when one fails.

``edgewise control rollout start gemma@4 --steps 1,25,100 --bake 600 --gate
ttft_p95<=1.5x --probes probes.jsonl`` plans a rollout of ``gemma@4`` to the nodes that
follow ``gemma`` under the alias (``stable`` by default) and match ``--nodes``; the
version that alias names now is the *incumbent*.

**Steps.** ``25`` is a share of those nodes (rounded up: in a small fleet the first step
is one node, the canary), ``3n`` a count. The nodes of a step are the first ones of a
fixed order (drawn at start from a hash of the rollout and the node name), so each step
only adds nodes. Nodes are told through the signed alias pointer (``NAME/aliases.json``,
:mod:`edgewise.control.release`): its ``rollout`` entry names the version and the nodes
that run it; every other node keeps the alias's version. A node never named in a
rollout's pointer never downloads its version.

**Phases of a step.** *deploying* until every node of the step reports (heartbeat) that
it serves the version, then *baking* for ``--bake`` seconds. Gates are evaluated at
every tick (each second) on the heartbeats that arrived since the bake began:

======================  =================================================================
``error_rate<=0.05``    share of failed answers on the new version (absolute)
``ttft_p95<=1.5x``      time to first token, p95: ``x`` relative to the incumbent, else ms
``tokens_per_s>=0.8x``  decode speed per request (median), relative or absolute
``accuracy_drop<=0.02`` the probe set's accuracy, incumbent minus new, on each canary
======================  =================================================================

The incumbent's telemetry is the same model's other nodes over the same time (at the
last step, when no node is left on the incumbent, its values from the step before). A
gate without data yet (no traffic) neither passes nor fails; the quality gate is
required when ``--probes`` is given: every canary node scores the probe set on both
versions (:mod:`edgewise.supply.probe`) and reports it. A step passes when the bake time is over
and no gate failed; the last step moves the alias to the new version and the rollout is
``completed``.

**A/B** (``--split 10``): each node of a step serves the new version *beside* the
incumbent, to that percentage of its requesters (a stable hash of who asks:
:meth:`edgewise.node.Node.split`), so both versions answer the same traffic on the same
machine; the gates compare the two versions' own telemetry on the step's nodes
(heartbeats carry it ``by_model``, per version label ``NAME@VERSION``). A step is
deployed when its nodes report the split. Completion moves the alias and every node
serves the new version alone; a rollback ends the split on the incumbent.

**Rollback.** A failing gate (or a node that refuses the version, or a step that does
not deploy within ``--step-timeout``) re-signs the pointer without the rollout: every
node of the rollout returns to the incumbent — kept on disk, re-verified, swapped in
with no failed request — at its next heartbeat, whose answer tells it to check now. The
decision, the gate values and the reason are kept (``rollout_events``, append-only) and
audited. ``pause`` holds the rollout at its step (gates keep being enforced), ``resume``
goes on, ``abort`` rolls back.

Several control-plane replicas may tick the same rollout: each change is made only from
the ``revision`` it read (compare-and-set), so a decision is taken once. The telemetry
a tick evaluates lives in memory (rebuilt from the next heartbeats after a restart).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from edgewise.control.migrations import JSON_BODY, UTCDateTime
from edgewise.control.store import ControlStore, NodeRecord
from edgewise.errors import ConflictError, InvalidRequestError, UnknownModelError

__all__ = ["GATE_METRICS", "TABLES", "Gate", "Plan", "Rollout", "RolloutEvent",
           "RolloutStore", "Step", "evaluate", "label", "parse_gate", "parse_split",
           "parse_steps", "select_nodes"]

State = Literal["running", "paused", "completed", "rolled_back", "aborted"]
ACTIVE: tuple[State, ...] = ("running", "paused")

#: metric -> (what it measures, the comparison that passes, the unit of an absolute value)
GATE_METRICS: dict[str, tuple[str, str, str]] = {
    "error_rate": ("share of failed answers", "<=", ""),
    "ttft_p95": ("time to first token, p95", "<=", "ms"),
    "tokens_per_s": ("decode speed per request", ">=", "tokens/s"),
    "accuracy_drop": ("probe accuracy lost (incumbent - new)", "<=", ""),
}
DEFAULT_GATES = ("error_rate<=0.05",)

_meta = sa.MetaData()
_rollouts = sa.Table(
    "rollouts", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text), sa.Column("version", sa.Integer),
    sa.Column("incumbent", sa.Integer), sa.Column("alias", sa.Text),
    sa.Column("plan", JSON_BODY), sa.Column("state", sa.Text), sa.Column("step", sa.Integer),
    sa.Column("phase", sa.Text), sa.Column("phase_at", UTCDateTime()),
    sa.Column("eligible", JSON_BODY), sa.Column("assigned", JSON_BODY),
    sa.Column("gate_values", JSON_BODY), sa.Column("reason", sa.Text),
    sa.Column("revision", sa.Integer), sa.Column("created_at", UTCDateTime()),
    sa.Column("created_by", sa.Text), sa.Column("updated_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
)
_events = sa.Table(
    "rollout_events", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("rollout_id", sa.Integer), sa.Column("at", UTCDateTime()),
    sa.Column("kind", sa.Text), sa.Column("by", sa.Text), sa.Column("detail", JSON_BODY),
)
_artifacts = sa.Table("registry_artifacts", _meta, sa.Column("name", sa.Text, primary_key=True))
TABLES = (_rollouts, _events)


# -- the plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float
    relative: bool = False

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}{'x' if self.relative else ''}"

    def passes(self, new: float, incumbent: float | None) -> bool | None:
        """Whether ``new`` passes (``None``: a relative gate with no incumbent value)."""
        if self.relative:
            if incumbent is None or incumbent <= 0:
                return None
            bound = incumbent * self.value
        else:
            bound = self.value
        return new <= bound if self.op == "<=" else new >= bound


_GATE = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)(x?)\s*$")


def parse_gate(text: str) -> Gate:
    """``error_rate<=0.05``, ``ttft_p95<=1.5x``... (the module docstring's table)."""
    m = _GATE.match(text)
    if m is None:
        raise InvalidRequestError(
            f"--gate {text[:80]!r}: write METRIC<=VALUE or METRIC>=VALUE (a trailing x: "
            f"relative to the incumbent), METRIC one of {', '.join(GATE_METRICS)}",
            param="gates")
    metric, op, value, rel = m.groups()
    if metric not in GATE_METRICS:
        raise InvalidRequestError(f"--gate {text!r}: unknown metric {metric}; use one of "
                                  f"{', '.join(GATE_METRICS)}", param="gates")
    want = GATE_METRICS[metric][1]
    if op != want:
        raise InvalidRequestError(f"--gate {text!r}: {metric} passes when it is {want} a "
                                  f"bound (write {metric}{want}{value}{rel})", param="gates")
    number = float(value)
    if not math.isfinite(number) or (rel and metric in ("error_rate", "accuracy_drop")):
        raise InvalidRequestError(f"--gate {text!r}: {metric} takes an absolute value",
                                  param="gates")
    return Gate(metric=metric, op=op, value=number, relative=bool(rel))


@dataclass(frozen=True)
class Step:
    """A share of the eligible nodes (percent), or a count (``3n``)."""

    percent: float | None = None
    count: int | None = None

    @property
    def text(self) -> str:
        return f"{self.count}n" if self.count is not None else f"{self.percent:g}"

    def nodes(self, eligible: int) -> int:
        if eligible == 0:
            return 0
        if self.count is not None:
            return min(self.count, eligible)
        assert self.percent is not None
        return min(eligible, max(1, math.ceil(self.percent / 100 * eligible - 1e-9)))


def parse_steps(text: str | Sequence[str]) -> list[Step]:
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    steps: list[Step] = []
    for p in parts:
        try:
            if p.endswith("n"):
                n = int(p[:-1])
                if n < 1:
                    raise ValueError
                steps.append(Step(count=n))
            else:
                v = float(p.rstrip("%"))
                if not 0 < v <= 100:
                    raise ValueError
                steps.append(Step(percent=v))
        except ValueError:
            raise InvalidRequestError(
                f"--steps {p!r}: each step is a percentage of the nodes (0-100] or a count "
                "like 3n; e.g. --steps 1,25,100", param="steps") from None
    if not steps or len(steps) > 20:
        raise InvalidRequestError("--steps: give 1 to 20 steps, e.g. 1,25,100",
                                  param="steps")
    if steps[-1].percent != 100:
        steps.append(Step(percent=100))  # a rollout that completes reaches every node
    return steps


@dataclass(frozen=True)
class Plan:
    steps: list[Step]
    gates: list[Gate]
    bake_s: float
    selector: str | None = None
    probes: str | None = None  # the probe set's sha256 (a blob; a TUF target per rollout)
    probes_n: int = 0
    step_timeout_s: float = 600.0
    #: A/B: the share of requesters a step's nodes send to the new version, beside the
    #: incumbent (``None``: the nodes serve the new version alone).
    split: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"steps": [s.text for s in self.steps], "gates": [g.text for g in self.gates],
                "bake_s": self.bake_s, "selector": self.selector,
                "probes": self.probes, "probes_n": self.probes_n,
                "step_timeout_s": self.step_timeout_s, "split": self.split}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(steps=parse_steps(d["steps"]), gates=[parse_gate(g) for g in d["gates"]],
                   bake_s=float(d["bake_s"]), selector=d.get("selector"),
                   probes=d.get("probes"),
                   probes_n=int(d.get("probes_n") or 0),
                   step_timeout_s=float(d.get("step_timeout_s") or 600),
                   split=None if d.get("split") is None else float(d["split"]))


def parse_split(percent: float | None) -> float | None:
    """``--split 10`` (percent of requesters on the new version) as a share, or None."""
    if percent is None:
        return None
    if not math.isfinite(percent) or not 0 < percent < 100:
        raise InvalidRequestError(
            f"--split {percent:g}: the percentage of requesters the new version serves "
            "beside the incumbent, above 0 and below 100 (e.g. --split 10)", param="split")
    return percent / 100


def select_nodes(nodes: Sequence[NodeRecord], *, name: str, alias: str,
                 selector: str | None) -> list[str]:
    """The enrolled, unrevoked nodes that follow ``name`` under ``alias`` (their last
    heartbeat says so) and match ``selector``: comma-separated node names or globs
    (``edge-*``), or ``tier=NAME``."""
    out = []
    for n in nodes:
        if n.revoked_at is not None:
            continue
        u = (n.heartbeat or {}).get("update") or {}
        if u.get("model") != name or u.get("alias") != alias:
            continue
        if selector and not _matches(selector, n):
            continue
        out.append(n.name)
    return sorted(out)


def _matches(selector: str, node: NodeRecord) -> bool:
    for part in (p.strip() for p in selector.split(",")):
        if part.startswith("tier="):
            if node.tier == part[5:]:
                return True
        elif part and fnmatch.fnmatchcase(node.name, part):
            return True
    return False


def order(rollout_seed: str, names: Sequence[str]) -> list[str]:
    """A fixed order of the eligible nodes, spread by a hash (not alphabetical: the
    canary of one rollout is not always the same machine)."""
    return sorted(names, key=lambda n: hashlib.sha256(f"{rollout_seed}/{n}".encode()).digest())


# -- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutEvent:
    at: datetime
    kind: str
    by: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "by": self.by,
                "detail": self.detail}


@dataclass(frozen=True)
class Rollout:
    id: int
    name: str
    version: int
    incumbent: int
    alias: str
    plan: Plan
    state: State
    step: int
    phase: str  # deploying | baking | done
    phase_at: datetime
    eligible: list[str]
    assigned: list[str]
    gate_values: dict[str, Any]
    reason: str
    revision: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    finished_at: datetime | None = None
    events: list[RolloutEvent] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def pointer(self, probes_target: str | None) -> dict[str, Any]:
        """The ``rollout`` entry of the signed alias pointer nodes read."""
        return {"id": self.id, "alias": self.alias, "version": self.version,
                "incumbent": self.incumbent, "nodes": sorted(self.assigned),
                "probes": probes_target, "split": self.plan.split}

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.name, "version": self.version,
                "incumbent": self.incumbent, "alias": self.alias, "plan": self.plan.to_json(),
                "state": self.state, "step": self.step + 1, "steps": len(self.plan.steps),
                "phase": self.phase, "phase_at": self.phase_at.isoformat(),
                "eligible": self.eligible, "assigned": self.assigned,
                "gate_values": self.gate_values, "reason": self.reason,
                "created_at": self.created_at.isoformat(), "created_by": self.created_by,
                "updated_at": self.updated_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "events": [e.to_json() for e in self.events]}


class RolloutStore:
    """Rollout rows in the control store's database (module docstring)."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store

    def _tx(self, what: str, *, write: bool = True) -> AbstractContextManager[Connection]:
        return self._store._tx(f"rollout {what}", write=write)

    def create(self, *, name: str, version: int, incumbent: int, alias: str, plan: Plan,
               eligible: list[str], by: str, now: datetime) -> Rollout:
        """A running rollout at its first step (its nodes assigned); ``ConflictError``
        while another rollout of ``name`` is active."""
        with self._tx("start") as conn:
            _lock_artifact(conn, name)
            busy = conn.execute(sa.select(_rollouts.c.id, _rollouts.c.version).where(
                _rollouts.c.name == name, _rollouts.c.state.in_(ACTIVE))).first()
            if busy is not None:
                raise ConflictError(
                    f"rollout {busy.id} of {name}@{busy.version} is still active: `edgewise "
                    f"control rollout abort {busy.id}` or wait for it to finish")
            rid = conn.execute(_rollouts.insert().values(
                name=name, version=version, incumbent=incumbent, alias=alias,
                plan=plan.to_json(), state="running", step=0, phase="deploying",
                phase_at=now, eligible=eligible, assigned=[], gate_values={}, reason="",
                revision=0, created_at=now, created_by=by, updated_at=now,
            ).returning(_rollouts.c.id)).scalar_one()
            ordered = order(str(rid), eligible)
            assigned = ordered[:plan.steps[0].nodes(len(ordered))]
            conn.execute(_rollouts.update().where(_rollouts.c.id == rid).values(
                eligible=ordered, assigned=assigned))
            conn.execute(_events.insert().values(
                rollout_id=rid, at=now, kind="start", by=by,
                detail={"plan": plan.to_json(), "nodes": assigned, "eligible": len(ordered)}))
        got = self.get(rid)
        assert got is not None
        return got

    def change(self, r: Rollout, *, now: datetime, by: str, kind: str,
               detail: dict[str, Any], **values: Any) -> Rollout | None:
        """Apply ``values`` to rollout ``r`` if nobody changed it since ``r`` was read
        (its revision); the updated rollout, or None when another replica got there
        first."""
        with self._tx(kind) as conn:
            done = conn.execute(_rollouts.update().where(
                _rollouts.c.id == r.id, _rollouts.c.revision == r.revision).values(
                revision=r.revision + 1, updated_at=now, **values))
            if done.rowcount != 1:
                return None
            conn.execute(_events.insert().values(rollout_id=r.id, at=now, kind=kind, by=by,
                                                 detail=detail))
        return self.get(r.id)

    def get(self, rid: int, *, events: bool = False) -> Rollout | None:
        with self._tx("read", write=False) as conn:
            row = conn.execute(sa.select(_rollouts).where(_rollouts.c.id == rid)).first()
            if row is None:
                return None
            evs = [] if not events else [
                RolloutEvent(at=e.at, kind=e.kind, by=e.by, detail=e.detail)
                for e in conn.execute(sa.select(_events).where(_events.c.rollout_id == rid)
                                      .order_by(_events.c.id))]
        return _rollout(row, evs)

    def active(self) -> list[Rollout]:
        with self._tx("read", write=False) as conn:
            rows = conn.execute(sa.select(_rollouts).where(_rollouts.c.state.in_(ACTIVE))
                                .order_by(_rollouts.c.id)).all()
        return [_rollout(r, []) for r in rows]

    def list(self, *, name: str | None = None, limit: int = 100) -> list[Rollout]:
        q = sa.select(_rollouts).order_by(_rollouts.c.id.desc()).limit(limit)
        if name is not None:
            q = q.where(_rollouts.c.name == name)
        with self._tx("read", write=False) as conn:
            rows = conn.execute(q).all()
        return [_rollout(r, []) for r in rows]


def _lock_artifact(conn: Connection, name: str) -> None:
    q = sa.select(_artifacts.c.name).where(_artifacts.c.name == name)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    if conn.execute(q).first() is None:
        raise UnknownModelError(f"no model {name} in the registry", param="model")


def _rollout(row: Row[Any], events: list[RolloutEvent]) -> Rollout:
    return Rollout(id=row.id, name=row.name, version=row.version, incumbent=row.incumbent,
                   alias=row.alias, plan=Plan.from_json(row.plan), state=row.state,
                   step=row.step, phase=row.phase, phase_at=row.phase_at,
                   eligible=list(row.eligible), assigned=list(row.assigned),
                   gate_values=dict(row.gate_values), reason=row.reason,
                   revision=row.revision, created_at=row.created_at,
                   created_by=row.created_by, updated_at=row.updated_at,
                   finished_at=row.finished_at, events=events)


# -- evidence and gates --------------------------------------------------------------------
@dataclass
class _Side:
    """Telemetry of one version over the bake: sums over heartbeat intervals."""

    requests: int = 0
    errors: float = 0.0
    ttft_weighted: float = 0.0
    ttft_n: int = 0
    tps_weighted: float = 0.0
    tps_n: int = 0

    def add(self, s: dict[str, Any], n: int) -> None:
        """One interval of ``n`` answers with these stats."""
        if n <= 0:
            return
        self.requests += n
        if s.get("error_rate") is not None:
            self.errors += float(s["error_rate"]) * n
        if s.get("ttft_p95_ms") is not None:
            self.ttft_weighted += float(s["ttft_p95_ms"]) * n
            self.ttft_n += n
        tps = s.get("decode_tps_p50", s.get("tokens_per_s"))
        if tps:
            self.tps_weighted += float(tps) * n
            self.tps_n += n

    def values(self) -> dict[str, float | None]:
        return {"requests": self.requests,
                "error_rate": self.errors / self.requests if self.requests else None,
                "ttft_p95": self.ttft_weighted / self.ttft_n if self.ttft_n else None,
                "tokens_per_s": self.tps_weighted / self.tps_n if self.tps_n else None}


@dataclass
class Evidence:
    """What a tick has seen of one rollout step (in memory, per replica)."""

    key: tuple[int, int, str]  # rollout, step, phase start
    new: _Side = field(default_factory=_Side)
    incumbent: _Side = field(default_factory=_Side)
    seen: dict[str, str] = field(default_factory=dict)  # node -> last heartbeat taken
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)


def label(name: str, version: int) -> str:
    """The version label a node reports a release's telemetry under (``by_model``)."""
    return f"{name}@{version}"


def gather(ev: Evidence, r: Rollout, nodes: dict[str, NodeRecord]) -> None:
    """Add the heartbeats that arrived since the last tick to ``ev``: the new version's
    from the step's nodes, the incumbent's from the others — or, for an A/B rollout,
    both from the step's nodes (their ``by_model`` sections)."""
    assigned = set(r.assigned)
    new_label, old_label = label(r.name, r.version), label(r.name, r.incumbent)
    for name in r.eligible:
        rec = nodes.get(name)
        if rec is None or rec.last_seen is None or rec.last_seen <= r.phase_at:
            continue
        stamp = rec.last_seen.isoformat()
        if ev.seen.get(name) == stamp:
            continue
        ev.seen[name] = stamp
        hb = rec.heartbeat or {}
        u = hb.get("update") or {}
        probe = u.get("probe")
        if name in assigned and isinstance(probe, dict) and probe.get("rollout") == r.id \
                and probe.get("version") == r.version:
            ev.probes[name] = probe
        if r.plan.split is not None:
            split = u.get("split") or {}
            by_model = hb.get("by_model") or {}
            if name in assigned and split.get("version") == r.version \
                    and u.get("installed") == r.incumbent:
                for side, lab in ((ev.new, new_label), (ev.incumbent, old_label)):
                    stat = by_model.get(lab)
                    if isinstance(stat, dict):
                        side.add(stat, int(stat.get("interval_requests") or 0))
            continue
        if name in assigned and u.get("installed") == r.version:
            ev.new.add(hb, int(hb.get("interval_requests") or 0))
        elif name not in assigned and u.get("installed") == r.incumbent:
            ev.incumbent.add(hb, int(hb.get("interval_requests") or 0))


def evaluate(r: Rollout, ev: Evidence, baseline: dict[str, Any] | None = None
             ) -> tuple[dict[str, Any], str | None]:
    """Each gate's values and verdict; the reason of the first failing gate (or None).
    ``baseline``: the incumbent's values from an earlier step, for a step that leaves no
    incumbent node to compare with."""
    new = ev.new.values()
    inc = ev.incumbent.values()
    if baseline and not inc["requests"]:
        inc = {**inc, **{k: v for k, v in baseline.items() if v is not None}}
    out: dict[str, Any] = {"new": new, "incumbent": inc, "gates": {}}
    failed = None
    for g in r.plan.gates:
        if g.metric == "accuracy_drop":
            if not ev.probes:
                verdict, value = None, None
            else:
                worst = max(ev.probes.items(),
                            key=lambda kv: float(kv[1]["incumbent_accuracy"])
                            - float(kv[1]["accuracy"]))
                value = float(worst[1]["incumbent_accuracy"]) - float(worst[1]["accuracy"])
                verdict = g.passes(value, None)
                out["probes"] = ev.probes
        else:
            value = new.get(g.metric)
            verdict = None if value is None else g.passes(value, inc.get(g.metric))
        out["gates"][g.text] = {"value": value, "pass": verdict}
        if verdict is False and failed is None:
            if g.metric == "accuracy_drop":
                p = worst[1]
                failed = (f"gate {g.text} failed on {worst[0]}: probe accuracy "
                          f"{float(p['accuracy']):.3f} on v{r.version} vs "
                          f"{float(p['incumbent_accuracy']):.3f} on v{r.incumbent} "
                          f"({p.get('n')} probes)")
            else:
                ref = inc.get(g.metric)
                failed = (f"gate {g.text} failed: {g.metric} {value:.4g} on v{r.version}"
                          + (f" vs {ref:.4g} on v{r.incumbent}" if ref is not None else "")
                          + f" over {new['requests']} requests")
    return out, failed


def missing(r: Rollout, ev: Evidence) -> list[str]:
    """What the step still needs before it may pass (besides the bake time)."""
    need = []
    if r.plan.probes:
        lacking = sorted(set(r.assigned) - set(ev.probes))
        if lacking:
            need.append(f"probe results from {', '.join(lacking[:5])}")
    return need


def deployed(r: Rollout, nodes: dict[str, NodeRecord]) -> tuple[list[str], list[str]]:
    """The assigned nodes that serve the version (reported after the phase began; for
    an A/B rollout: beside the incumbent, at the planned share), and the ones whose
    update was refused (with why)."""
    done, refused = [], []
    for name in r.assigned:
        rec = nodes.get(name)
        if rec is None or rec.last_seen is None or rec.last_seen < r.phase_at:
            continue
        u = (rec.heartbeat or {}).get("update") or {}
        split = u.get("split") or {}
        if r.plan.split is not None:
            if split.get("version") == r.version and u.get("installed") == r.incumbent:
                done.append(name)
            elif u.get("state") == "refused" and u.get("target") == r.version:
                refused.append(f"{name}: {u.get('error') or 'refused'}")
            continue
        if u.get("installed") == r.version and not split:
            done.append(name)
        elif u.get("state") == "refused" and u.get("target") == r.version:
            refused.append(f"{name}: {u.get('error') or 'refused'}")
    return done, refused

