"""The model registry: the store on SQLite and a real PostgreSQL (versions sequential and
immutable across two replicas, alias moves with their whole history, lineage), the blob
store (digests checked while copying, shared files, nothing left by a bad upload), and
the admin API and CLI over a real TLS control plane, both ``--dir`` and ``--url``.

Artifacts are small folders written here in the real manifest format
(:mod:`edgewise.artifacts.manifest`), as ``edgewise build`` writes them.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from control_helpers import audited, bearer, control_plane, https, mark, refused, serving
from edgewise.artifacts.manifest import MANIFEST, Manifest, StageRecord, atomic_write_text
from edgewise.artifacts.variant import Variant
from edgewise.cli import app as cli
from edgewise.control import registry as registry_module
from edgewise.control.publish import Publication, read_manifest
from edgewise.control.registry import TABLES, RegistryStore
from edgewise.control.rollouts import TABLES as ROLLOUT_TABLES
from edgewise.control.service import ControlPlane
from edgewise.control.store import ControlStore
from edgewise.errors import (
    InvalidRequestError,
    ModelIntegrityError,
    ModelNotFoundError,
    UnknownModelError,
)
from edgewise.security.pki import client_context
from fleet_harness import ControlServer, control_dir
from postgres import fresh_postgres_url, postgres_server  # noqa: F401
from test_control_store import concurrently

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SOURCE = b"base model gguf bytes " * 64


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def engine(url: str) -> sa.Engine:
    """A plain SQLAlchemy engine on the store's database, to look behind the API."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


# -- artifacts in the real manifest format ------------------------------------------------
def artifact(root: Path, name: str = "gemma", *, files: dict[str, bytes] | None = None,
             adapter: bool = False, parent: str | None = None, seed: str = "") -> Path:
    """An artifact folder as `edgewise build` leaves it: one quantize stage, its files
    with their digests, a variant (an adapter on the source GGUF when ``adapter``), a
    hardware profile, the recipe, source and dataset digests."""
    art = root / name
    stage = art / "stages" / "quantize"
    stage.mkdir(parents=True)
    files = files if files is not None else {
        "model.q4_k_m.gguf": f"q4 weights {seed}".encode() * 100,
        "tokenizer.json": b'{"vocab": {}}',
    }
    recorded = {}
    for rel, data in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
        recorded[f"stages/quantize/{rel}"] = {"sha256": sha(data), "size_bytes": len(data)}
    first = f"stages/quantize/{next(iter(files))}"
    source_path = str(root / "base.gguf")
    variant = Variant(name="q4_k_m", format="gguf", path=source_path if adapter else first,
                      adapter=first if adapter else None, quantization="Q4_K_M",
                      stage="quantize", lineage=["quantize"], size_bytes=len(files[
                          next(iter(files))]), metrics={"task_accuracy": 0.8,
                                                        "perplexity": float("nan")})
    now = time.time()
    m = Manifest(
        path=art / MANIFEST, name=name, complete=True,
        recipe={"path": "recipe.yaml", "sha256": sha(b"recipe " + seed.encode())},
        source={"name": "smollm2-135m", "path": source_path, "format": "gguf",
                "sha256": sha(SOURCE), "size_bytes": len(SOURCE)},
        datasets={"calib": {"path": "calib.jsonl", "format": "chat",
                            "sha256": sha(b"calibration data"), "size_bytes": 16}},
        stages=[StageRecord(id="quantize", kind="quantize", input="base",
                            params={"method": "Q4_K_M"}, fingerprint="f" * 64,
                            lineage=["quantize"], started=now, finished=now + 1,
                            files=recorded)],
        variants=[variant],
        profiles=[{"profile": "pi5", "best": "q4_k_m", "variants": []},
                  {"profile": "tiny", "best": None, "variants": []}])
    m.save()
    if parent is not None:  # a manifest that names its parent version (a fine-tune's)
        data = json.loads((art / MANIFEST).read_text())
        data["parent"] = parent
        atomic_write_text(art / MANIFEST, json.dumps(data, indent=2))
    return art


def publication(tmp_path: Path, name: str = "gemma", **kw: Any) -> Publication:
    art = artifact(tmp_path / f"src-{name}-{time.monotonic_ns()}", name, **kw)
    return read_manifest((art / MANIFEST).read_bytes(), source=str(art))


# -- the store, on SQLite and PostgreSQL --------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.sqlite'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def replicas(url: str) -> Iterator[tuple[RegistryStore, RegistryStore]]:
    """Two registries on one database, as two control-plane replicas have."""
    with ControlStore.open(url) as a, ControlStore.open(url) as b:
        yield RegistryStore(a), RegistryStore(b)


@pytest.fixture
def reg(replicas: tuple[RegistryStore, RegistryStore]) -> RegistryStore:
    return replicas[0]


