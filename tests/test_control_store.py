"""The control store: one contract suite on SQLite and on a real PostgreSQL server, and
the races two replicas sharing one database must win (single-use join tokens, config
versions without gaps, migrations applied once)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa

from conftest import closed_port
from edgewise.control.migrations import LATEST, MIGRATIONS
from edgewise.control.store import TABLES, ControlStore, NodeRecord
from edgewise.errors import (
    AuthenticationError,
    ControlStoreError,
    ForbiddenError,
    InvalidRequestError,
)
from postgres import PostgresServer, fresh_postgres_url, postgres_server  # noqa: F401

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DIGEST = "a1b2c3d4" + "e5" * 28  # a sha256 hex digest, as the service computes it


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def engine(url: str) -> sa.Engine:
    """A plain SQLAlchemy engine on the store's database, to look behind the API."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        eng.dispose()


def concurrently(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(0..n-1)`` in ``n`` threads released together; each result or exception."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.sqlite'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[ControlStore]:
    with ControlStore.open(url) as s:
        yield s


@pytest.fixture
def replicas(url: str) -> Iterator[tuple[ControlStore, ControlStore]]:
    """Two stores on one database, as two control-plane replicas have."""
    with ControlStore.open(url) as a, ControlStore.open(url) as b:
        yield a, b


def token(s: ControlStore, digest: str = DIGEST, *, node: str = "n1", tier: str = "edge",
          ttl: timedelta = HOUR) -> None:
    s.add_join_token(digest, node=node, tier=tier, expires_at=T0 + ttl, created_by="admin",
                     now=T0)


def enrol(s: ControlStore, node: str = "n1", serial: str = "0a01", *, tier: str = "edge",
          now: datetime = T0) -> None:
    s.enrol(node=node, tier=tier, spiffe_id=f"spiffe://acme/node/{node}", serial=serial,
            not_after=now + 24 * HOUR, now=now)


# -- schema and migrations ---------------------------------------------------------------
def test_a_new_database_is_migrated_once_to_the_latest_version(url: str) -> None:
    with ControlStore.open(url) as s:
        assert s.schema_version() == LATEST == MIGRATIONS[-1].version == 5
    first = rows(url, "SELECT version, applied_at FROM schema_migrations")
    with ControlStore.open(url) as s:  # reopening applies nothing
        assert s.schema_version() == LATEST
    assert rows(url, "SELECT version, applied_at FROM schema_migrations") == first
    assert [r[0] for r in first] == list(range(1, LATEST + 1))


def test_a_version_1_database_is_upgraded_and_keeps_its_tokens(url: str) -> None:
    from edgewise.control import migrations

    eng = engine(url)
    with eng.begin() as conn:  # what an edgewise with only migration 1 left behind
        migrations.SCHEMA_MIGRATIONS.metadata.create_all(conn)
        migrations.MIGRATIONS[0].apply(conn)
        conn.execute(migrations.SCHEMA_MIGRATIONS.insert().values(version=1, applied_at=T0))
        conn.execute(sa.text(
            "INSERT INTO join_tokens (digest, node, tier, created_at, expires_at, created_by)"
            " VALUES ('d1', 'n1', 'edge', :t, :e, 'ops')"),
            {"t": T0 if "postgresql" in url else "2025-03-01T12:00:00.000000Z",
             "e": T0 + HOUR if "postgresql" in url else "2025-03-01T13:00:00.000000Z"})
    eng.dispose()
    with ControlStore.open(url) as s:
        assert s.schema_version() == LATEST
        grant = s.redeem_join_token("d1", node="n1", now=T0 + HOUR / 60)
        assert (grant.node, grant.tier, grant.hosts) == ("n1", "edge", ())
        s.add_join_token("d2", node="n2", tier="edge", expires_at=T0 + HOUR, created_by="ops",
                         now=T0, hosts=("n2.example.org", "10.0.0.7"))
        assert s.redeem_join_token("d2", node="n2", now=T0).hosts == ("n2.example.org",
                                                                      "10.0.0.7")


def test_the_migrated_schema_has_every_column_the_store_queries(store: ControlStore,
                                                                url: str) -> None:
    eng = engine(url)
    try:
        inspector = sa.inspect(eng)
        for table in TABLES:
            found = {c["name"] for c in inspector.get_columns(table.name)}
            assert found == {c.name for c in table.columns}, table.name
    finally:
        eng.dispose()


def test_a_schema_newer_than_this_edgewise_is_refused(store: ControlStore, url: str) -> None:
    eng = engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_migrations (version, applied_at) "
                             "VALUES (:v, :t)"), {"v": LATEST + 1, "t": T0 if "postgresql" in
                                                  url else "2025-03-01T12:00:00.000000Z"})
    eng.dispose()
    with pytest.raises(ControlStoreError) as err:
        ControlStore.open(url)
    assert str(err.value) == (f"{store.url_for_display}: schema version {LATEST + 1} is newer "
                              f"than this edgewise (knows {LATEST}): upgrade edgewise")


