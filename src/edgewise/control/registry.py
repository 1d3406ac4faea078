"""The model registry's records: artifacts by name, immutable versions, moving aliases.

An *artifact* is a name (a DNS label) and a kind — a base model, a variant (what
``edgewise build`` makes of a base) or an adapter (LoRA). Each publish adds the next
*version*: 1, 2, 3 … per name, never reused, never changed. A version records the
manifest (:mod:`edgewise.artifacts.manifest`), every file with its sha256 and size
(the bytes are in the blob store, :mod:`edgewise.control.blobs`), the total size, the
lineage (:class:`~edgewise.control.publish.Lineage`), when and by whom. An *alias*
(``stable``, ``canary``, any DNS label) points at one version of a name and moves;
every move — from which version to which, who, when and why — is a row of its own, and
the alias's current version is its newest move.

Guarantees, on SQLite and on PostgreSQL shared by several control-plane replicas (the
transactions and error handling are :class:`~edgewise.control.store.ControlStore`'s):

* **Versions are sequential and atomic.** A publish first makes sure the artifact's row
  exists (``INSERT … ON CONFLICT DO NOTHING``, which waits for a concurrent insert of
  the same name to commit), then locks it (``SELECT … FOR UPDATE``; SQLite's ``BEGIN
  IMMEDIATE`` already serialises writers), reads the newest version and inserts the
  next with its files. Two replicas publishing the same name take turns; the unique
  ``(name, version)`` is the backstop.
* **Alias moves are serialised the same way** (the artifact's row lock), so each move's
  ``from_version`` is the version the previous move set, and history order is id order.
* **Nothing published is ever changed.** The store has no UPDATE or DELETE on
  versions, files or moves, and the database refuses them (triggers, migration 3).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from edgewise.control.migrations import JSON_BODY, UTCDateTime
from edgewise.control.publish import (
    KINDS,
    ArtifactFile,
    Kind,
    Lineage,
    Publication,
    profile_choices,
)
from edgewise.control.store import ControlStore, _insert
from edgewise.errors import ConfigError, InvalidRequestError, UnknownModelError
from edgewise.security.pki import check_name

__all__ = ["TABLES", "AliasMove", "ArtifactSummary", "ArtifactVersion", "ModelDetail",
           "RegistryStore", "check_alias", "check_why"]

#: The longest reason an alias move or publish may give.
MAX_WHY = 500

# -- the current schema, as queried (migrations.py creates it) --------------------------
_meta = sa.MetaData()
_artifacts = sa.Table(
    "registry_artifacts", _meta,
    sa.Column("name", sa.Text, primary_key=True), sa.Column("kind", sa.Text),
    sa.Column("created_at", UTCDateTime()), sa.Column("created_by", sa.Text),
)
_versions = sa.Table(
    "registry_versions", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text), sa.Column("version", sa.Integer),
    sa.Column("manifest", JSON_BODY), sa.Column("manifest_sha256", sa.Text),
    sa.Column("total_bytes", sa.BigInteger), sa.Column("lineage", JSON_BODY),
    sa.Column("parent_name", sa.Text), sa.Column("parent_version", sa.Integer),
    sa.Column("published_at", UTCDateTime()), sa.Column("published_by", sa.Text),
)
_files = sa.Table(
    "registry_files", _meta,
    sa.Column("version_id", sa.Integer, primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("sha256", sa.Text), sa.Column("size_bytes", sa.BigInteger),
)
_moves = sa.Table(
    "registry_alias_moves", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text), sa.Column("alias", sa.Text),
    sa.Column("from_version", sa.Integer), sa.Column("to_version", sa.Integer),
    sa.Column("moved_at", UTCDateTime()), sa.Column("moved_by", sa.Text),
    sa.Column("why", sa.Text),
)
TABLES = (_artifacts, _versions, _files, _moves)


def check_alias(alias: str) -> str:
    """An alias is a DNS label that does not read as a version (``3``, ``latest``)."""
    _label("alias", alias)
    if alias.isdigit() or alias == "latest":
        raise InvalidRequestError(f"alias {alias!r} would read as a version in "
                                  "NAME@VERSION; give it a name with a letter",
                                  param="alias")
    return alias


def check_why(why: str) -> str:
    if not isinstance(why, str) or len(why) > MAX_WHY or not why.isprintable():
        raise InvalidRequestError(f"--why must be one line of at most {MAX_WHY} printable "
                                  "characters", param="why")
    return why


def _label(kind: str, value: str) -> str:
    try:
        return check_name(kind, value)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc), param=kind) from None


# -- what the registry hands out ---------------------------------------------------------
@dataclass(frozen=True)
class ArtifactVersion:
    """One published version (module docstring); ``manifest`` as stored in the database
    (the exact bytes are blob ``manifest_sha256``)."""

    name: str
    kind: Kind
    version: int
    manifest_sha256: str
    total_bytes: int
    files: tuple[ArtifactFile, ...]
    lineage: Lineage
    published_at: datetime
    published_by: str
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def profiles(self) -> dict[str, str | None]:
        """Hardware profile -> the best variant for it (None: none fits)."""
        return profile_choices(self.manifest)

    def to_json(self, *, manifest: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "version": self.version, "ref": self.ref,
            "manifest_sha256": self.manifest_sha256, "total_bytes": self.total_bytes,
            "files": [f.to_json() for f in self.files], "lineage": self.lineage.to_json(),
            "profiles": self.profiles, "published_at": self.published_at.isoformat(),
            "published_by": self.published_by}
        if manifest:
            out["manifest"] = self.manifest
        return out


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias; ``from_version`` is None when the alias was new."""

    name: str
    alias: str
    from_version: int | None
    to_version: int
    moved_at: datetime
    moved_by: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "from_version": self.from_version,
                "to_version": self.to_version, "moved_at": self.moved_at.isoformat(),
                "moved_by": self.moved_by, "why": self.why}