def test_the_migrated_schema_has_every_registry_column(url: str) -> None:
    ControlStore.open(url).close()
    eng = engine(url)
    try:
        inspector = sa.inspect(eng)
        for table in (*TABLES, *ROLLOUT_TABLES):
            found = {c["name"] for c in inspector.get_columns(table.name)}
            assert found == {c.name for c in table.columns}, table.name
    finally:
        eng.dispose()


def test_versions_count_per_name_and_keep_manifest_files_and_lineage(
        reg: RegistryStore, tmp_path: Path) -> None:
    one = publication(tmp_path, seed="1")
    v1, move = reg.publish(one, name="gemma", kind="variant", by="ops-ann", now=at(1))
    assert (v1.ref, v1.version, move) == ("gemma@1", 1, None)
    v2, _ = reg.publish(publication(tmp_path, seed="2"), name="gemma", kind="variant",
                        by="ops-bob", now=at(2))
    other, _ = reg.publish(publication(tmp_path, "phi"), name="phi", kind="variant",
                           by="ops-ann", now=at(3))
    assert (v2.version, other.version) == (2, 1)

    got = reg.resolve("gemma", 1)
    assert got == reg.resolve("gemma", "1") == v1
    assert reg.resolve("gemma") == reg.resolve("gemma", "latest") == v2
    assert [f.path for f in got.files] == [
        "manifest.json", "stages/quantize/model.q4_k_m.gguf", "stages/quantize/tokenizer.json"]
    q4 = b"q4 weights 1" * 100
    assert got.files[1].sha256 == sha(q4) and got.files[1].size_bytes == len(q4)
    assert got.files[0].sha256 == got.manifest_sha256 == one.manifest_sha256
    assert got.total_bytes == sum(f.size_bytes for f in got.files) == one.total_bytes
    assert (got.published_by, got.published_at) == ("ops-ann", at(1))
    assert got.lineage.recipe_sha256 == sha(b"recipe 1")
    assert got.lineage.source == {"name": "smollm2-135m", "format": "gguf",
                                  "sha256": sha(SOURCE)}
    assert got.lineage.datasets == {"calib": sha(b"calibration data")}
    assert got.lineage.stages == ["quantize:quantize"] and got.lineage.parent is None
    assert got.profiles == {"pi5": "q4_k_m", "tiny": None}
    # PostgreSQL's jsonb has no NaN: the database keeps null; the blob keeps the bytes
    assert got.manifest["variants"][0]["metrics"] == {"task_accuracy": 0.8, "perplexity": None}

    listed = reg.artifacts()
    assert [(a.name, a.kind, a.versions, a.latest.version) for a in listed] == [
        ("gemma", "variant", 2, 2), ("phi", "variant", 1, 1)]
    assert [v.version for v in reg.versions("gemma")] == [1, 2]


def test_a_version_is_never_changed_not_even_by_hand(url: str, reg: RegistryStore,
                                                     tmp_path: Path) -> None:
    reg.publish(publication(tmp_path), name="gemma", kind="variant", by="ops", now=at(1),
                alias="stable")
    source = inspect.getsource(registry_module)
    assert ".update(" not in source and ".delete(" not in source
    eng = engine(url)
    try:
        for sql in ("UPDATE registry_versions SET total_bytes = 1",
                    "UPDATE registry_files SET sha256 = 'x'",
                    "DELETE FROM registry_files",
                    "DELETE FROM registry_versions",
                    "UPDATE registry_alias_moves SET to_version = 2",
                    "DELETE FROM registry_alias_moves"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), eng.begin() as conn:
                conn.execute(sa.text(sql))
    finally:
        eng.dispose()
    v = reg.resolve("gemma", 1)
    assert v.total_bytes > 1 and len(v.files) == 3
    assert reg.aliases("gemma") == {"stable": 1}


def test_rollout_decisions_are_append_only_in_the_database(url: str, reg: RegistryStore,
                                                           tmp_path: Path) -> None:
    from edgewise.control.rollouts import Plan, RolloutStore, parse_gate, parse_steps

    for i in range(2):
        reg.publish(publication(tmp_path, seed=str(i)), name="gemma", kind="variant",
                    by="ops", now=at(i), alias="stable" if i == 0 else None)
    rollouts = RolloutStore(reg._store)
    plan = Plan(steps=parse_steps("100"), gates=[parse_gate("error_rate<=0.05")], bake_s=1)
    r = rollouts.create(name="gemma", version=2, incumbent=1, alias="stable", plan=plan,
                        eligible=["edge-1"], by="ops", now=at(5))
    assert r.assigned == ["edge-1"] and r.state == "running"
    eng = engine(url)
    try:
        for sql in ("UPDATE rollout_events SET kind = 'complete'", "DELETE FROM rollout_events"):
            with pytest.raises(sa.exc.DBAPIError, match="decision is never changed"), \
                    eng.begin() as conn:
                conn.execute(sa.text(sql))
    finally:
        eng.dispose()
    assert [e.kind for e in rollouts.get(r.id, events=True).events] == ["start"]