def test_a_failed_migration_leaves_the_database_as_it_was(url: str) -> None:
    eng = engine(url)
    with eng.begin() as conn:  # another application's table, in the database given
        conn.execute(sa.text("CREATE TABLE nodes (id integer)"))
    try:
        with pytest.raises(ControlStoreError) as err:
            ControlStore.open(url)
        assert str(err.value).startswith("cannot migrate ")
        assert "already exists — the control store needs a database of its own" in str(err.value)
        assert sa.inspect(eng).get_table_names() == ["nodes"]  # DDL rolled back, all of it
    finally:
        eng.dispose()


def test_times_come_back_aware_utc_to_the_microsecond(store: ControlStore) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    expires = datetime(2025, 3, 1, 18, 30, 0, 123456, tzinfo=ist)
    store.add_join_token(DIGEST, node="n1", tier="edge", expires_at=expires,
                         created_by="admin", now=T0)
    (info,) = store.join_tokens()
    assert info.expires_at == expires
    assert info.expires_at.tzinfo == UTC and info.expires_at.hour == 13
    assert info.expires_at.microsecond == 123456


def test_a_naive_datetime_is_the_callers_bug(store: ControlStore) -> None:
    with pytest.raises(ValueError, match=r"naive datetime 2025-03-01T12:00:00: .*aware"):
        store.add_join_token(DIGEST, node="n1", tier="edge", expires_at=datetime(2025, 3, 1, 12),
                             created_by="admin", now=T0)
    assert store.join_tokens() == []


def test_a_database_error_names_the_database_and_not_the_value(store: ControlStore) -> None:
    token(store)
    with pytest.raises(ControlStoreError) as err:
        token(store)  # the same digest twice: a primary-key violation
    message = str(err.value)
    assert message.startswith(f"add_join_token failed on {store.url_for_display}: ")
    assert isinstance(err.value.__cause__, sa.exc.IntegrityError)
    assert DIGEST not in message and "e5e5" not in message
    assert "\n" not in message


# -- join tokens ---------------------------------------------------------------------------
def test_a_join_token_grants_its_node_and_tier_once(store: ControlStore) -> None:
    token(store, tier="clinic")
    grant = store.redeem_join_token(DIGEST, node="n1", now=at(60))
    assert (grant.node, grant.tier, grant.expires_at) == ("n1", "clinic", T0 + HOUR)
    with pytest.raises(AuthenticationError) as err:
        store.redeem_join_token(DIGEST, node="n1", now=at(120))
    assert err.value.message == "join token was already used at 2025-03-01T12:01:00+00:00"
    (info,) = store.join_tokens()
    assert info.digest_prefix == "a1b2c3d4"
    assert (info.node, info.tier, info.created_by) == ("n1", "clinic", "admin")
    assert (info.created_at, info.expires_at, info.used_at) == (T0, T0 + HOUR, at(60))


def test_unknown_and_expired_join_tokens_are_refused(store: ControlStore) -> None:
    with pytest.raises(AuthenticationError, match=r"^unknown join token$"):
        store.redeem_join_token(DIGEST, node="n1", now=T0)
    token(store, ttl=timedelta(minutes=10))
    with pytest.raises(AuthenticationError) as err:  # expires_at itself is too late
        store.redeem_join_token(DIGEST, node="n1", now=at(600))
    assert err.value.message == "join token expired at 2025-03-01T12:10:00+00:00"
    assert store.redeem_join_token(DIGEST, node="n1", now=at(599.999999)).node == "n1"


def test_a_token_for_another_node_is_refused_and_not_consumed(store: ControlStore) -> None:
    token(store, node="n1")
    with pytest.raises(ForbiddenError) as err:
        store.redeem_join_token(DIGEST, node="n2", now=at(1))
    assert err.value.message == "join token is for node n1, not n2"
    assert store.join_tokens()[0].used_at is None
    assert store.redeem_join_token(DIGEST, node="n1", now=at(2)).node == "n1"


