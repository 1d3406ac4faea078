"""What a publication consists of: an ``edgewise build`` artifact read through its
manifest — the files to store, the lineage to record, the kind it looks like.

The manifest (:mod:`edgewise.artifacts.manifest`) lists every file a stage wrote with
its sha256 and size; those files, plus ``manifest.json`` itself, are what the registry
stores for a version. Nothing else in the folder is published (a build's lock file,
caches), and nothing is trusted that the manifest does not pin by digest. A variant
whose file lies outside the artifact (the source GGUF a LoRA adapter is served on) is
not copied: the lineage names that source by digest, and the registry links it to the
version that holds it.

Lineage of a version: the recipe's digest, the source model's name and digest, each
dataset's digest, the stages in order, and a parent ``NAME@VERSION`` — the manifest's
top-level ``parent`` when it names one (a fine-tune or federated run that started from
a registry version), else the registered version that holds the source file
(:meth:`~edgewise.control.registry.RegistryStore.version_holding`).

Every check here runs before a byte is copied, and each refusal is one line naming the
manifest key or file at fault.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from edgewise.artifacts.manifest import MANIFEST, SCHEMA, StageRecord
from edgewise.artifacts.variant import Variant
from edgewise.control.blobs import check_digest
from edgewise.errors import InvalidRequestError, ModelIntegrityError, ModelNotFoundError

__all__ = ["KINDS", "MAX_FILES", "MAX_MANIFEST_BYTES", "ArtifactFile", "Kind", "Lineage",
           "Publication", "local_file", "missing", "parse_ref", "profile_choices",
           "read_directory", "read_manifest", "tampered"]

Kind = Literal["base", "variant", "adapter"]
KINDS: tuple[Kind, ...] = get_args(Kind)
#: A manifest larger than this is not a manifest.
MAX_MANIFEST_BYTES = 16 << 20
#: Files one version may have.
MAX_FILES = 10_000
_MAX_PATH = 512


@dataclass(frozen=True)
class ArtifactFile:
    """One file of a version: its path inside the artifact, digest and size."""

    path: str  # relative, '/'-separated, e.g. stages/quantize/model.q4_k_m.gguf
    sha256: str
    size_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size_bytes": self.size_bytes}


@dataclass(frozen=True)
class Lineage:
    """Which recipe, data and parent produced a version (module docstring)."""

    recipe_sha256: str | None
    source: dict[str, Any]  # {name, format, sha256} of the base model, {} if unknown
    datasets: dict[str, str]  # dataset name -> sha256
    stages: list[str]  # "id:kind", in build order
    parent: str | None = None  # NAME@VERSION

    def to_json(self) -> dict[str, Any]:
        return {"recipe_sha256": self.recipe_sha256, "source": self.source,
                "datasets": self.datasets, "stages": self.stages, "parent": self.parent}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lineage:
        return cls(recipe_sha256=data.get("recipe_sha256"), source=dict(data.get("source")
                   or {}), datasets=dict(data.get("datasets") or {}),
                   stages=list(data.get("stages") or []), parent=data.get("parent"))


@dataclass(frozen=True)
class Publication:
    """A manifest read for publishing: what to store and what to record."""

    manifest: dict[str, Any]  # as JSON the databases take (non-finite numbers -> null)
    manifest_sha256: str
    files: tuple[ArtifactFile, ...]  # manifest.json first, then the stages' files by path
    kind: Kind  # what the manifest looks like: adapter if every variant is one
    lineage: Lineage  # parent: only as the manifest names it
    profiles: dict[str, str | None] = field(default_factory=dict)  # profile -> best variant

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME@3`` or ``NAME@stable`` as (name, the part after @ or None)."""
    name, at, rest = ref.partition("@")
    if at and not rest:
        raise InvalidRequestError(f"{ref!r}: give NAME, NAME@VERSION or NAME@ALIAS",
                                  param="ref")
    return name, rest if at else None