def test_aliases_move_and_every_move_is_kept(reg: RegistryStore, tmp_path: Path) -> None:
    for i in range(3):
        reg.publish(publication(tmp_path, seed=str(i)), name="gemma", kind="variant",
                    by="ops", now=at(i), alias="canary" if i == 0 else None,
                    why="first build" if i == 0 else "")
    reg.set_alias("gemma", "stable", 1, by="ops-ann", why="passed the eval", now=at(10))
    reg.set_alias("gemma", "canary", 3, by="ops-bob", why="try q4 v3", now=at(11))
    reg.set_alias("gemma", "stable", 2, by="ops-ann", why="canary ok", now=at(12))
    reg.set_alias("gemma", "stable", 1, by="ops-cy", why="rollback: v2 regressed", now=at(13))
    assert reg.aliases("gemma") == {"canary": 3, "stable": 1}
    assert reg.resolve("gemma", "stable").version == 1
    assert reg.resolve("gemma", "canary").version == 3
    assert [(m.alias, m.from_version, m.to_version, m.moved_by, m.moved_at, m.why)
            for m in reg.history("gemma")] == [
        ("canary", None, 1, "ops", at(0), "first build"),
        ("stable", None, 1, "ops-ann", at(10), "passed the eval"),
        ("canary", 1, 3, "ops-bob", at(11), "try q4 v3"),
        ("stable", 1, 2, "ops-ann", at(12), "canary ok"),
        ("stable", 2, 1, "ops-cy", at(13), "rollback: v2 regressed")]
    assert [m.to_version for m in reg.history("gemma", "stable")] == [1, 2, 1]
    assert reg.artifacts()[0].aliases == {"canary": 3, "stable": 1}


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda r: r.set_alias("gemma", "stable", 7, by="o", why="", now=T0), UnknownModelError,
     "model gemma has no version 7; its versions are 1 to 1"),
    (lambda r: r.set_alias("gemma", "stable", 2**40, by="o", why="", now=T0),
     UnknownModelError, "model gemma has no version 1099511627776"),
    (lambda r: r.set_alias("ghost", "stable", 1, by="o", why="", now=T0), UnknownModelError,
     "no model named 'ghost' in the registry; `edgewise control models` lists them"),
    (lambda r: r.resolve("gemma", "beta"), UnknownModelError,
     "model gemma has no alias 'beta'; its aliases are canary"),
    (lambda r: r.resolve("gemma", "99999999999999999999"), UnknownModelError,
     "has no version 99999999999999999999"),
    (lambda r: r.set_alias("gemma", "Stable!", 1, by="o", why="", now=T0),
     InvalidRequestError, "alias name 'Stable!' is not allowed: use 1-63 lowercase"),
    (lambda r: r.set_alias("gemma", "2", 1, by="o", why="", now=T0), InvalidRequestError,
     "alias '2' would read as a version"),
    (lambda r: r.set_alias("gemma", "latest", 1, by="o", why="", now=T0),
     InvalidRequestError, "alias 'latest' would read as a version"),
    (lambda r: r.set_alias("gemma", "stable", 1, by="o", why="two\nlines", now=T0),
     InvalidRequestError, "--why must be one line"),
])
def test_unknown_versions_aliases_and_bad_names_are_refused_in_one_line(
        reg: RegistryStore, tmp_path: Path, call: Any, error: type[Exception],
        message: str) -> None:
    reg.publish(publication(tmp_path), name="gemma", kind="variant", by="o", now=T0,
                alias="canary")
    with pytest.raises(error) as err:
        call(reg)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert reg.history("gemma") and len(reg.history("gemma")) == 1  # nothing moved


def test_a_name_keeps_its_kind_and_a_parent_must_exist(reg: RegistryStore,
                                                       tmp_path: Path) -> None:
    pub = publication(tmp_path)
    reg.publish(pub, name="gemma", kind="variant", by="o", now=T0)
    with pytest.raises(InvalidRequestError, match="model gemma is a variant, not a adapter"):
        reg.publish(pub, name="gemma", kind="adapter", by="o", now=T0)
    with pytest.raises(InvalidRequestError, match="model name 'Gemma_2' is not allowed"):
        reg.publish(pub, name="Gemma_2", kind="variant", by="o", now=T0)
    with pytest.raises(UnknownModelError, match="the parent base@4 is not in the registry"):
        reg.publish(pub, name="tuned", kind="variant", by="o", now=T0, parent=("base", 4))
    assert [a.name for a in reg.artifacts()] == ["gemma"]  # the refusals left nothing
    assert [v.version for v in reg.versions("gemma")] == [1]