def test_eight_threads_redeeming_one_token_one_wins(store: ControlStore) -> None:
    token(store)
    results = concurrently(8, lambda i: store.redeem_join_token(DIGEST, node="n1",
                                                                now=at(i + 1)))
    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, Exception)]
    assert len(wins) == 1 and len(losses) == 7
    assert all(isinstance(e, AuthenticationError) and "already used" in e.message
               for e in losses), losses
    assert store.join_tokens()[0].used_at is not None


def test_join_tokens_are_listed_oldest_first(store: ControlStore) -> None:
    for i, digest in enumerate(["ff" * 32, "00" * 32, "77" * 32]):
        store.add_join_token(digest, node=f"n{i}", tier="edge", expires_at=at(3600),
                             created_by="admin", now=at(i))
    assert [t.node for t in store.join_tokens()] == ["n0", "n1", "n2"]
    assert [t.digest_prefix for t in store.join_tokens()] == ["ffffffff", "00000000",
                                                               "77777777"]


# -- nodes ---------------------------------------------------------------------------------
def test_an_enrolled_node_is_recorded_and_listed_by_name(store: ControlStore) -> None:
    for name in ["cloud-1", "alpha", "gw-3"]:
        enrol(store, name, serial=f"{name}-s1")
    rec = store.node("alpha")
    assert rec == NodeRecord(
        name="alpha", tier="edge", spiffe_id="spiffe://acme/node/alpha", serial="alpha-s1",
        cert_not_after=T0 + 24 * HOUR, enrolled_at=T0, renewed_at=None, last_seen=None,
        revoked_at=None, heartbeat={}, applied_config=None, config_error=None)
    assert rec.status(at(3600), heartbeat_s=15) == "enrolled"
    assert [n.name for n in store.nodes()] == ["alpha", "cloud-1", "gw-3"]
    assert store.node("nobody") is None


def test_heartbeats_record_the_body_and_drive_the_status(store: ControlStore) -> None:
    enrol(store)
    body = {"models": ["smollm2-135m"], "queue": 2, "nested": {"ok": True}}
    store.heartbeat("n1", body, now=at(10), applied_config=7, config_error=None)
    rec = store.node("n1")
    assert rec is not None
    assert (rec.heartbeat, rec.last_seen, rec.applied_config) == (body, at(10), 7)
    assert rec.status(at(40), heartbeat_s=15) == "online"  # exactly two intervals late
    assert rec.status(at(40.001), heartbeat_s=15) == "offline"
    store.heartbeat("n1", {"queue": 0}, now=at(50), applied_config=7,
                    config_error="tiers.cloud: unknown key 'urll'")
    rec = store.node("n1")
    assert rec is not None
    assert (rec.heartbeat, rec.config_error) == ({"queue": 0}, "tiers.cloud: unknown key 'urll'")


def test_heartbeats_from_unknown_or_revoked_nodes_are_forbidden(store: ControlStore) -> None:
    with pytest.raises(ForbiddenError, match="node ghost is not enrolled"):
        store.heartbeat("ghost", {}, now=T0, applied_config=None, config_error=None)
    enrol(store)
    store.revoke("n1", now=at(5))
    with pytest.raises(ForbiddenError) as err:
        store.heartbeat("n1", {}, now=at(6), applied_config=None, config_error=None)
    assert err.value.message == ("node n1 was revoked at 2025-03-01T12:00:05+00:00 and may "
                                 "not report heartbeats")
    rec = store.node("n1")
    assert rec is not None and rec.last_seen is None and rec.status(at(6), 15) == "revoked"


def test_renewal_replaces_the_certificate_and_keeps_the_old_one_valid(
        store: ControlStore) -> None:
    enrol(store, serial="s1")
    store.renew(node="n1", old_serial="s1", serial="s2", not_after=at(7200), now=at(3600))
    rec = store.node("n1")
    assert rec is not None
    assert (rec.serial, rec.cert_not_after, rec.renewed_at) == ("s2", at(7200), at(3600))
    assert not store.is_denied("s1")  # the reply may have been lost: s1 may renew again
    store.renew(node="n1", old_serial="s1", serial="s3", not_after=at(7300), now=at(3700))
    assert store.node("n1").serial == "s3"  # type: ignore[union-attr]


