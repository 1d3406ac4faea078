"""The control plane's database: join tokens, enrolled nodes, the deny list, configs.

One SQLite file by default; one PostgreSQL database when several control-plane
replicas share the fleet state. Both run the same SQLAlchemy Core statements, so the
guarantees below hold on both, and one contract test suite runs on both.

Every method is one short transaction, synchronous (the HTTP app calls it from a
thread pool), and correct when two replicas call it at the same moment:

* **A join token is redeemed at most once.** ``redeem_join_token`` is a single
  conditional ``UPDATE … SET used_at = :now WHERE digest = :d AND used_at IS NULL AND
  expires_at > :now AND node = :node``: the database's row lock lets one updater
  through; the others re-check the condition after it commits and match nothing. Only
  then is the row read to say *why* it was refused. A token presented for another node
  is refused without being consumed.
* **Revocation wins races with renewal.** Both first update the node's row (taking its
  lock), so a renewal either commits before the revocation — whose list of serials then
  includes the new one — or sees the node revoked and is refused.
* **Config versions per target are 1, 2, 3 … without gaps.** ``push_config`` reads the
  newest version and inserts the next; a unique ``(target_kind, target, version)``
  turns a concurrent push into a constraint violation, retried with a fresh read.
* **The deny list only grows.** A revoked node's serials, and on re-enrolment the
  serials of the node's previous certificates (a re-enrolled machine got a new key; the
  old one may be why). Its size is therefore its version: it changes exactly when an
  entry is added, and a replica comparing versions never misses one.

SQLite runs in WAL mode with ``synchronous=FULL`` (a redeemed token stays redeemed
across power loss), ``busy_timeout`` 5 s and foreign keys on; every writing transaction
starts with ``BEGIN IMMEDIATE``, so a read-then-write never interleaves with another
writer. PostgreSQL runs at READ COMMITTED through psycopg 3.

Errors from SQLAlchemy or the driver become :class:`ControlStoreError` naming the
database without its password and the fix. A naive ``datetime`` or a body that is not
JSON is the caller's bug and raises ``ValueError``/``TypeError`` unchanged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row, make_url

from edgewise.control.migrations import JSON_BODY, SCHEMA_MIGRATIONS, UTCDateTime, migrate
from edgewise.errors import (
    AuthenticationError,
    ControlStoreError,
    ForbiddenError,
    InvalidRequestError,
)

__all__ = ["ConfigVersion", "ControlStore", "DenyList", "HeartbeatWrite", "JoinGrant",
           "JoinTokenInfo", "NodeRecord"]

#: How long a SQLite writer waits for another's lock before the call fails.
_BUSY_TIMEOUT_MS = 5000
#: How long a PostgreSQL connection attempt may take.
_CONNECT_TIMEOUT_S = 10
#: push_config attempts when replicas race for the same target's next version.
_PUSH_ATTEMPTS = 8
#: The fix an unrecognised database error suggests, in a call and in a migration.
_RETRY = "check that the database is up and reachable; the call can be retried"
_NOT_OURS = ("the control store needs a database of its own: an empty one, or one an "
             "edgewise control plane created")

# -- the current schema, as queried (migrations.py creates it) --------------------------
_meta = sa.MetaData()
_tokens = sa.Table(
    "join_tokens", _meta,
    sa.Column("digest", sa.Text, primary_key=True),
    sa.Column("node", sa.Text), sa.Column("tier", sa.Text),
    sa.Column("created_at", UTCDateTime()), sa.Column("expires_at", UTCDateTime()),
    sa.Column("used_at", UTCDateTime()), sa.Column("created_by", sa.Text),
    sa.Column("hosts", sa.Text),
)
_nodes = sa.Table(
    "nodes", _meta,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("tier", sa.Text), sa.Column("spiffe_id", sa.Text), sa.Column("serial", sa.Text),
    sa.Column("cert_not_after", UTCDateTime()), sa.Column("enrolled_at", UTCDateTime()),
    sa.Column("renewed_at", UTCDateTime()), sa.Column("last_seen", UTCDateTime()),
    sa.Column("revoked_at", UTCDateTime()), sa.Column("heartbeat", JSON_BODY),
    sa.Column("applied_config", sa.Integer), sa.Column("config_error", sa.Text),
)
_certs = sa.Table(
    "node_certs", _meta,
    sa.Column("serial", sa.Text, primary_key=True), sa.Column("node", sa.Text),
    sa.Column("issued_at", UTCDateTime()), sa.Column("not_after", UTCDateTime()),
    sa.Column("public_key", sa.Text),
)
_denied = sa.Table(
    "denied_serials", _meta,
    sa.Column("serial", sa.Text, primary_key=True), sa.Column("node", sa.Text),
    sa.Column("reason", sa.Text), sa.Column("denied_at", UTCDateTime()),
)
_configs = sa.Table(
    "configs", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("target_kind", sa.Text), sa.Column("target", sa.Text),
    sa.Column("version", sa.Integer), sa.Column("body", JSON_BODY),
    sa.Column("created_at", UTCDateTime()), sa.Column("created_by", sa.Text),
)
TABLES = (SCHEMA_MIGRATIONS, _tokens, _nodes, _certs, _denied, _configs)


def _refuse_unusable(row: Any, *, node: str, now: datetime) -> None:
    """Raise why the join token ``row`` cannot enrol ``node`` now (nothing if it can)."""
    if row is None:
        raise AuthenticationError("unknown join token")
    if row.used_at is not None:
        raise AuthenticationError(f"join token was already used at {_when(row.used_at)}")
    if row.expires_at <= now:
        raise AuthenticationError(f"join token expired at {_when(row.expires_at)}")
    if row.node != node:
        raise ForbiddenError(f"join token is for node {row.node}, not {node}")


# -- what the store hands out ------------------------------------------------------------
@dataclass(frozen=True)
class HeartbeatWrite:
    """One heartbeat to record (:meth:`ControlStore.heartbeats`)."""

    node: str
    body: dict[str, Any]
    now: datetime
    applied_config: int | None
    config_error: str | None



@dataclass(frozen=True)
class JoinGrant:
    """What a redeemed join token allows: this node name, in this tier, with these extra
    host names (DNS names or addresses) in its certificate."""

    node: str
    tier: str
    expires_at: datetime
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class JoinTokenInfo:
    """A join token as an operator may see it: never the token, only a digest prefix."""

    digest_prefix: str  # the first 8 hex digits of the token's digest
    node: str
    tier: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    created_by: str


@dataclass(frozen=True)
class NodeRecord:
    """An enrolled node: its current certificate and what it last reported."""

    name: str
    tier: str
    spiffe_id: str
    serial: str  # the current certificate's serial, hex
    cert_not_after: datetime
    enrolled_at: datetime
    renewed_at: datetime | None
    last_seen: datetime | None
    revoked_at: datetime | None
    heartbeat: dict[str, Any]  # the latest heartbeat body, {} before the first
    applied_config: int | None  # the ConfigVersion.id the node reports applied
    config_error: str | None  # why the node could not apply the newest config

    def status(self, now: datetime, heartbeat_s: float) -> str:
        """``revoked``, ``enrolled`` (never heartbeated), ``online`` (seen within two
        heartbeat intervals, so one late heartbeat is not an outage) or ``offline``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.last_seen is None:
            return "enrolled"
        age = (now - self.last_seen).total_seconds()
        return "online" if age <= 2 * heartbeat_s else "offline"