def test_two_replicas_publishing_at_once_count_one_sequence(
        replicas: tuple[RegistryStore, RegistryStore], tmp_path: Path) -> None:
    a, b = replicas
    pubs = [publication(tmp_path, seed=str(i)) for i in range(10)]
    raced = concurrently(10, lambda i: (a, b)[i % 2].publish(
        pubs[i], name="gemma", kind="variant", by=f"replica-{i % 2}", now=at(i)))
    assert not [r for r in raced if isinstance(r, Exception)], raced
    assert sorted(v.version for v, _ in raced) == list(range(1, 11))
    stored = b.versions("gemma")
    assert [v.version for v in stored] == list(range(1, 11))
    for version, _ in raced:  # each number went to exactly the publication that got it
        assert a.resolve("gemma", version.version).manifest_sha256 == version.manifest_sha256
        assert a.resolve("gemma", version.version).files == version.files
    # and alias moves racing across replicas chain: each starts where the last ended
    moves = concurrently(10, lambda i: (a, b)[i % 2].set_alias(
        "gemma", "stable", i + 1, by="ops", why=f"move {i}", now=at(20 + i)))
    assert not [m for m in moves if isinstance(m, Exception)], moves
    history = a.history("gemma", "stable")
    assert len(history) == 10 and history[0].from_version is None
    for before, after in itertools.pairwise(history):
        assert after.from_version == before.to_version
    assert b.aliases("gemma") == {"stable": history[-1].to_version}


# -- a control plane on this host: blobs, verification, lineage --------------------------
@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlane]:
    control_dir(tmp_path / "ctl", fleet="acme")
    plane = ControlPlane(tmp_path / "ctl")
    yield plane
    plane.close()


def blobs_on_disk(cp: ControlPlane) -> dict[str, int]:
    root = cp.dir / "registry" / "blobs" / "sha256"
    return {p.name: p.stat().st_ino for p in root.iterdir()} if root.is_dir() else {}


def leftovers(cp: ControlPlane) -> list[Path]:
    tmp = cp.dir / "registry" / "tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def test_publishing_copies_each_file_once_into_content_addressed_blobs(
        cp: ControlPlane, tmp_path: Path) -> None:
    art = artifact(tmp_path / "a")
    v1, _ = cp.registry_publish(art, name="gemma", by="ops")
    first = blobs_on_disk(cp)
    assert sorted(first) == sorted(f.sha256 for f in v1.files)
    for f in v1.files:
        blob = cp.dir / "registry" / "blobs" / "sha256" / f.sha256
        assert sha(blob.read_bytes()) == f.sha256 and blob.stat().st_size == f.size_bytes
        assert blob.stat().st_mode & 0o777 == 0o444
    assert (cp.dir / "registry" / "blobs" / "sha256" / v1.manifest_sha256).read_bytes() \
        == (art / MANIFEST).read_bytes()
    # the same folder again is a new version sharing every blob (same files, untouched)
    v2, _ = cp.registry_publish(art, name="gemma", by="ops")
    assert v2.version == 2 and v2.files == v1.files
    assert blobs_on_disk(cp) == first
    # another artifact with the same tokenizer shares that blob
    other = artifact(tmp_path / "b", files={"model.gguf": b"other weights",
                                            "tokenizer.json": b'{"vocab": {}}'})
    v3, _ = cp.registry_publish(other, name="other", by="ops")
    assert len(blobs_on_disk(cp)) == len(first) + 2  # its weights and its manifest
    assert leftovers(cp) == []
    assert v3.kind == "variant"