def read_manifest(data: bytes, *, source: str) -> Publication:
    """The publication ``data`` (a ``manifest.json``'s bytes) describes; ``source``
    names it in errors. ``InvalidRequestError`` for anything the registry would not
    be able to serve or verify later."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise _bad(source, f"is {len(data)} bytes; a manifest has at most "
                           f"{MAX_MANIFEST_BYTES}")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(source, f"is not JSON ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise _bad(source, "is not a JSON object")
    if raw.get("schema") != SCHEMA:
        raise _bad(source, f"has schema {str(raw.get('schema'))[:40]!r}, expected {SCHEMA!r}:"
                           " publish a folder `edgewise build` wrote")
    if raw.get("complete") is not True:
        raise _bad(source, "is of an unfinished build: run `edgewise build` again until it "
                           "completes")
    try:
        stages = [StageRecord.from_json(s) for s in raw.get("stages") or []]
        variants = [Variant.from_json(v) for v in raw.get("variants") or []]
    except (KeyError, TypeError, AttributeError) as exc:
        raise _bad(source, f"has a stage or variant without {exc}") from exc
    files = _stage_files(stages, source)
    digest = hashlib.sha256(data).hexdigest()
    listed = (ArtifactFile(MANIFEST, digest, len(data)), *sorted(files.values(),
                                                                  key=lambda f: f.path))
    src: dict[str, Any] = raw["source"] if isinstance(raw.get("source"), dict) else {}
    recipe: dict[str, Any] = raw["recipe"] if isinstance(raw.get("recipe"), dict) else {}
    datasets: dict[str, Any] = raw["datasets"] if isinstance(raw.get("datasets"), dict) else {}
    for v in variants:
        for rel in (v.path, v.adapter):
            if rel is None:
                continue
            if not isinstance(rel, str):
                raise _bad(source, f"variant {str(v.name)[:64]!r}: a path is not text")
            if PurePosixPath(rel).is_absolute():
                if rel != src.get("path"):
                    raise _bad(source, f"variant {v.name!r}: {rel} is outside the artifact "
                                       "and is not its source model")
            elif rel not in files:
                raise _bad(source, f"variant {v.name!r}: {rel} has no sha256 in any stage's "
                                   "files")
    lineage = Lineage(
        recipe_sha256=_str(recipe.get("sha256")),
        source={k: src[k] for k in ("name", "format", "sha256") if k in src},
        datasets={str(k): str(d.get("sha256")) for k, d in datasets.items()
                  if isinstance(d, dict)},
        stages=[f"{s.id}:{s.kind}" for s in stages],
        parent=_parent(raw.get("parent"), source))
    profiles = profile_choices(raw)
    kind: Kind = "adapter" if variants and all(v.adapter for v in variants) else "variant"
    return Publication(manifest=_jsonable(raw), manifest_sha256=digest, files=listed,
                       kind=kind, lineage=lineage, profiles=profiles)


def read_directory(directory: Path) -> tuple[Publication, bytes]:
    """The publication of an artifact folder and its manifest's bytes."""
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelNotFoundError(f"{directory} has no {MANIFEST}: publish a folder "
                                 "`edgewise build` wrote") from None
    except OSError as exc:
        raise ModelNotFoundError(f"cannot read {path}: {exc.strerror}") from exc
    return read_manifest(data, source=str(path)), data


def profile_choices(manifest: dict[str, Any]) -> dict[str, str | None]:
    """Hardware profile -> the best variant for it (None: none fits), from a manifest."""
    listed = manifest.get("profiles")
    return {str(p.get("profile")): _str(p.get("best"))
            for p in (listed if isinstance(listed, list) else []) if isinstance(p, dict)}


def local_file(directory: Path, f: ArtifactFile) -> Path:
    """Where ``f`` is in the artifact folder ``directory``: a regular file that is not a
    link out of the folder (whose bytes would be another file's)."""
    path = directory / f.path
    if not path.is_file():
        raise missing(directory, f)
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ModelIntegrityError(f"{directory}: {f.path} links outside the artifact "
                                  "folder; publish the files themselves")
    return path


def tampered(directory: Path | str, f: ArtifactFile, actual: str) -> ModelIntegrityError:
    """The one-line refusal for a file whose bytes are not the manifest's."""
    return ModelIntegrityError(
        f"{directory}: {f.path} has sha256 {actual[:16]}…, not the {f.sha256[:16]}… its "
        "manifest records: the file changed after the build; restore it or rebuild the "
        "artifact with `edgewise build`")


def missing(directory: Path | str, f: ArtifactFile) -> ModelNotFoundError:
    return ModelNotFoundError(f"{directory}: {f.path} is in the manifest but not in the "
                              "folder; restore it or rebuild the artifact")


def _stage_files(stages: list[StageRecord], source: str) -> dict[str, ArtifactFile]:
    out: dict[str, ArtifactFile] = {}
    for stage in stages:
        if not isinstance(stage.files, dict):
            raise _bad(source, f"stage {str(stage.id)[:64]!r}: files is not a mapping")
        for rel, info in stage.files.items():
            where = f"stage {stage.id!r}: file {str(rel)[:80]!r}"
            _check_path(rel, source, where)
            if not isinstance(info, dict):
                raise _bad(source, f"{where} has no sha256 and size_bytes")
            try:
                digest = check_digest(info.get("sha256"))  # type: ignore[arg-type]
            except InvalidRequestError:
                raise _bad(source, f"{where} has no valid sha256") from None
            size = info.get("size_bytes")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _bad(source, f"{where} has no valid size_bytes")
            f = ArtifactFile(rel, digest, size)
            if out.setdefault(rel, f) != f:
                raise _bad(source, f"{where} is listed twice with different digests")
    if len(out) >= MAX_FILES:
        raise _bad(source, f"lists {len(out)} files; a version has fewer than {MAX_FILES}")
    return out


def _check_path(rel: Any, source: str, where: str) -> None:
    """A path the registry may store and a node may later write under its model
    directory: relative, '/'-separated, without '.', '..' or empty parts."""
    ok = isinstance(rel, str) and 0 < len(rel) <= _MAX_PATH and rel.isprintable() \
        and "\\" not in rel and not rel.startswith("/") and rel != MANIFEST \
        and all(part not in ("", ".", "..") for part in rel.split("/"))
    if not ok:
        raise _bad(source, f"{where}: not a relative path inside the artifact (no '..', "
                           "no leading '/', at most 512 characters)")


def _parent(value: Any, source: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        name, version = parse_ref(value)
        if version is not None and version.isascii() and version.isdigit():
            return f"{name}@{int(version)}"
    raise _bad(source, f"parent {str(value)[:80]!r} is not NAME@VERSION (a number)")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _jsonable(value: Any) -> Any:
    """``value`` as both databases store JSON: PostgreSQL's jsonb has no NaN, Infinity or
    NUL; the exact manifest bytes stay in its blob."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_jsonable(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _bad(source: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"{source} {what}", param="manifest")