def test_renewal_is_refused_for_strangers(store: ControlStore) -> None:
    enrol(store, "n1", serial="s1")
    enrol(store, "n2", serial="t1")
    with pytest.raises(ForbiddenError, match="node ghost is not enrolled"):
        store.renew(node="ghost", old_serial="s1", serial="x", not_after=at(9), now=at(1))
    with pytest.raises(ForbiddenError, match=r"^certificate t1 was not issued to node n1$"):
        store.renew(node="n1", old_serial="t1", serial="x", not_after=at(9), now=at(1))
    with pytest.raises(ForbiddenError, match="certificate nope was not issued"):
        store.renew(node="n1", old_serial="nope", serial="x", not_after=at(9), now=at(1))
    store.revoke("n2", now=at(2))
    with pytest.raises(ForbiddenError, match=r"node n2 was revoked at .* may not renew"):
        store.renew(node="n2", old_serial="t1", serial="x", not_after=at(9), now=at(3))
    # nothing of the refused renewals stuck
    assert store.node("n1").serial == "s1"  # type: ignore[union-attr]
    assert store.node("n1").renewed_at is None  # type: ignore[union-attr]
    assert store.revoke("n1", now=at(4)) == ["s1"]


def test_enrolling_a_name_again_starts_over_and_denies_its_old_certificates(
        store: ControlStore) -> None:
    enrol(store, serial="s1", tier="edge")
    store.renew(node="n1", old_serial="s1", serial="s2", not_after=at(9999), now=at(10))
    store.heartbeat("n1", {"queue": 1}, now=at(20), applied_config=3, config_error=None)
    assert store.deny_list().version == 0
    enrol(store, serial="r1", tier="clinic", now=at(30))
    rec = store.node("n1")
    assert rec is not None
    assert (rec.tier, rec.serial, rec.enrolled_at, rec.renewed_at) == ("clinic", "r1", at(30),
                                                                        None)
    assert (rec.last_seen, rec.heartbeat, rec.applied_config) == (None, {}, None)
    deny = store.deny_list()
    assert (deny.version, deny.serials, deny.nodes) == (2, ("s1", "s2"), ())
    with pytest.raises(ForbiddenError, match="certificate s2 of node n1 is on the deny list"):
        store.renew(node="n1", old_serial="s2", serial="x", not_after=at(99), now=at(40))
    store.renew(node="n1", old_serial="r1", serial="r2", not_after=at(99), now=at(40))


def test_revocation_denies_every_certificate_the_node_ever_had(store: ControlStore) -> None:
    enrol(store, serial="s1")
    enrol(store, "other", serial="o1")
    for i, serial in enumerate(["s2", "s3"]):
        store.renew(node="n1", old_serial="s1", serial=serial, not_after=at(9999),
                    now=at(10 * (i + 1)))
    assert store.revoke("n1", now=at(100)) == ["s1", "s2", "s3"]
    deny = store.deny_list()
    assert (deny.version, deny.nodes, deny.serials) == (3, ("n1",), ("s1", "s2", "s3"))
    assert [store.is_denied(s) for s in ("s1", "s2", "s3", "o1")] == [True] * 3 + [False]
    # revoking again is a no-op: same serials, same time, same version
    assert store.revoke("n1", now=at(200)) == ["s1", "s2", "s3"]
    assert store.deny_list() == deny
    assert store.node("n1").revoked_at == at(100)  # type: ignore[union-attr]
    store.revoke("other", now=at(300))
    assert store.deny_list().version == 4


def test_unknown_and_revoked_names_cannot_be_revoked_or_enrolled(store: ControlStore) -> None:
    with pytest.raises(InvalidRequestError) as err:
        store.revoke("ghost", now=T0)
    assert err.value.message == "no node named ghost; `edgewise control nodes` lists them"
    enrol(store, serial="s1")
    store.revoke("n1", now=at(1))
    with pytest.raises(ForbiddenError, match="node n1 was revoked at 2025-03-01T12:00:01"):
        enrol(store, serial="s9", now=at(2))
    assert store.node("n1").serial == "s1"  # type: ignore[union-attr]
    assert not store.is_denied("s9")