@pytest.mark.parametrize("damage", ["same size", "other size", "missing", "link out"])
def test_a_folder_that_does_not_match_its_manifest_is_refused_naming_the_file(
        cp: ControlPlane, tmp_path: Path, damage: str) -> None:
    art = artifact(tmp_path)
    weights = art / "stages/quantize/model.q4_k_m.gguf"
    good = weights.read_bytes()
    if damage == "missing":
        weights.unlink()
    elif damage == "link out":  # the right bytes, but another file's: not published
        (tmp_path / "elsewhere.gguf").write_bytes(good)
        weights.unlink()
        weights.symlink_to(tmp_path / "elsewhere.gguf")
    else:
        bad = good[:-1] + b"X" if damage == "same size" else good + b"more"
        weights.write_bytes(bad)
        stat = os.stat(weights)  # even with the build's mtime: the bytes are hashed
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
    since = mark_of(cp)
    error = ModelNotFoundError if damage == "missing" else ModelIntegrityError
    with pytest.raises(error) as err:
        cp.registry_publish(art, name="gemma", by="ops")
    message = str(err.value)
    assert "\n" not in message
    assert "stages/quantize/model.q4_k_m.gguf" in message
    if damage == "missing":
        assert "is in the manifest but not in the folder" in message
    elif damage == "link out":
        assert "links outside the artifact folder; publish the files themselves" in message
    else:
        assert f"has sha256 {sha(weights.read_bytes())[:16]}…, not the {sha(good)[:16]}…" \
            in message
    assert cp.registry.artifacts() == []
    assert sha(good) not in blobs_on_disk(cp) and leftovers(cp) == []
    [entry] = audit_of(cp, since, "registry_publish")
    assert entry.outcome == ("refused:missing_file" if damage == "missing"
                             else "refused:integrity")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(complete=False), "is of an unfinished build"),
    (lambda m: m.update(schema="other/1"), "has schema 'other/1'"),
    (lambda m: m["stages"][0]["files"].update({"../../etc/passwd": {
        "sha256": "0" * 64, "size_bytes": 1}}), "file '../../etc/passwd': not a relative path"),
    (lambda m: m["stages"][0]["files"].update({"/etc/passwd": {
        "sha256": "0" * 64, "size_bytes": 1}}), "not a relative path"),
    (lambda m: m["stages"][0]["files"]["stages/quantize/tokenizer.json"].update(
        sha256="abc"), "has no valid sha256"),
    (lambda m: m["variants"][0].update(path="stages/quantize/unlisted.gguf"),
     "variant 'q4_k_m': stages/quantize/unlisted.gguf has no sha256"),
    (lambda m: m.update(parent="base"), "parent 'base' is not NAME@VERSION"),
])
def test_a_manifest_the_registry_could_not_verify_later_is_refused(
        cp: ControlPlane, tmp_path: Path, edit: Any, message: str) -> None:
    art = artifact(tmp_path)
    data = json.loads((art / MANIFEST).read_text())
    edit(data)
    (art / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(InvalidRequestError) as err:
        cp.registry_publish(art, name="gemma", by="ops")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert blobs_on_disk(cp) == {}


def test_lineage_names_the_recipe_data_and_parent(cp: ControlPlane, tmp_path: Path) -> None:
    base = artifact(tmp_path / "base", "smollm2", files={"base.gguf": SOURCE})
    b1, _ = cp.registry_publish(base, name="smollm2", kind="base", by="ops")
    assert b1.kind == "base" and b1.lineage.parent is None
    # a variant built from that base: its source's sha256 is a file of smollm2@1
    v1, _ = cp.registry_publish(artifact(tmp_path / "v"), name="gemma", by="ops")
    assert v1.lineage.parent == "smollm2@1"
    assert cp.registry.resolve("gemma", 1).lineage.parent == "smollm2@1"
    # an adapter on it, whose manifest names its parent version itself
    lora = artifact(tmp_path / "l", "lora", adapter=True, parent="gemma@1",
                    files={"adapter.gguf": b"lora weights"})
    a1, _ = cp.registry_publish(lora, name="gemma-lora", by="ops")
    assert (a1.kind, a1.lineage.parent) == ("adapter", "gemma@1")
    assert [f.path for f in a1.files] == ["manifest.json", "stages/quantize/adapter.gguf"]
    orphan = artifact(tmp_path / "o", "o", parent="gemma@9", seed="o")
    with pytest.raises(UnknownModelError, match="the parent gemma@9 is not in the registry"):
        cp.registry_publish(orphan, name="orphan", by="ops")


def mark_of(cp: ControlPlane) -> int:
    head = cp.audit.head()
    return head[0] if head else 0


def audit_of(cp: ControlPlane, since: int, action: str) -> list[Any]:
    return [e.record for e in cp.audit.query()
            if e.seq > since and e.record.route == f"control/{action}"]


# -- the admin API and CLI over TLS ---------------------------------------------------------
@pytest.fixture(scope="module")
def cs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlServer]:
    yield from control_plane(tmp_path_factory, "registry")


_names = iter(range(1, 10_000))


def fresh_model() -> str:
    return f"m{next(_names)}"


def run_cli(*argv: str) -> Result:
    return CliRunner().invoke(cli, list(argv), env={"COLUMNS": "400"})


def remote(cs: ControlServer, token: str) -> list[str]:
    return ["--url", cs.url, "--token", token, "--ca-sha256", cs.fingerprint]