@dataclass(frozen=True)
class ArtifactSummary:
    """An artifact as ``edgewise control models`` lists it."""

    name: str
    kind: Kind
    versions: int
    latest: ArtifactVersion
    aliases: dict[str, int]  # alias -> version

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "versions": self.versions,
                "latest": self.latest.version, "aliases": self.aliases,
                "size_bytes": self.latest.total_bytes, "profiles": self.latest.profiles,
                "published_at": self.latest.published_at.isoformat()}


@dataclass(frozen=True)
class ModelDetail:
    """One version of a model with everything kept about the model: its current
    aliases, every alias move, every version."""

    version: ArtifactVersion
    aliases: dict[str, int]
    history: list[AliasMove]
    versions: list[ArtifactVersion]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version.to_json(manifest=True), "aliases": self.aliases,
                "history": [m.to_json() for m in self.history],
                "versions": [{"version": v.version, "published_at": v.published_at.isoformat(),
                              "published_by": v.published_by, "total_bytes": v.total_bytes,
                              "manifest_sha256": v.manifest_sha256} for v in self.versions]}


# -- the store ---------------------------------------------------------------------------
class RegistryStore:
    """The registry's rows, in the control store's database (module docstring)."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store

    def _tx(self, what: str, *, write: bool = True) -> AbstractContextManager[Connection]:
        # The control store's transactions: SQLite BEGIN IMMEDIATE for writers, database
        # errors as one-line ControlStoreErrors without the password, ours passed through.
        return self._store._tx(f"registry {what}", write=write)

    # -- writing ------------------------------------------------------------------------
    def publish(self, pub: Publication, *, name: str, kind: Kind, by: str, now: datetime,
                parent: tuple[str, int] | None = None, alias: str | None = None,
                why: str = "") -> tuple[ArtifactVersion, AliasMove | None]:
        """Store ``pub`` as ``name``'s next version (and point ``alias`` at it), in one
        transaction. ``parent`` must be a published version."""
        _label("model", name)
        if kind not in KINDS:
            raise InvalidRequestError(f"kind {kind!r}: use {', '.join(KINDS)}", param="kind")
        if alias is not None:
            check_alias(alias)
        check_why(why)
        lineage = replace(pub.lineage, parent=f"{parent[0]}@{parent[1]}" if parent else None)
        with self._tx("publish") as conn:
            conn.execute(_insert(conn, _artifacts).values(
                name=name, kind=kind, created_at=now, created_by=by
            ).on_conflict_do_nothing(index_elements=[_artifacts.c.name]))
            existing = self._lock(conn, name)
            if existing != kind:
                raise InvalidRequestError(
                    f"model {name} is a {existing}, not a {kind}: publish this folder under "
                    "another --name", param="kind")
            if parent is not None and self._version_row(conn, *parent) is None:
                raise UnknownModelError(f"the parent {parent[0]}@{parent[1]} is not in the "
                                        "registry: publish it first", param="parent")
            number = (conn.execute(sa.select(sa.func.max(_versions.c.version))
                                   .where(_versions.c.name == name)).scalar() or 0) + 1
            vid = conn.execute(_versions.insert().values(
                name=name, version=number, manifest=pub.manifest,
                manifest_sha256=pub.manifest_sha256, total_bytes=pub.total_bytes,
                lineage=lineage.to_json(), parent_name=parent[0] if parent else None,
                parent_version=parent[1] if parent else None, published_at=now,
                published_by=by).returning(_versions.c.id)).scalar_one()
            conn.execute(_files.insert(), [dict(version_id=vid, **f.to_json())
                                           for f in pub.files])
            move = None if alias is None else self._move(conn, name, alias, number, by=by,
                                                         why=why, now=now)
        version = ArtifactVersion(name=name, kind=kind, version=number,
                                  manifest_sha256=pub.manifest_sha256,
                                  total_bytes=pub.total_bytes, files=pub.files,
                                  lineage=lineage, published_at=now, published_by=by,
                                  manifest=pub.manifest)
        return version, move

    def set_alias(self, name: str, alias: str, version: int, *, by: str, why: str,
                  now: datetime) -> AliasMove:
        """Point ``name``'s ``alias`` at ``version`` (which must exist), kept in the
        history. ``UnknownModelError`` for an unknown name or version."""
        _label("model", name)
        check_alias(alias)
        check_why(why)
        with self._tx("alias_set") as conn:
            if self._lock(conn, name) is None:
                raise _no_model(name)
            if not 1 <= version < 2**31 or self._version_row(conn, name, version) is None:
                raise self._no_version(conn, name, version)
            return self._move(conn, name, alias, version, by=by, why=why, now=now)

    # -- reading ------------------------------------------------------------------------
    def resolve(self, name: str, ref: str | int | None = None) -> ArtifactVersion:
        """``name``'s version ``ref``: a number, an alias, or None / ``latest`` for the
        newest. ``UnknownModelError`` (one line, naming what exists) otherwise."""
        with self._tx("resolve", write=False) as conn:
            kind = conn.execute(sa.select(_artifacts.c.kind)
                                .where(_artifacts.c.name == name)).scalar()
            if kind is None:
                raise _no_model(name)
            number: int | None
            if ref is None or ref == "latest":
                number = int(conn.execute(sa.select(sa.func.max(_versions.c.version))
                                          .where(_versions.c.name == name)).scalar() or 0)
            elif isinstance(ref, int) or (ref.isascii() and ref.isdigit()):
                number = int(ref)
            else:
                number = self._aliases(conn, name).get(ref)
                if number is None:
                    raise self._no_alias(conn, name, ref)
            # a number past the column's range is no version (not a database error)
            row = self._version_row(conn, name, number) if number < 2**31 else None
            if row is None:
                raise self._no_version(conn, name, number)
            return self._versions_of(conn, [row], {name: kind})[0]

    def versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first ([] for an unknown name)."""
        with self._tx("versions", write=False) as conn:
            kind = conn.execute(sa.select(_artifacts.c.kind)
                                .where(_artifacts.c.name == name)).scalar()
            rows = conn.execute(sa.select(_versions).where(_versions.c.name == name)
                                .order_by(_versions.c.version)).all()
            return self._versions_of(conn, rows, {name: kind})

    def aliases(self, name: str) -> dict[str, int]:
        """``name``'s aliases and the version each points at now."""
        with self._tx("aliases", write=False) as conn:
            return self._aliases(conn, name)

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of ``name``'s aliases (or of one), oldest first."""
        query = sa.select(_moves).where(_moves.c.name == name).order_by(_moves.c.id)
        if alias is not None:
            query = query.where(_moves.c.alias == alias)
        with self._tx("history", write=False) as conn:
            return [_move(r) for r in conn.execute(query).all()]

    def artifacts(self) -> list[ArtifactSummary]:
        """Every artifact with its newest version and current aliases, by name."""
        v = _versions
        newest = sa.select(v.c.name, sa.func.max(v.c.version).label("top"),
                           sa.func.count().label("n")).group_by(v.c.name).subquery()
        with self._tx("artifacts", write=False) as conn:
            kinds = dict(conn.execute(sa.select(_artifacts.c.name, _artifacts.c.kind)).all())
            rows = conn.execute(sa.select(v, newest.c.n).join(newest, sa.and_(
                v.c.name == newest.c.name, v.c.version == newest.c.top))
                .order_by(v.c.name)).all()
            latest = self._versions_of(conn, rows, kinds)
            aliases: dict[str, dict[str, int]] = {}
            for m in self._current_moves(conn):
                aliases.setdefault(m.name, {})[m.alias] = m.to_version
        return [ArtifactSummary(name=lv.name, kind=lv.kind, versions=int(r.n), latest=lv,
                                aliases=dict(sorted(aliases.get(lv.name, {}).items())))
                for lv, r in zip(latest, rows, strict=True)]

    def version_holding(self, sha256: str, *, besides: str) -> tuple[str, int] | None:
        """The newest published version of a name other than ``besides`` with a file of
        digest ``sha256`` (a variant's source model, found by its bytes), or None."""
        query = (sa.select(_versions.c.name, _versions.c.version)
                 .join(_files, _files.c.version_id == _versions.c.id)
                 .where(_files.c.sha256 == sha256, _versions.c.name != besides)
                 .order_by(_versions.c.published_at.desc(), _versions.c.id.desc()).limit(1))
        with self._tx("version_holding", write=False) as conn:
            row = conn.execute(query).first()
        return None if row is None else (str(row.name), int(row.version))

    def detail(self, name: str, ref: str | None = None) -> ModelDetail:
        """What ``edgewise control models show NAME[@REF]`` prints."""
        version = self.resolve(name, ref)
        return ModelDetail(version=version, aliases=self.aliases(name),
                           history=self.history(name), versions=self.versions(name))

    # -- plumbing -----------------------------------------------------------------------
    @staticmethod
    def _lock(conn: Connection, name: str) -> str | None:
        """The artifact's kind, its row locked until the transaction ends (PostgreSQL;
        on SQLite the writer already holds the database's lock)."""
        return conn.execute(sa.select(_artifacts.c.kind).where(_artifacts.c.name == name)
                            .with_for_update()).scalar()

    @staticmethod
    def _version_row(conn: Connection, name: str, version: int) -> Row[Any] | None:
        return conn.execute(sa.select(_versions).where(
            _versions.c.name == name, _versions.c.version == version)).one_or_none()

    @staticmethod
    def _move(conn: Connection, name: str, alias: str, version: int, *, by: str, why: str,
              now: datetime) -> AliasMove:
        m = _moves
        before = conn.execute(sa.select(m.c.to_version).where(m.c.name == name,
                                                               m.c.alias == alias)
                              .order_by(m.c.id.desc()).limit(1)).scalar()
        row = conn.execute(m.insert().values(
            name=name, alias=alias, from_version=before, to_version=version, moved_at=now,
            moved_by=by, why=why).returning(m)).one()
        return _move(row)

    @staticmethod
    def _current_moves(conn: Connection, name: str | None = None) -> list[AliasMove]:
        m = _moves
        newest = sa.select(sa.func.max(m.c.id)).group_by(m.c.name, m.c.alias)
        if name is not None:
            newest = newest.where(m.c.name == name)
        rows = conn.execute(sa.select(m).where(m.c.id.in_(newest))
                            .order_by(m.c.name, m.c.alias)).all()
        return [_move(r) for r in rows]

    def _aliases(self, conn: Connection, name: str) -> dict[str, int]:
        return {m.alias: m.to_version for m in self._current_moves(conn, name)}

    @staticmethod
    def _versions_of(conn: Connection, rows: list[Row[Any]] | Any,
                     kinds: dict[str, Any]) -> list[ArtifactVersion]:
        ids = [r.id for r in rows]
        files: dict[int, list[ArtifactFile]] = {i: [] for i in ids}
        if ids:
            for f in conn.execute(sa.select(_files).where(_files.c.version_id.in_(ids))
                                  .order_by(_files.c.version_id, _files.c.path)):
                files[f.version_id].append(ArtifactFile(f.path, f.sha256, int(f.size_bytes)))
        out = []
        for r in rows:
            listed = sorted(files[r.id], key=lambda f: (f.path != "manifest.json", f.path))
            out.append(ArtifactVersion(
                name=r.name, kind=kinds[r.name], version=r.version,
                manifest_sha256=r.manifest_sha256, total_bytes=int(r.total_bytes),
                files=tuple(listed), lineage=Lineage.from_json(dict(r.lineage)),
                published_at=r.published_at, published_by=r.published_by,
                manifest=dict(r.manifest)))
        return out

    def _no_version(self, conn: Connection, name: str, version: int) -> UnknownModelError:
        top = conn.execute(sa.select(sa.func.max(_versions.c.version))
                           .where(_versions.c.name == name)).scalar()
        return UnknownModelError(f"model {name} has no version {version}; its versions are "
                                 f"1 to {top}", param="version")

    def _no_alias(self, conn: Connection, name: str, alias: str) -> UnknownModelError:
        have = sorted(self._aliases(conn, name))
        listed = f"its aliases are {', '.join(have)}" if have else "it has none yet"
        return UnknownModelError(f"model {name} has no alias {alias[:64]!r}; {listed} "
                                 f"(`edgewise control alias set {name}@VERSION ALIAS`)",
                                 param="alias")


def _no_model(name: str) -> UnknownModelError:
    return UnknownModelError(f"no model named {name[:64]!r} in the registry; `edgewise "
                             "control models` lists them", param="name")


def _move(row: Row[Any]) -> AliasMove:
    return AliasMove(name=row.name, alias=row.alias, from_version=row.from_version,
                     to_version=row.to_version, moved_at=row.moved_at, moved_by=row.moved_by,
                     why=row.why)