# -- central config ------------------------------------------------------------------------
def test_config_versions_count_per_target_and_ids_globally(store: ControlStore) -> None:
    targets: list[tuple[Literal["node", "tier"], str]] = [
        ("tier", "edge"), ("node", "n1"), ("tier", "edge"), ("tier", "cloud"), ("node", "edge"),
        ("tier", "edge")]
    pushed = [store.push_config(target_kind=kind, target=target, body={"n": i},
                                created_by="admin", now=at(i))
              for i, (kind, target) in enumerate(targets)]
    assert [(c.target_kind, c.target, c.version) for c in pushed] == [
        ("tier", "edge", 1), ("node", "n1", 1), ("tier", "edge", 2), ("tier", "cloud", 1),
        ("node", "edge", 1), ("tier", "edge", 3)]
    ids = [c.id for c in pushed]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert pushed[2].body == {"n": 2} and pushed[2].created_at == at(2)
    assert store.configs() == pushed
    assert store.configs(target_kind="tier", target="edge") == [pushed[0], pushed[2],
                                                                pushed[5]]
    assert store.configs(target="edge") == [pushed[0], pushed[2], pushed[4], pushed[5]]
    assert store.configs(target_kind="node") == [pushed[1], pushed[4]]


def test_a_node_gets_its_own_config_before_its_tiers(store: ControlStore) -> None:
    assert store.config_for(node="n1", tier="edge") is None
    tier1 = store.push_config(target_kind="tier", target="edge", body={"routing": {"a": 1}},
                              created_by="admin", now=at(1))
    store.push_config(target_kind="node", target="n2", body={}, created_by="admin", now=at(2))
    assert store.config_for(node="n1", tier="edge") == tier1
    own = store.push_config(target_kind="node", target="n1", body={"privacy": {}},
                            created_by="admin", now=at(3))
    tier2 = store.push_config(target_kind="tier", target="edge", body={"routing": {"a": 2}},
                              created_by="admin", now=at(4))
    assert store.config_for(node="n1", tier="edge") == own  # even though tier2 is newer
    assert store.config_for(node="n3", tier="edge") == tier2
    assert store.config_for(node="n3", tier="cloud") is None


def test_a_config_target_kind_is_node_or_tier(store: ControlStore) -> None:
    with pytest.raises(InvalidRequestError, match="target kind 'fleet': use 'node' or 'tier'"):
        store.push_config(target_kind="fleet", target="x", body={},  # type: ignore[arg-type]
                          created_by="admin", now=T0)


def test_concurrent_pushes_to_one_target_get_versions_without_gaps(
        store: ControlStore) -> None:
    results = concurrently(8, lambda i: store.push_config(
        target_kind="tier", target="edge", body={"i": i}, created_by="admin", now=at(i)))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.version for r in results) == list(range(1, 9))
    assert [c.version for c in store.configs()] == list(range(1, 9))


# -- two replicas on one database --------------------------------------------------------
def test_replicas_opening_a_new_database_at_once_migrate_it_once(url: str) -> None:
    results = concurrently(4, lambda i: ControlStore.open(url))
    try:
        assert all(isinstance(r, ControlStore) for r in results), results
        assert [r.schema_version() for r in results] == [LATEST] * 4
    finally:
        for r in results:
            if isinstance(r, ControlStore):
                r.close()
    assert [r[0] for r in rows(url, "SELECT version FROM schema_migrations")] == list(
        range(1, LATEST + 1))


def test_a_token_created_on_one_replica_is_used_once_across_both(
        replicas: tuple[ControlStore, ControlStore]) -> None:
    a, b = replicas
    token(a)
    assert b.redeem_join_token(DIGEST, node="n1", now=at(1)).tier == "edge"
    with pytest.raises(AuthenticationError, match="already used at 2025-03-01T12:00:01"):
        a.redeem_join_token(DIGEST, node="n1", now=at(2))


def test_replicas_racing_for_one_token_let_one_through(
        replicas: tuple[ControlStore, ControlStore]) -> None:
    a, b = replicas
    token(a)
    results = concurrently(8, lambda i: (a, b)[i % 2].redeem_join_token(DIGEST, node="n1",
                                                                        now=at(1)))
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert sum(isinstance(r, AuthenticationError) for r in results) == 7


def test_replicas_share_nodes_and_the_deny_list(
        replicas: tuple[ControlStore, ControlStore]) -> None:
    a, b = replicas
    enrol(b, "n2", serial="t1")
    enrol(b, "n1", serial="s1")
    assert [n.name for n in a.nodes()] == ["n1", "n2"]
    assert a.revoke("n1", now=at(5)) == ["s1"]
    assert b.is_denied("s1") and not b.is_denied("t1")
    assert b.deny_list() == a.deny_list()
    assert b.deny_list().nodes == ("n1",)
    with pytest.raises(ForbiddenError):
        b.heartbeat("n1", {}, now=at(6), applied_config=None, config_error=None)