def test_publish_list_show_and_move_an_alias_on_the_host(cs: ControlServer,
                                                         tmp_path: Path) -> None:
    name = fresh_model()
    art = artifact(tmp_path)
    since = mark(cs)
    out = run_cli("control", "publish", str(art), "--name", name, "--alias", "canary",
                  "--why", "first q4 build", "--dir", str(cs.dir))
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[-1] == f"{name}@1"
    assert f"published {name}@1 (variant, 3 files" in out.stderr
    assert "alias canary -> 1" in out.stderr
    out = run_cli("control", "publish", str(art), "--name", name, "--dir", str(cs.dir),
                  "--json")
    assert json.loads(out.stdout)["version"]["version"] == 2

    out = run_cli("control", "alias", "set", f"{name}@2", "stable", "--why", "eval passed",
                  "--dir", str(cs.dir))
    assert out.exit_code == 0, out.output
    assert f"{name} alias stable -> 2 (new)" in out.stderr

    listed = json.loads(run_cli("control", "models", "--dir", str(cs.dir), "--json").stdout)
    [row] = [r for r in listed if r["name"] == name]
    assert row["versions"] == 2 and row["latest"] == 2 and row["kind"] == "variant"
    assert row["aliases"] == {"canary": 1, "stable": 2}
    assert row["profiles"] == {"pi5": "q4_k_m", "tiny": None}
    assert row["size_bytes"] == sum(f.size_bytes for f in cs.cp.registry.resolve(name).files)
    table = run_cli("control", "models", "--dir", str(cs.dir))
    assert table.exit_code == 0 and name in table.stdout and "canary→1" in table.stdout

    shown = json.loads(run_cli("control", "models", "show", f"{name}@canary", "--dir",
                               str(cs.dir), "--json").stdout)
    assert shown["version"]["ref"] == f"{name}@1"
    assert shown["version"]["manifest"]["schema"] == "edgewise.artifact/1"
    assert shown["version"]["lineage"]["datasets"] == {"calib": sha(b"calibration data")}
    assert [(m["alias"], m["from_version"], m["to_version"], m["moved_by"], m["why"])
            for m in shown["history"]] == [
        ("canary", None, 1, "local-admin", "first q4 build"),
        ("stable", None, 2, "local-admin", "eval passed")]
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    text = run_cli("control", "models", "show", name, "--dir", str(cs.dir))
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith(f"{name}@2  variant") and "(alias stable)" in text.stdout
    assert "eval passed" in text.stdout and "stages/quantize/tokenizer.json" in text.stdout

    publishes = audited(cs, since, "registry_publish")
    assert [(e.requester, e.outcome) for e in publishes] == [("local-admin", "answered")] * 2
    assert f"published {name}@1 (variant, 3 files" in publishes[0].reason
    moves = audited(cs, since, "alias_set")
    assert [e.reason for e in moves] == [f"{name} alias canary: new -> v1: first q4 build",
                                         f"{name} alias stable: new -> v2: eval passed"]


