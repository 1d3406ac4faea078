"""One audit record: what a routing decision was, never what the request said.

An :class:`AuditRecord` describes one routed request — who asked, how sensitive it was,
which entity *types* the privacy guard found and how many of each, which tier answered,
what was redacted or escalated, and how it ended. It is built to make leaking request
content into the log hard to do by accident:

* Every field is a number, a bool, a level name, or an identifier checked against a
  narrow pattern (tier and node names, entity types like ``PERSON``, requester and
  request ids). A prompt fragment does not fit any of them and is rejected with a
  ``ValueError`` naming the field.
* Entities are a mapping *type → count* (``{"PERSON": 2}``); there is no field for the
  values found.
* The one free-text field is ``reason``, the router's explanation (``cheapest eligible
  tier; skipped cloud (breaker open)``). **Reasons must not contain request content**;
  the router composes them from tier names and numbers only. They are checked to be one
  printable line of at most :data:`MAX_REASON_CHARS` characters, which bounds but cannot
  prove that.

Canonical form (what the chain hashes, see :mod:`edgewise.security.audit`):
:func:`canonical_json` is ``json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)`` of :meth:`AuditRecord.to_dict` plus ``seq`` and a
format version ``v``. That is deterministic because

* keys are sorted and separators fixed, so dict order and whitespace cannot vary;
* there are **no floats**: counts are ints below 2**53 (exact in every JSON parser) and
  the time is a string with a fixed layout, ``2025-01-31T12:00:00.000000Z`` (UTC,
  always six fractional digits), which also sorts lexicographically in time order;
* ``ensure_ascii`` escapes every non-ASCII character, so the bytes do not depend on an
  encoder's choice between raw UTF-8 and ``\\u`` escapes; strings that are not printable
  (lone surrogates, control characters) are refused up front;
* :meth:`AuditRecord.from_dict` is the exact inverse of :meth:`AuditRecord.to_dict`, so a
  verifier recomputes the same bytes from the parsed record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgewise.levels import LEVEL_NAMES, Level

__all__ = [
    "FORMAT_VERSION",
    "MAX_REASON_CHARS",
    "AuditRecord",
    "Redaction",
    "canonical_json",
    "format_ts",
    "parse_ts",
]

#: Version of the record layout inside the hashed JSON (``"v"``).
FORMAT_VERSION = 1
#: Longest ``reason`` accepted.
MAX_REASON_CHARS = 512
#: Largest count accepted anywhere (entities, placeholders): far above any real request,
#: far below 2**53.
_MAX_COUNT = 1_000_000
_MAX_HOPS = 1_000  # escalations, failovers
_MAX_LIST = 64  # plan, tiers, entity types

# Identifier patterns. Tier and node names follow the config's ``_NAME``; entity types
# the privacy config's ``_ENTITY``. Requesters may be API-key names or certificate
# identities (``spiffe://org/node``, ``ops@example.org``).
_TIER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ENTITY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_REQUESTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:/+=\-]{0,255}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_ROUTE = re.compile(r"[a-z][a-z0-9_./\-]{0,63}")
#: ``answered``, ``queued``, ``failed`` or ``failed:<why>``, ``refused:<why>``.
_WHY = r"[a-z][a-z0-9_]{0,63}"
_OUTCOME = re.compile(rf"answered|queued|failed(:{_WHY})?|refused:{_WHY}")


def format_ts(ts: datetime) -> str:
    """The canonical text of a time: UTC, microseconds, ``Z`` (sorts in time order)."""
    if not isinstance(ts, datetime):
        raise TypeError(f"audit record ts must be a datetime, got {type(ts).__name__}")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("audit record ts must be timezone-aware (use datetime.now(UTC))")
    utc = ts.astimezone(UTC).replace(tzinfo=None)
    if utc.year < 1000:
        raise ValueError(f"audit record ts year {utc.year} is out of range")
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_ts(text: str) -> datetime:
    """Inverse of :func:`format_ts`; refuses any other layout."""
    try:
        ts = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        ts = None
    if ts is None or ts.tzinfo is None or format_ts(ts) != text:
        raise ValueError(f"ts {text!r} is not in the canonical form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return ts.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class Redaction:
    """What the privacy guard replaced before a tier below the data's level saw it.

    ``placeholders`` is how many sensitive spans were replaced; ``tiers`` the tiers that
    received the redacted text. ``applied`` is true exactly when ``tiers`` is not empty.
    """

    placeholders: int = 0
    tiers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _count("redaction.placeholders", self.placeholders, _MAX_COUNT)
        object.__setattr__(self, "tiers", _names("redaction.tiers", self.tiers))
        if self.placeholders and not self.tiers:
            raise ValueError("redaction.placeholders is set but redaction.tiers is empty: "
                             "name the tiers the redacted text was sent to")

    @property
    def applied(self) -> bool:
        return bool(self.tiers)


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One routing decision. Every argument is keyword-only and validated on creation.

    Attributes:
        requester: who asked: the API key's name, a certificate identity, or
            ``anonymous``.
        request_id: the completion id returned to the client (``chatcmpl-…``).
        route: the API route, e.g. ``chat`` or ``completions``.
        node: this node's name.
        declared_level: the sensitivity the request (or its API key) declared, if any.
        detected_level: the sensitivity the privacy guard found (``None``: not scanned).
        entities: entity type → how many were found; never the values.
        tier: the tier that answered (``None`` when none did).
        plan: the tiers the router ordered, first to answer first.
        reason: the router's explanation. Must not contain request content.
        outcome: ``answered``, ``queued``, ``failed[:<why>]`` or ``refused:<why>``
            (``<why>`` lower-case, e.g. ``refused:clearance``).
        escalations: cascade escalations (a low-confidence answer sent up the plan).
        failovers: endpoints or tiers skipped because they failed.
        redaction: what was redacted, how much, and for which tiers.
        clearance_override: tiers that received data above their clearance as is,
            because their ``escalation`` policy is ``allow``.
        ts: when the decision was made (timezone-aware; stored in UTC to the µs).
    """

    requester: str
    request_id: str
    route: str
    node: str
    declared_level: str | None = None
    detected_level: str | None = None
    entities: Mapping[str, int] = field(default_factory=dict)
    tier: str | None = None
    plan: tuple[str, ...] = ()
    reason: str = ""
    outcome: str
    escalations: int = 0
    failovers: int = 0
    redaction: Redaction = field(default_factory=Redaction)
    clearance_override: tuple[str, ...] = ()
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        _ident("requester", self.requester, _REQUESTER)
        _ident("request_id", self.request_id, _REQUEST_ID)
        _ident("route", self.route, _ROUTE)
        _ident("node", self.node, _TIER)
        for name in ("declared_level", "detected_level"):
            value = getattr(self, name)
            if value is not None and value not in LEVEL_NAMES:
                raise ValueError(f"audit record {name} must be one of "
                                 f"{', '.join(LEVEL_NAMES)} or None, got {_show(value)}")
            if value is not None:  # stored as the plain word
                object.__setattr__(self, name, str(value))
        object.__setattr__(self, "entities", _entities(self.entities))
        if self.tier is not None:
            _ident("tier", self.tier, _TIER)
        object.__setattr__(self, "plan", _names("plan", self.plan))
        _reason(self.reason)
        _ident("outcome", self.outcome, _OUTCOME)
        _count("escalations", self.escalations, _MAX_HOPS)
        _count("failovers", self.failovers, _MAX_HOPS)
        if not isinstance(self.redaction, Redaction):
            raise TypeError("audit record redaction must be a Redaction, got "
                            f"{type(self.redaction).__name__}")
        object.__setattr__(self, "clearance_override",
                           _names("clearance_override", self.clearance_override))
        object.__setattr__(self, "ts", parse_ts(format_ts(self.ts)))  # UTC, validated

    @property
    def level(self) -> str:
        """The effective sensitivity: the higher of declared and detected (``public``
        when neither is known)."""
        known = [lv for lv in (self.declared_level, self.detected_level) if lv is not None]
        return str(Level.highest(known))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``ts`` as canonical text); inverse of :meth:`from_dict`."""
        return {
            "ts": format_ts(self.ts),
            "requester": self.requester,
            "request_id": self.request_id,
            "route": self.route,
            "node": self.node,
            "declared_level": self.declared_level,
            "detected_level": self.detected_level,
            "entities": dict(self.entities),
            "tier": self.tier,
            "plan": list(self.plan),
            "reason": self.reason,
            "outcome": self.outcome,
            "escalations": self.escalations,
            "failovers": self.failovers,
            "redaction": {"applied": self.redaction.applied,
                          "placeholders": self.redaction.placeholders,
                          "tiers": list(self.redaction.tiers)},
            "clearance_override": list(self.clearance_override),
        }

    @classmethod
    def from_dict(cls, data: Any) -> AuditRecord:
        """Rebuild a record from :meth:`to_dict` output; ``ValueError`` if it is not
        exactly that shape (unknown or missing keys, wrong types)."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        expected = {"ts", "requester", "request_id", "route", "node", "declared_level",
                    "detected_level", "entities", "tier", "plan", "reason", "outcome",
                    "escalations", "failovers", "redaction", "clearance_override"}
        if set(data) != expected:
            extra = sorted(set(data) - expected)
            missing = sorted(expected - set(data))
            raise ValueError(f"unexpected keys {extra} / missing keys {missing}")
        red = data["redaction"]
        if not isinstance(red, dict) or set(red) != {"applied", "placeholders", "tiers"}:
            raise ValueError("redaction must be {applied, placeholders, tiers}")
        for key in ("plan", "clearance_override"):
            if not isinstance(data[key], list):
                raise ValueError(f"{key} must be a list")
        if not isinstance(red["tiers"], list):
            raise ValueError("redaction.tiers must be a list")
        if not isinstance(data["ts"], str):
            raise ValueError("ts must be a string")
        redaction = Redaction(placeholders=red["placeholders"], tiers=tuple(red["tiers"]))
        if red["applied"] is not redaction.applied:
            raise ValueError("redaction.applied disagrees with redaction.tiers")
        try:
            return cls(
                ts=parse_ts(data["ts"]), requester=data["requester"],
                request_id=data["request_id"], route=data["route"], node=data["node"],
                declared_level=data["declared_level"],
                detected_level=data["detected_level"], entities=data["entities"],
                tier=data["tier"], plan=tuple(data["plan"]), reason=data["reason"],
                outcome=data["outcome"], escalations=data["escalations"],
                failovers=data["failovers"], redaction=redaction,
                clearance_override=tuple(data["clearance_override"]),
            )
        except TypeError as exc:
            raise ValueError(str(exc)) from exc