def test_replicas_pushing_configs_count_one_sequence(
        replicas: tuple[ControlStore, ControlStore]) -> None:
    a, b = replicas
    alternating = [(a, b)[i % 2].push_config(target_kind="node", target="n1", body={"i": i},
                                             created_by="admin", now=at(i)) for i in range(6)]
    assert [c.version for c in alternating] == [1, 2, 3, 4, 5, 6]
    raced = concurrently(8, lambda i: (a, b)[i % 2].push_config(
        target_kind="node", target="n1", body={"i": i}, created_by="admin", now=at(10 + i)))
    assert not [r for r in raced if isinstance(r, Exception)], raced
    assert sorted(c.version for c in raced) == list(range(7, 15))
    assert [c.version for c in b.configs(target="n1")] == list(range(1, 15))
    assert a.config_for(node="n1", tier="edge") == b.config_for(node="n1", tier="edge")


# -- opening: what a wrong URL says ------------------------------------------------------
def test_postgresql_connection_errors_name_the_database_without_its_password(
        postgres_server: PostgresServer) -> None:  # noqa: F811 (a fixture)
    wrong = postgres_server.url(password="not-the-password-42")
    with pytest.raises(ControlStoreError) as err:
        ControlStore.open(wrong)
    message = str(err.value)
    assert message == (
        f"cannot connect to postgresql://edgewise:***@127.0.0.1:{postgres_server.port}/edgewise: "
        'password authentication failed for user "edgewise" — check the user name and '
        "password in the database URL")
    with pytest.raises(ControlStoreError, match=r'database "nosuch" does not exist — create'):
        ControlStore.open(postgres_server.url("nosuch"))
    with closed_port() as port:
        refused = postgres_server.url().replace(f":{postgres_server.port}/", f":{port}/")
        with pytest.raises(ControlStoreError) as err:
            ControlStore.open(refused)
    assert str(err.value) == (
        f"cannot connect to postgresql://edgewise:***@127.0.0.1:{port}/edgewise: connection "
        "refused — is PostgreSQL running and listening on that host and port?")
    assert postgres_server.password not in str(err.value)


def test_sqlite_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ControlStoreError) as err:
        ControlStore.open(f"sqlite:///{tmp_path}/missing/control.sqlite")
    assert str(err.value) == (f"cannot connect to sqlite:///{tmp_path}/missing/control.sqlite:"
                              " unable to open the database file — check that its directory"
                              " exists and is writable")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just 64 bytes of text" + b"." * 19)
    with pytest.raises(ControlStoreError, match="not a SQLite database — point the URL"):
        ControlStore.open(f"sqlite:///{junk}")
    with pytest.raises(ControlStoreError, match="needs a file"):
        ControlStore.open("sqlite://")


def test_other_databases_and_bad_urls_are_refused_without_the_password() -> None:
    with pytest.raises(ControlStoreError) as err:
        ControlStore.open("mysql://root:s3cret@db/fleet")
    assert str(err.value) == ("mysql://root:***@db/fleet: unsupported database 'mysql'; the "
                              "control store runs on sqlite:///path/to/control.sqlite or "
                              "postgresql://user:password@host/db")
    with pytest.raises(ControlStoreError, match="does not parse") as err:
        ControlStore.open("not a url s3cret")
    assert "s3cret" not in str(err.value)


def test_current_keys_follow_renewal_revocation_and_expiry(store: ControlStore) -> None:
    """What a federated run's SuperLink registers: each live node's current key only."""
    store.enrol(node="n1", tier="edge", spiffe_id="spiffe://acme/node/n1", serial="0a01",
                not_after=T0 + 24 * HOUR, now=T0, public_key="K1")
    store.enrol(node="n2", tier="edge", spiffe_id="spiffe://acme/node/n2", serial="0b01",
                not_after=T0 + 24 * HOUR, now=T0, public_key="K2")
    enrol(store, "n3", "0c01")  # a certificate from before keys were kept: left out
    assert store.current_keys(now=T0) == {"n1": "K1", "n2": "K2"}
    store.renew(node="n1", old_serial="0a01", serial="0a02", not_after=T0 + 48 * HOUR,
                now=T0 + HOUR, public_key="K1b")
    store.revoke("n2", now=T0 + HOUR)
    assert store.current_keys(now=T0 + HOUR) == {"n1": "K1b"}
    assert store.current_keys(now=T0 + 49 * HOUR) == {}  # expired