def test_publish_remotely_uploads_only_the_missing_files(cs: ControlServer,
                                                         tmp_path: Path) -> None:
    name = fresh_model()
    art = artifact(tmp_path / "a", seed=name)
    admin = cs.access_token("admin", subject="ops-carol")
    since = mark(cs)
    out = run_cli("control", "publish", str(art), "--name", name, "--alias", "canary",
                  *remote(cs, admin))
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[-1] == f"{name}@1"
    assert admin not in out.output
    v1 = cs.cp.registry.resolve(name, "canary")
    assert v1.version == 1 and v1.published_by == "ops-carol"
    for f in v1.files:
        assert cs.cp.blobs.path(f.sha256).read_bytes() == (
            art / f.path).read_bytes()
    uploads = audited(cs, since, "registry_blob")
    # the q4 weights and the manifest are new; the tokenizer another test stored already
    new = {f.sha256 for f in v1.files} - {sha(b'{"vocab": {}}')}
    assert {e.reason.split()[2] for e in uploads} >= new
    assert [e.requester for e in audited(cs, since, "registry_publish")] == ["ops-carol"]
    assert [e.reason for e in audited(cs, since, "alias_set")] == [
        f"{name} alias canary: new -> v1"]

    since = mark(cs)  # the same folder again: nothing to upload, a new version
    out = run_cli("control", "publish", str(art), "--name", name, *remote(cs, admin),
                  "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["version"]["version"] == 2
    assert audited(cs, since, "registry_blob") == []

    out = run_cli("control", "alias", "set", f"{name}@2", "canary", "--why", "promote",
                  *remote(cs, admin), "--json")
    assert json.loads(out.stdout)["from_version"] == 1
    listed = json.loads(run_cli("control", "models", *remote(cs, admin), "--json").stdout)
    assert [r["aliases"] for r in listed if r["name"] == name] == [{"canary": 2}]
    shown = json.loads(run_cli("control", "models", "show", f"{name}@1", *remote(cs, admin),
                               "--json").stdout)
    assert shown["version"]["version"] == 1
    assert [m["why"] for m in shown["history"]] == ["", "promote"]
    assert leftovers(cs.cp) == []


def test_a_tampered_file_is_refused_remotely_and_nothing_is_kept(cs: ControlServer,
                                                                 tmp_path: Path) -> None:
    name = fresh_model()
    art = artifact(tmp_path, seed=name)
    weights = art / "stages/quantize/model.q4_k_m.gguf"
    good = weights.read_bytes()
    weights.write_bytes(good.replace(b"q4", b"Q4", 1))
    since = mark(cs)
    out = run_cli("control", "publish", str(art), "--name", name,
                  *remote(cs, cs.access_token("admin")))
    assert out.exit_code == 2, out.output
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and "stages/quantize/model.q4_k_m.gguf has sha256" in line
    assert "the file changed after the build" in line
    assert not cs.cp.blobs.has(sha(good)) and not cs.cp.blobs.has(sha(weights.read_bytes()))
    assert [e.outcome for e in audited(cs, since, "registry_blob")] == [
        "refused:digest_mismatch"]
    assert name not in [a.name for a in cs.cp.registry.artifacts()]
    assert leftovers(cs.cp) == []


def test_a_blob_whose_bytes_do_not_hash_to_its_name_is_refused(cs: ControlServer) -> None:
    admin = bearer(cs.access_token("admin", subject="ops-dan"))
    body = b"the real bytes " * 1000
    claimed = sha(b"something else")
    since = mark(cs)
    with https(cs) as c:
        r = c.put(f"/v1/admin/registry/blobs/sha256/{claimed}", content=body, headers=admin)
        msg = refused(r, 400, f"the upload hashes to sha256 {sha(body)[:16]}…",
                      f"not the {claimed[:16]}… its URL names: nothing was stored")
        assert r.json()["error"]["code"] == "digest_mismatch"
        assert not cs.cp.blobs.has(claimed) and not cs.cp.blobs.has(sha(body))
        assert leftovers(cs.cp) == []
        [entry] = audited(cs, since, "registry_blob")
        assert (entry.requester, entry.outcome, entry.reason) == (
            "ops-dan", "refused:digest_mismatch", msg)
        # the right name stores it (201), again is a no-op (200); chunked uploads too
        r = c.put(f"/v1/admin/registry/blobs/sha256/{sha(body)}", content=body, headers=admin)
        assert (r.status_code, r.json()) == (201, {"sha256": sha(body),
                                                   "size_bytes": len(body), "stored": True})
        r = c.put(f"/v1/admin/registry/blobs/sha256/{sha(body)}",
                  content=iter([body[:100], body[100:]]), headers=admin)
        assert (r.status_code, r.json()["stored"]) == (200, False)
        assert cs.cp.blobs.path(sha(body)).read_bytes() == body
        r = c.put("/v1/admin/registry/blobs/sha256/not-hex", content=b"x", headers=admin)
        refused(r, 400, "'not-hex' is not a sha256 digest")
        r = c.post("/v1/admin/registry/blobs/missing", headers=admin,
                   json={"sha256": [sha(body), claimed]})
        assert r.json() == {"missing": [claimed]}
    serving(cs)


def test_a_blob_over_the_size_limit_is_refused_while_it_streams(cs: ControlServer) -> None:
    admin = bearer(cs.access_token("admin"))
    body = os.urandom(3 << 20)
    limit = cs.cp.blobs.max_bytes
    cs.cp.blobs.max_bytes = 1 << 20
    try:
        with https(cs) as c:
            r = c.put(f"/v1/admin/registry/blobs/sha256/{sha(body)}", content=body,
                      headers=admin)
            refused(r, 413, f"the file is {len(body)} bytes, over the registry's limit")
            r = c.put(f"/v1/admin/registry/blobs/sha256/{sha(body)}", headers=admin,
                      content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]))
            refused(r, 413, "larger than the registry's limit of 1048576 bytes")
    finally:
        cs.cp.blobs.max_bytes = limit
    assert not cs.cp.blobs.has(sha(body)) and leftovers(cs.cp) == []


def test_a_version_is_created_only_when_every_blob_is_uploaded(cs: ControlServer,
                                                               tmp_path: Path) -> None:
    name = fresh_model()
    art = artifact(tmp_path, seed=name)
    data = (art / MANIFEST).read_bytes()
    admin = bearer(cs.access_token("admin"))
    with https(cs) as c:
        body = {"name": name, "manifest_sha256": sha(data)}
        r = c.post("/v1/admin/registry/versions", json=body, headers=admin)
        refused(r, 400, f"blob sha256 {sha(data)[:16]}… is not stored: upload it first")
        assert c.put(f"/v1/admin/registry/blobs/sha256/{sha(data)}", content=data,
                     headers=admin).status_code == 201
        r = c.post("/v1/admin/registry/versions", json=body, headers=admin)
        refused(r, 400, "stages/quantize/model.q4_k_m.gguf (sha256 ", "is not uploaded: PUT "
                "it to /v1/admin/registry/blobs/sha256/")
        for f in ("model.q4_k_m.gguf", "tokenizer.json"):
            blob = (art / "stages/quantize" / f).read_bytes()
            assert c.put(f"/v1/admin/registry/blobs/sha256/{sha(blob)}", content=blob,
                         headers=admin).status_code in (200, 201)
        r = c.post("/v1/admin/registry/versions", json={**body, "alias": "canary",
                                                        "kind": "base"}, headers=admin)
        assert r.status_code == 200, r.text
        assert (r.json()["version"]["ref"], r.json()["version"]["kind"]) == (f"{name}@1",
                                                                           "base")
        assert r.json()["alias"]["to_version"] == 1


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("ghost", 404, "no model named 'ghost' in the registry"),
    ("{name}?ref=9", 404, "model {name} has no version 9; its versions are 1 to 1"),
    ("{name}?ref=beta", 404, "model {name} has no alias 'beta'; it has none yet"),
])
def test_unknown_models_versions_and_aliases_are_404_in_one_line(
        cs: ControlServer, tmp_path: Path, path: str, status: int, fragment: str) -> None:
    name = fresh_model()
    cs.cp.registry_publish(artifact(tmp_path, seed=name), name=name, by="test")
    with https(cs) as c:
        r = c.get(f"/v1/admin/registry/models/{path.format(name=name)}",
                  headers=bearer(cs.access_token("admin")))
    refused(r, status, fragment.format(name=name))


