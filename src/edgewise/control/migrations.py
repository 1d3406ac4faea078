"""The control store's schema and how it evolves: numbered migrations, applied once.

A control plane may run as several replicas on one PostgreSQL database, and they may
all start at the same moment after an upgrade. :func:`migrate` therefore applies the
pending migrations in ONE transaction that first takes a lock every replica contends
for — ``pg_advisory_xact_lock`` on PostgreSQL (released by the commit), ``BEGIN
IMMEDIATE`` (the database's write lock) on SQLite. The first replica migrates; the
others wait, then find nothing pending. DDL is transactional on both databases, so a
migration that fails leaves the schema exactly as it was.

``schema_migrations`` records each applied version. A database whose newest version is
beyond :data:`LATEST` was written by a newer edgewise, and this one refuses it rather
than misread it.

Rules for a new migration: append it to :data:`MIGRATIONS` with the next version; never
edit a released one (databases in the field already ran it). Each migration declares
the tables it creates in its own :class:`~sqlalchemy.MetaData`, frozen as of that
version; the query-side tables in :mod:`edgewise.control.store` describe the *current*
schema, and a test checks the two agree after all migrations ran.

Column types shared by both (:class:`UTCDateTime`, :data:`JSON_BODY`) live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect

from edgewise.errors import ControlStoreError

__all__ = ["JSON_BODY", "LATEST", "MIGRATIONS", "SCHEMA_MIGRATIONS", "Migration",
           "UTCDateTime", "migrate"]

#: SQLite keeps times as fixed-width ISO-8601 UTC text: 27 characters for every year
#: 1000-9999, so text order is time order and ``expires_at > :now`` compares correctly.
_SQLITE_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"

#: The advisory-lock key every replica's migration takes: "edgewise" in ASCII, as a
#: (positive) bigint.
MIGRATION_LOCK = int.from_bytes(b"edgewise", "big")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware UTC ``datetime`` in Python; ``timestamptz`` on PostgreSQL and
    ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` text on SQLite (microseconds on both).

    A naive datetime is refused with ``ValueError`` (the caller's bug: "when" would
    depend on the server's time zone); it surfaces unchanged, not as a store error.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(27))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: the control store takes "
                             "timezone-aware times, e.g. datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.strftime(_SQLITE_TIME) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.strptime(value, _SQLITE_TIME).replace(tzinfo=UTC)
        assert isinstance(value, datetime)
        return value.astimezone(UTC)


#: A JSON object column: ``jsonb`` on PostgreSQL, JSON text on SQLite.
JSON_BODY: sa.types.TypeEngine[Any] = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_meta = sa.MetaData()
SCHEMA_MIGRATIONS = sa.Table(
    "schema_migrations", _meta,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    """One schema step: ``apply`` runs inside the migration transaction."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    """Join tokens, nodes, every certificate ever issued, the deny list, configs."""
    md = sa.MetaData()
    sa.Table(
        "join_tokens", md,
        sa.Column("digest", sa.Text, primary_key=True),  # sha256 of the token, never it
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("tier", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime()),
        sa.Column("created_by", sa.Text, nullable=False),
    )
    sa.Table(
        "nodes", md,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("tier", sa.Text, nullable=False),
        sa.Column("spiffe_id", sa.Text, nullable=False),
        sa.Column("serial", sa.Text, nullable=False),
        sa.Column("cert_not_after", UTCDateTime(), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(), nullable=False),
        sa.Column("renewed_at", UTCDateTime()),
        sa.Column("last_seen", UTCDateTime()),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("heartbeat", JSON_BODY, nullable=False),
        sa.Column("applied_config", sa.Integer),
        sa.Column("config_error", sa.Text),
    )
    sa.Table(
        "node_certs", md,
        sa.Column("serial", sa.Text, primary_key=True),
        sa.Column("node", sa.Text, sa.ForeignKey("nodes.name"), nullable=False, index=True),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("not_after", UTCDateTime(), nullable=False),
    )
    sa.Table(
        "denied_serials", md,
        sa.Column("serial", sa.Text, primary_key=True),
        sa.Column("node", sa.Text, sa.ForeignKey("nodes.name"), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),  # "revoked" | "superseded"
        sa.Column("denied_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("reason IN ('revoked', 'superseded')", name="denied_reason"),
    )
    sa.Table(
        "configs", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("target_kind", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("body", JSON_BODY, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.UniqueConstraint("target_kind", "target", "version", name="configs_target_version"),
        sa.CheckConstraint("target_kind IN ('node', 'tier')", name="configs_target_kind"),
        sqlite_autoincrement=True,  # ids never reused, like PostgreSQL's sequence
    )
    md.create_all(conn, checkfirst=False)  # a table already there is not ours: fail


def _v2_token_hosts(conn: Connection) -> None:
    """Join tokens may grant extra names for the node's certificate (the DNS names or
    addresses applications reach it by over HTTPS): space-separated, '' for none."""
    conn.execute(sa.text(
        "ALTER TABLE join_tokens ADD COLUMN hosts TEXT NOT NULL DEFAULT ''"))


def _v3_registry(conn: Connection) -> None:
    """The model registry (:mod:`edgewise.control.registry`): artifacts by name, their
    immutable versions with the files of each, and every alias move ever made.

    Versions, their files and alias moves are append-only, and the database itself
    refuses to change or delete them (a trigger on each table): a published version is
    what every later signature and rollout refers to, so not even a bug in this code
    or a hand-typed ``UPDATE`` may alter it. An alias's current version is its newest
    move.
    """
    md = sa.MetaData()
    sa.Table(
        "registry_artifacts", md,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.CheckConstraint("kind IN ('base', 'variant', 'adapter')", name="registry_kind"),
    )
    sa.Table(
        "registry_versions", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, sa.ForeignKey("registry_artifacts.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("manifest", JSON_BODY, nullable=False),
        sa.Column("manifest_sha256", sa.Text, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("lineage", JSON_BODY, nullable=False),
        sa.Column("parent_name", sa.Text),
        sa.Column("parent_version", sa.Integer),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.Column("published_by", sa.Text, nullable=False),
        sa.UniqueConstraint("name", "version", name="registry_versions_name_version"),
        sa.ForeignKeyConstraint(["parent_name", "parent_version"],
                                ["registry_versions.name", "registry_versions.version"],
                                name="registry_versions_parent"),
        sa.CheckConstraint("version >= 1", name="registry_versions_positive"),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "registry_files", md,
        sa.Column("version_id", sa.Integer, sa.ForeignKey("registry_versions.id"),
                  primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("sha256", sa.Text, nullable=False, index=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "registry_alias_moves", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("moved_at", UTCDateTime(), nullable=False),
        sa.Column("moved_by", sa.Text, nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["name", "to_version"],
                                ["registry_versions.name", "registry_versions.version"],
                                name="registry_alias_moves_to"),
        sa.Index("registry_alias_moves_current", "name", "alias", "id"),
        sqlite_autoincrement=True,
    )
    md.create_all(conn, checkfirst=False)
    append_only = ("registry_versions", "registry_files", "registry_alias_moves")
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(
            "CREATE FUNCTION registry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only: a "
            "published version is never changed'; END $$"))
        for table in append_only:
            conn.execute(sa.text(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION registry_append_only()"))
    else:
        for table in append_only:
            for op in ("UPDATE", "DELETE"):
                conn.execute(sa.text(
                    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: a published "
                    "version is never changed'); END"))


def _v4_rollouts(conn: Connection) -> None:
    """Rollouts (:mod:`edgewise.control.rollouts`): one row per rollout, with its plan
    (steps, gates, bake), where it stands (state, step, phase, the nodes running the new
    version) and a ``revision`` every change bumps (replicas change a rollout only from
    the revision they read); and every decision as an event, append-only."""
    md = sa.MetaData()
    # what the foreign keys refer to (migration 3 created them; not created again here)
    sa.Table("registry_artifacts", md, sa.Column("name", sa.Text, primary_key=True))
    sa.Table("registry_versions", md, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.Text), sa.Column("version", sa.Integer))
    rollouts = sa.Table(
        "rollouts", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, sa.ForeignKey("registry_artifacts.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("incumbent", sa.Integer, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("plan", JSON_BODY, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("phase_at", UTCDateTime(), nullable=False),
        sa.Column("eligible", JSON_BODY, nullable=False),
        sa.Column("assigned", JSON_BODY, nullable=False),
        sa.Column("gate_values", JSON_BODY, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.ForeignKeyConstraint(["name", "version"],
                                ["registry_versions.name", "registry_versions.version"],
                                name="rollouts_version"),
        sa.CheckConstraint("state IN ('running', 'paused', 'completed', 'rolled_back', "
                           "'aborted')", name="rollouts_state"),
        sa.Index("rollouts_by_name", "name", "id"),
        sqlite_autoincrement=True,
    )
    events = sa.Table(
        "rollout_events", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False,
                  index=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("by", sa.Text, nullable=False),
        sa.Column("detail", JSON_BODY, nullable=False),
        sqlite_autoincrement=True,
    )
    md.create_all(conn, tables=[rollouts, events], checkfirst=False)
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(
            "CREATE FUNCTION rollout_events_append_only() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION USING MESSAGE = 'rollout_events is append-only: a "
            "decision is never changed'; END $$"))
        conn.execute(sa.text(
            "CREATE TRIGGER rollout_events_append_only BEFORE UPDATE OR DELETE ON "
            "rollout_events FOR EACH ROW EXECUTE FUNCTION rollout_events_append_only()"))
    else:
        for op in ("UPDATE", "DELETE"):
            conn.execute(sa.text(
                f"CREATE TRIGGER rollout_events_no_{op.lower()} BEFORE {op} ON "
                "rollout_events BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only: "
                "a decision is never changed'); END"))


def _v5_cert_keys(conn: Connection) -> None:
    """The public key of every certificate issued from now on (PEM): what a node's
    SuperNode authenticates with in a federated run (:mod:`edgewise.federated.deploy`).
    Certificates issued before have none; their nodes get one at their next renewal."""
    conn.execute(sa.text("ALTER TABLE node_certs ADD COLUMN public_key TEXT"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the initial schema", _v1_initial),
    Migration(2, "join tokens grant certificate host names", _v2_token_hosts),
    Migration(3, "the model registry", _v3_registry),
    Migration(4, "rollouts and their decisions", _v4_rollouts),
    Migration(5, "each certificate's public key", _v5_cert_keys),
)
#: The newest schema version this edgewise knows.
LATEST = MIGRATIONS[-1].version


def migrate(conn: Connection, *, database: str, now: datetime | None = None) -> list[int]:
    """Bring the schema to :data:`LATEST` in ``conn``'s transaction, which the caller
    opened (on SQLite with ``BEGIN IMMEDIATE``); returns the versions applied now.

    Raises :class:`ControlStoreError` for a schema newer than this code knows.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    _meta.create_all(conn)  # schema_migrations itself, if this is a new database
    found = conn.execute(sa.select(sa.func.max(SCHEMA_MIGRATIONS.c.version))).scalar() or 0
    if found > LATEST:
        raise ControlStoreError(
            f"{database}: schema version {found} is newer than this edgewise (knows "
            f"{LATEST}): upgrade edgewise")
    applied = []
    for step in MIGRATIONS:
        if step.version > found:
            step.apply(conn)
            conn.execute(SCHEMA_MIGRATIONS.insert().values(
                version=step.version, applied_at=now or datetime.now(UTC)))
            applied.append(step.version)
    return applied