def canonical_json(seq: int, record: AuditRecord) -> str:
    """The exact text hashed for record number ``seq`` (see the module docstring)."""
    body = {"v": FORMAT_VERSION, "seq": seq, **record.to_dict()}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


# -- validation -----------------------------------------------------------------------

def _show(value: Any) -> str:
    """A bad value for an error message: its type, and the value only if it is short and
    harmless (it may be request content passed by mistake)."""
    if isinstance(value, str):
        return f"a {len(value)}-character string" if len(value) > 40 or not \
            value.isprintable() else repr(value)
    return type(value).__name__ if not isinstance(value, int | bool) else repr(value)


def _ident(name: str, value: Any, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"audit record {name} must be a str, got {type(value).__name__}")
    if not pattern.fullmatch(value):
        raise ValueError(f"audit record {name} must match {pattern.pattern}, got "
                         f"{_show(value)}; pass an identifier, never request content")


def _count(name: str, value: Any, most: int) -> None:
    if type(value) is not int:  # bool is an int subclass: refuse it here
        raise TypeError(f"audit record {name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= most:
        raise ValueError(f"audit record {name} must be in [0, {most}], got {value}")


def _names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise TypeError(f"audit record {name} must be a tuple of tier names, got "
                        f"{type(value).__name__}")
    if len(value) > _MAX_LIST:
        raise ValueError(f"audit record {name} has {len(value)} entries; at most {_MAX_LIST}")
    for item in value:
        _ident(f"{name} entry", item, _TIER)
    return tuple(value)


def _entities(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise TypeError("audit record entities must be a mapping of entity type -> count, "
                        f"got {type(value).__name__}")
    if len(value) > _MAX_LIST:
        raise ValueError(f"audit record entities has {len(value)} types; at most {_MAX_LIST}")
    for kind, n in value.items():
        _ident("entities key (an entity type such as PERSON)", kind, _ENTITY)
        _count(f"entities[{kind}]", n, _MAX_COUNT)
        if n == 0:
            raise ValueError(f"audit record entities[{kind}] is 0; leave out types not found")
    # A copy in sorted order: later changes to the caller's dict do not reach the record.
    return dict(sorted(value.items()))


def _reason(value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"audit record reason must be a str, got {type(value).__name__}")
    if len(value) > MAX_REASON_CHARS:
        raise ValueError(f"audit record reason is {len(value)} characters; at most "
                         f"{MAX_REASON_CHARS} (a reason names tiers and numbers, never "
                         "request content)")
    if not value.isprintable():
        raise ValueError("audit record reason must be one printable line (no newlines or "
                         "control characters)")