def test_the_cli_says_what_is_unknown_in_one_line(cs: ControlServer, tmp_path: Path) -> None:
    name = fresh_model()
    cs.cp.registry_publish(artifact(tmp_path, seed=name), name=name, by="test")
    admin = cs.access_token("admin")
    since = mark(cs)
    for argv, expected in [
        (["alias", "set", f"{name}@5", "stable", *remote(cs, admin)],
         f"model {name} has no version 5; its versions are 1 to 1"),
        (["alias", "set", f"{name}@1", "Bad_Alias", "--dir", str(cs.dir)],
         "alias name 'Bad_Alias' is not allowed"),
        (["alias", "set", f"{name}@stable", "x", "--dir", str(cs.dir)],
         f"give NAME@VERSION with the version number, e.g. {name}@3"),
        (["models", "show", f"{name}@nope", "--dir", str(cs.dir)],
         f"model {name} has no alias 'nope'"),
        (["publish", str(tmp_path), "--name", "Not A Label", "--dir", str(cs.dir)],
         "model name 'Not A Label' is not allowed"),
        (["publish", str(tmp_path / "nothing"), "--name", "x", "--dir", str(cs.dir)],
         "has no manifest.json: publish a folder `edgewise build` wrote"),
    ]:
        out = run_cli("control", *argv)
        assert out.exit_code == 2, out.output
        [line] = out.stderr.strip().splitlines()
        assert line.startswith("error: ") and expected in line, line
    assert [e.outcome for e in audited(cs, since, "alias_set")] == [
        "refused:model_not_found", "refused:invalid_request_error"]


def test_registry_routes_need_the_admin_scope(cs: ControlServer) -> None:
    infer = bearer(cs.access_token("infer", subject="app-1"))
    digest = sha(b"x")
    calls = [("GET", "/v1/admin/registry/models", None),
             ("GET", "/v1/admin/registry/models/gemma", None),
             ("PUT", "/v1/admin/registry/models/gemma/aliases/stable", {"version": 1}),
             ("POST", "/v1/admin/registry/blobs/missing", {"sha256": [digest]}),
             ("PUT", f"/v1/admin/registry/blobs/sha256/{digest}", b"x"),
             ("POST", "/v1/admin/registry/versions", {"name": "g", "manifest_sha256": digest})]
    since = mark(cs)
    with https(cs) as c:
        for method, path, body in calls:
            kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
            r = c.request(method, path, headers=infer, **kw)
            refused(r, 403, "access token of app-1 has scopes infer; this route needs admin")
            r = c.request(method, path, **kw)
            refused(r, 401, "this route needs an access token with the admin scope")
    assert not cs.cp.blobs.has(digest)
    logins = audited(cs, since, "login")
    assert len(logins) == 2 * len(calls)
    assert all(e.outcome.startswith("refused:") for e in logins)


def test_a_client_that_stops_mid_upload_leaves_nothing(cs: ControlServer) -> None:
    body = b"half an upload" * 10_000
    ctx = client_context(cs.cp.files.root_cert)
    with socket.create_connection(("127.0.0.1", cs.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall((f"PUT /v1/admin/registry/blobs/sha256/{sha(body)} HTTP/1.1\r\n"
                     f"Host: 127.0.0.1\r\nAuthorization: Bearer {cs.access_token('admin')}"
                     f"\r\nContent-Length: {2 * len(body)}\r\n\r\n").encode() + body)
        deadline = time.monotonic() + 10  # the upload has begun: its temporary file
        while not leftovers(cs.cp) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(leftovers(cs.cp)) == 1
    deadline = time.monotonic() + 10  # the client went away half way
    while leftovers(cs.cp) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(cs.cp) == [] and not cs.cp.blobs.has(sha(body))
    serving(cs)