@dataclass(frozen=True)
class DenyList:
    """Certificates no longer accepted. ``version`` is the number of denied serials:
    the list only grows, so the number changes whenever it does."""

    version: int
    nodes: tuple[str, ...]  # revoked node names, sorted
    serials: tuple[str, ...]  # denied certificate serials, sorted


@dataclass(frozen=True)
class ConfigVersion:
    """One pushed central config. ``id`` is global and increasing across targets;
    ``version`` counts 1, 2, 3 … per target."""

    id: int
    target_kind: Literal["node", "tier"]
    target: str
    version: int
    body: dict[str, Any]
    created_at: datetime
    created_by: str


# -- the store ---------------------------------------------------------------------------
class ControlStore:
    """The control plane's state (module docstring); open it with :meth:`open`.

    Thread-safe: each call checks a connection out of the engine's pool. Usable as a
    context manager, which closes it.
    """

    def __init__(self, engine: Engine, url_for_display: str, password: str | None) -> None:
        self._engine = engine
        self.url_for_display = url_for_display
        self._password = password

    @classmethod
    def open(cls, url: str) -> ControlStore:
        """Connect to ``sqlite:///path/to/control.sqlite`` or
        ``postgresql://user:password@host:port/db`` and apply pending migrations (one
        replica at a time)."""
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ControlStoreError(
                "the control store URL does not parse: use sqlite:///path/to/control.sqlite"
                " or postgresql://user:password@host:5432/database") from exc
        display = parsed.render_as_string(hide_password=True)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ControlStoreError(
                    f"{display}: the control store needs a file: sqlite:///path/to/"
                    "control.sqlite (replicas and restarts must see the same state)")
            engine = sa.create_engine(parsed.set(drivername="sqlite+pysqlite"),
                                      connect_args={"check_same_thread": False})
            sa.event.listen(engine, "connect", _sqlite_connect)
            sa.event.listen(engine, "begin", _sqlite_begin)
        elif backend in ("postgresql", "postgres"):
            args: dict[str, Any] = {"application_name": "edgewise-control"}
            if "connect_timeout" not in parsed.query:
                args["connect_timeout"] = _CONNECT_TIMEOUT_S
            engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg"),
                                      connect_args=args, pool_pre_ping=True)
        else:
            raise ControlStoreError(
                f"{display}: unsupported database {backend!r}; the control store runs on "
                "sqlite:///path/to/control.sqlite or postgresql://user:password@host/db")
        store = cls(engine, display, parsed.password)
        try:
            with engine.connect() as conn:
                pass
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise ControlStoreError(f"cannot connect to {store._describe(exc)}") from exc
        try:
            with engine.connect() as conn, conn.begin():
                migrate(conn, database=display)
        except ControlStoreError:
            engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise ControlStoreError(f"cannot migrate {store._describe(exc, _NOT_OURS)}"
                                    ) from exc
        return store

    def close(self) -> None:
        """Close every pooled connection; the store is not used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> ControlStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ControlStore({self.url_for_display!r})"

    def schema_version(self) -> int:
        with self._tx("schema_version", write=False) as conn:
            return int(conn.execute(sa.select(sa.func.max(SCHEMA_MIGRATIONS.c.version)))
                       .scalar() or 0)

    # -- join tokens ------------------------------------------------------------------
    def add_join_token(self, digest: str, *, node: str, tier: str, expires_at: datetime,
                       created_by: str, now: datetime, hosts: tuple[str, ...] = ()) -> None:
        """Store a new token by its digest (the token itself is never stored)."""
        with self._tx("add_join_token") as conn:
            conn.execute(_tokens.insert().values(
                digest=digest, node=node, tier=tier, created_at=now, expires_at=expires_at,
                used_at=None, created_by=created_by, hosts=" ".join(hosts)))

    def peek_join_token(self, digest: str, *, node: str, now: datetime) -> JoinGrant:
        """What the token would grant ``node`` now, without using it (the same errors as
        :meth:`redeem_join_token`): the control plane checks the CSR against the grant
        before it spends the token."""
        t = _tokens
        with self._tx("peek_join_token", write=False) as conn:
            row = conn.execute(sa.select(t).where(t.c.digest == digest)).one_or_none()
        _refuse_unusable(row, node=node, now=now)
        assert row is not None
        return JoinGrant(node=row.node, tier=row.tier, expires_at=row.expires_at,
                         hosts=tuple(row.hosts.split()))

    def redeem_join_token(self, digest: str, *, node: str, now: datetime) -> JoinGrant:
        """Use the token for ``node``, once across every replica (module docstring).

        ``AuthenticationError`` for an unknown, used or expired token; ``ForbiddenError``
        (the token is not consumed) for a token issued to another node name.
        """
        t = _tokens
        with self._tx("redeem_join_token") as conn:
            done = conn.execute(t.update().where(
                t.c.digest == digest, t.c.used_at.is_(None), t.c.expires_at > now,
                t.c.node == node).values(used_at=now)).rowcount
            row = conn.execute(sa.select(t).where(t.c.digest == digest)).one_or_none()
        if done == 1 and row is not None:
            return JoinGrant(node=row.node, tier=row.tier, expires_at=row.expires_at,
                             hosts=tuple(row.hosts.split()))
        _refuse_unusable(row, node=node, now=now)
        raise AuthenticationError("join token was already used")  # pragma: no cover - a race

    def join_tokens(self) -> list[JoinTokenInfo]:
        """Every token ever created, oldest first."""
        t = _tokens
        with self._tx("join_tokens", write=False) as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.created_at, t.c.digest)).all()
        return [JoinTokenInfo(digest_prefix=r.digest[:8], node=r.node, tier=r.tier,
                              created_at=r.created_at, expires_at=r.expires_at,
                              used_at=r.used_at, created_by=r.created_by) for r in rows]

    # -- nodes and their certificates -------------------------------------------------
    def enrol(self, *, node: str, tier: str, spiffe_id: str, serial: str, not_after: datetime,
              now: datetime, public_key: str | None = None) -> None:
        """Record ``node``'s first certificate. A name enrolled again starts over: new
        tier and certificate, no heartbeat yet, and its earlier certificates denied.
        A revoked name stays revoked (``ForbiddenError``)."""
        n = _nodes
        fresh = dict(tier=tier, spiffe_id=spiffe_id, serial=serial, cert_not_after=not_after,
                     enrolled_at=now, renewed_at=None, last_seen=None, revoked_at=None,
                     heartbeat={}, applied_config=None, config_error=None)
        with self._tx("enrol") as conn:
            # The upsert locks the node's row; the earlier certificates are read after it,
            # so a concurrent enrolment of the same name is either seen or waited for.
            upsert = _insert(conn, n).values(name=node, **fresh)
            upsert = upsert.on_conflict_do_update(
                index_elements=[n.c.name], set_=fresh, where=n.c.revoked_at.is_(None))
            if conn.execute(upsert.returning(n.c.name)).first() is None:  # a revoked name
                when = conn.execute(sa.select(n.c.revoked_at).where(n.c.name == node)).scalar()
                raise ForbiddenError(
                    f"node {node} was revoked at {_when(when)}; a revoked name is not "
                    "enrolled again: create the join token for a new node name")
            old = conn.execute(sa.select(_certs.c.serial).where(_certs.c.node == node)
                               ).scalars().all()
            self._deny(conn, node, old, reason="superseded", now=now)
            conn.execute(_certs.insert().values(serial=serial, node=node, issued_at=now,
                                                not_after=not_after, public_key=public_key))

    def renew(self, *, node: str, old_serial: str, serial: str, not_after: datetime,
              now: datetime, public_key: str | None = None) -> None:
        """Replace ``node``'s certificate ``old_serial`` by ``serial``. ``ForbiddenError``
        if the node is unknown or revoked, or ``old_serial`` is denied or not its own.
        The old certificate stays valid until it expires (the reply may be lost)."""
        n = _nodes
        with self._tx("renew") as conn:
            done = conn.execute(n.update().where(n.c.name == node, n.c.revoked_at.is_(None))
                                .values(serial=serial, cert_not_after=not_after,
                                        renewed_at=now)).rowcount
            if done == 0:
                self._refuse_node(conn, node, "renew its certificate")
            if self._is_denied(conn, old_serial):
                raise ForbiddenError(f"certificate {old_serial} of node {node} is on the deny "
                                     "list; join the node again with a new token")
            owner = conn.execute(sa.select(_certs.c.node).where(_certs.c.serial == old_serial)
                                 ).scalar()
            if owner != node:
                raise ForbiddenError(f"certificate {old_serial} was not issued to node {node}")
            conn.execute(_certs.insert().values(serial=serial, node=node, issued_at=now,
                                                not_after=not_after, public_key=public_key))

    def current_keys(self, *, now: datetime) -> dict[str, str]:
        """The public key (PEM) of each enrolled, not revoked node's current, unexpired
        certificate, by node name (nodes whose certificate predates keys are left out)."""
        n, c = _nodes, _certs
        with self._tx("current keys", write=False) as conn:
            rows = conn.execute(
                sa.select(n.c.name, c.c.public_key)
                .join(c, c.c.serial == n.c.serial)
                .where(n.c.revoked_at.is_(None), c.c.public_key.is_not(None),
                       n.c.cert_not_after > now,
                       ~sa.exists().where(_denied.c.serial == n.c.serial))
                .order_by(n.c.name)).all()
        return {r.name: r.public_key for r in rows}

    def node(self, name: str) -> NodeRecord | None:
        with self._tx("node", write=False) as conn:
            row = conn.execute(sa.select(_nodes).where(_nodes.c.name == name)).one_or_none()
        return None if row is None else _node_record(row)

    def nodes(self) -> list[NodeRecord]:
        """Every enrolled node (revoked ones too), sorted by name."""
        with self._tx("nodes", write=False) as conn:
            rows = conn.execute(sa.select(_nodes).order_by(_nodes.c.name)).all()
        return [_node_record(r) for r in rows]

    def revoke(self, node: str, *, now: datetime) -> list[str]:
        """Mark ``node`` revoked and deny every certificate it was ever issued; returns
        those serials in issue order. Revoking again changes nothing (same serials)."""
        n = _nodes
        with self._tx("revoke") as conn:
            done = conn.execute(n.update().where(n.c.name == node, n.c.revoked_at.is_(None))
                                .values(revoked_at=now)).rowcount
            if done == 0 and conn.execute(sa.select(n.c.name).where(n.c.name == node)
                                          ).first() is None:
                raise InvalidRequestError(
                    f"no node named {node}; `edgewise control nodes` lists them", param="node")
            serials = list(conn.execute(
                sa.select(_certs.c.serial).where(_certs.c.node == node)
                .order_by(_certs.c.issued_at, _certs.c.serial)).scalars())
            self._deny(conn, node, serials, reason="revoked", now=now)
        return serials

    def deny_list(self) -> DenyList:
        with self._tx("deny_list", write=False) as conn:
            serials = tuple(conn.execute(sa.select(_denied.c.serial)
                                         .order_by(_denied.c.serial)).scalars())
            revoked = tuple(conn.execute(sa.select(_nodes.c.name)
                                         .where(_nodes.c.revoked_at.is_not(None))
                                         .order_by(_nodes.c.name)).scalars())
        return DenyList(version=len(serials), nodes=revoked, serials=serials)

    def is_denied(self, serial: str) -> bool:
        with self._tx("is_denied", write=False) as conn:
            return self._is_denied(conn, serial)

    def heartbeat(self, node: str, body: dict[str, Any], *, now: datetime,
                  applied_config: int | None, config_error: str | None) -> None:
        """Record what ``node`` reports; ``ForbiddenError`` if it is revoked or unknown."""
        n = _nodes
        with self._tx("heartbeat") as conn:
            done = conn.execute(n.update().where(n.c.name == node, n.c.revoked_at.is_(None))
                                .values(last_seen=now, heartbeat=body,
                                        applied_config=applied_config,
                                        config_error=config_error)).rowcount
            if done == 0:
                self._refuse_node(conn, node, "report heartbeats")

    def node_names(self) -> list[str]:
        """The name of every node ever enrolled (revoked ones too)."""
        with self._tx("node_names", write=False) as conn:
            return [str(n) for n in conn.execute(sa.select(_nodes.c.name)).scalars()]

    def heartbeats(self, batch: Sequence[HeartbeatWrite]) -> int:
        """Record many heartbeats in one transaction (one disk sync for all of them);
        rows of revoked or unknown nodes are skipped. Returns how many were stored."""
        if not batch:
            return 0
        n = _nodes
        stmt = n.update().where(n.c.name == sa.bindparam("b_node"),
                                n.c.revoked_at.is_(None)).values(
            last_seen=sa.bindparam("b_now"), heartbeat=sa.bindparam("b_body"),
            applied_config=sa.bindparam("b_applied"), config_error=sa.bindparam("b_error"))
        with self._tx("heartbeats") as conn:
            result = conn.execute(stmt, [
                {"b_node": h.node, "b_now": h.now, "b_body": h.body,
                 "b_applied": h.applied_config, "b_error": h.config_error} for h in batch])
        return int(result.rowcount)

    # -- central config ---------------------------------------------------------------
    def push_config(self, *, target_kind: Literal["node", "tier"], target: str,
                    body: dict[str, Any], created_by: str, now: datetime) -> ConfigVersion:
        """Store ``body`` as the next version for the target (retried when another
        replica took that version first)."""
        if target_kind not in ("node", "tier"):
            raise InvalidRequestError(f"target kind {target_kind!r}: use 'node' or 'tier'",
                                      param="target_kind")
        c = _configs
        for attempt in range(1, _PUSH_ATTEMPTS + 1):
            try:
                with self._tx("push_config") as conn:
                    newest = conn.execute(sa.select(sa.func.max(c.c.version)).where(
                        c.c.target_kind == target_kind, c.c.target == target)).scalar() or 0
                    row = conn.execute(c.insert().values(
                        target_kind=target_kind, target=target, version=newest + 1,
                        body=body, created_at=now, created_by=created_by).returning(c)).one()
                return _config(row)
            except ControlStoreError as exc:
                if not isinstance(exc.__cause__, sa.exc.IntegrityError) \
                        or attempt == _PUSH_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def config_for(self, *, node: str, tier: str) -> ConfigVersion | None:
        """The newest config pushed for ``node`` itself, else the newest for ``tier``."""
        c = _configs
        with self._tx("config_for", write=False) as conn:
            for kind, target in (("node", node), ("tier", tier)):
                row = conn.execute(sa.select(c).where(c.c.target_kind == kind,
                                                      c.c.target == target)
                                   .order_by(c.c.version.desc()).limit(1)).one_or_none()
                if row is not None:
                    return _config(row)
        return None

    def configs(self, *, target_kind: str | None = None, target: str | None = None
                ) -> list[ConfigVersion]:
        """Pushed configs, oldest first, optionally for one kind and/or target."""
        c = _configs
        query = sa.select(c).order_by(c.c.id)
        if target_kind is not None:
            query = query.where(c.c.target_kind == target_kind)
        if target is not None:
            query = query.where(c.c.target == target)
        with self._tx("configs", write=False) as conn:
            return [_config(r) for r in conn.execute(query).all()]

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _tx(self, what: str, *, write: bool = True) -> Iterator[Connection]:
        """One transaction (SQLite: ``BEGIN IMMEDIATE`` when ``write``); database errors
        become ``ControlStoreError``; our own errors roll back and pass through."""
        try:
            with self._engine.connect() as conn:
                if not write:
                    conn.execution_options(edgewise_read_only=True)
                with conn.begin():
                    yield conn
        except sa.exc.DBAPIError as exc:
            raise ControlStoreError(f"{what} failed on {self._describe(exc)}") from exc
        except sa.exc.StatementError as exc:
            if isinstance(exc.orig, ValueError | TypeError):  # binding our arguments
                raise exc.orig from None
            raise ControlStoreError(f"{what} failed on {self._describe(exc)}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise ControlStoreError(f"{what} failed on {self._describe(exc)}") from exc

    def _describe(self, exc: sa.exc.SQLAlchemyError, fix: str = _RETRY) -> str:
        """``<database>: <reason> — <fix>``, one line, without the password."""
        orig = getattr(exc, "orig", None)
        text = str(orig if orig is not None else exc).strip()
        if self._password:
            text = text.replace(self._password, "***")
        reason = text.splitlines()[0] if text else type(exc).__name__
        for pattern, short, hint in _KNOWN_ERRORS:
            match = re.search(pattern, text, re.IGNORECASE)
            if match:
                reason = short or match.group(0)
                fix = hint
                break
        if "connection failed: " in reason:  # psycopg's prefix before the server's words
            reason = reason.split("connection failed: ", 1)[1]
        return f"{self.url_for_display}: {reason} — {fix}"

    @staticmethod
    def _is_denied(conn: Connection, serial: str) -> bool:
        return conn.execute(sa.select(_denied.c.serial).where(_denied.c.serial == serial)
                            ).first() is not None

    @staticmethod
    def _deny(conn: Connection, node: str, serials: Sequence[str], *, reason: str,
              now: datetime) -> None:
        rows = [dict(serial=s, node=node, reason=reason, denied_at=now) for s in serials]
        if rows:
            conn.execute(_insert(conn, _denied).values(rows).on_conflict_do_nothing(
                index_elements=[_denied.c.serial]))

    @staticmethod
    def _refuse_node(conn: Connection, node: str, action: str) -> None:
        when = conn.execute(sa.select(_nodes.c.revoked_at).where(_nodes.c.name == node)
                            ).one_or_none()
        if when is None:
            raise ForbiddenError(f"node {node} is not enrolled with this control plane; "
                                 "join it with a new token")
        raise ForbiddenError(f"node {node} was revoked at {_when(when[0])} and may not "
                             f"{action}")


#: (regex on the driver's message, a shorter reason or None for the match, the fix).
_KNOWN_ERRORS: tuple[tuple[str, str | None, str], ...] = (
    (r"connection refused", "connection refused",
     "is PostgreSQL running and listening on that host and port?"),
    (r"password authentication failed for user \"[^\"]*\"", None,
     "check the user name and password in the database URL"),
    (r"database \"[^\"]*\" does not exist", None,
     "create it (createdb) or fix the database name in the URL"),
    (r"could not translate host name", "unknown host", "check the host name in the URL"),
    (r"timeout expired|timed out", "connection timed out",
     "is the host reachable and the port open?"),
    (r"unable to open database file", "unable to open the database file",
     "check that its directory exists and is writable"),
    (r"database is locked", "database is locked",
     "another process held the write lock for over 5 s; retry, or stop the other writer"),
    (r"file is not a database", "not a SQLite database",
     "point the URL at the control store's file, or move this file aside"),
    (r"readonly database|read-only", "the database is read-only",
     "check the file's permissions (and the directory's: SQLite writes a -wal file there)"),
)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    """Per connection: explicit transactions (``BEGIN`` is ours), then the pragmas."""
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        _journal_wal(cursor)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _journal_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, waiting like any other statement. SQLite answers
    "database is locked" at once, without its busy handler, when another connection is
    switching a new file's journal mode at the same moment (replicas opening a fresh
    database together); so it is retried here, up to the same busy timeout."""
    import sqlite3

    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(conn: Connection) -> None:
    """Writers take SQLite's write lock up front; readers read a WAL snapshot."""
    read_only = conn.get_execution_options().get("edgewise_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update/do_nothing``."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _when(dt: datetime | None) -> str:
    return "an unknown time" if dt is None else dt.astimezone(UTC).isoformat(timespec="seconds")


def _node_record(row: Row[Any]) -> NodeRecord:
    return NodeRecord(
        name=row.name, tier=row.tier, spiffe_id=row.spiffe_id, serial=row.serial,
        cert_not_after=row.cert_not_after, enrolled_at=row.enrolled_at,
        renewed_at=row.renewed_at, last_seen=row.last_seen, revoked_at=row.revoked_at,
        heartbeat=dict(row.heartbeat or {}), applied_config=row.applied_config,
        config_error=row.config_error)


def _config(row: Row[Any]) -> ConfigVersion:
    return ConfigVersion(id=row.id, target_kind=row.target_kind, target=row.target,
                         version=row.version, body=dict(row.body), created_at=row.created_at,
                         created_by=row.created_by)
