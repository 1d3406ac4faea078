"""Serve-time choice: the best installed variant for the machine a node runs on.

``edgewise serve`` with ``engine.model: auto`` (or ``--model auto``) scans
``engine.artifacts`` — a folder of ``edgewise build`` outputs, or one of them — for
complete manifests, keeps the GGUF variants (the node serves with llama.cpp), and picks
the best one that fits ``engine.profile`` (a hardware-profile YAML) or, without one,
this machine (80% of the memory available now, every core); see
:mod:`edgewise.artifacts.profiles` for "fits" and "best". The chosen file (and adapter) is
checked against the sha256 its manifest recorded before llama.cpp opens it.

Nothing here imports torch: a node needs only the base install.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgewise.artifacts.manifest import MANIFEST, Manifest
from edgewise.artifacts.profiles import (
    HardwareProfile,
    best_variant,
    load_profile,
    machine_profile,
)
from edgewise.artifacts.variant import Variant
from edgewise.errors import DoesNotFitError, ModelIntegrityError, ModelNotFoundError

__all__ = ["Choice", "choose_variant", "installed_variants"]


@dataclass(frozen=True)
class Choice:
    """What ``model: auto`` resolved to."""

    #: ``<artifact>/<variant>``
    name: str
    path: Path
    sha256: str
    size_bytes: int
    adapter: Path | None
    adapter_sha256: str | None
    profile: HardwareProfile
    variant: Variant


def _manifests(root: Path) -> list[Manifest]:
    candidates = [root] if (root / MANIFEST).is_file() else sorted(
        p for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []
    out = []
    for d in candidates:
        m = Manifest.load(d)
        if m is not None and m.complete:
            out.append(m)
    return out


def installed_variants(root: str | Path) -> list[tuple[Manifest, Variant]]:
    """Every variant of every complete artifact under ``root`` (qualified names)."""
    out = []
    for m in _manifests(Path(root).expanduser()):
        for v in m.variants:
            q = Variant.from_json(v.to_json())
            q.name = f"{m.name}/{v.name}"
            out.append((m, q))
    return out


def _file(manifest: Manifest, rel: str) -> tuple[Path, str]:
    art = manifest.path.parent
    p = Path(rel)
    if p.is_absolute():  # the source GGUF a LoRA adapter is served on
        if str(p) != manifest.source.get("path"):
            raise ModelIntegrityError(f"{manifest.path}: {p} is not a file of this artifact")
        return p, str(manifest.source["sha256"])
    for stage in manifest.stages:
        if rel in stage.files:
            return art / p, str(stage.files[rel]["sha256"])
    raise ModelIntegrityError(f"{manifest.path}: no digest recorded for {rel}")


def choose_variant(artifacts: str | Path, profile: str | Path | None = None) -> Choice:
    """The best GGUF variant under ``artifacts`` for ``profile`` (or this machine).

    Raises:
        ModelNotFoundError: no complete artifact with a GGUF variant under ``artifacts``.
        DoesNotFitError: none fits (says what the profile allows and what is needed).
        ModelIntegrityError: the chosen file is not the one the manifest recorded.
    """
    from edgewise.models import file_sha256

    prof = load_profile(profile) if profile is not None else machine_profile()
    found = [(m, v) for m, v in installed_variants(artifacts) if v.format == "gguf"]
    if not found:
        raise ModelNotFoundError(
            f"`model: auto` found no built GGUF variants under {artifacts}: run "
            "`edgewise build RECIPE.yaml` (its output folder goes there) or set "
            "engine.artifacts")
    try:
        best = best_variant([v for _, v in found], prof)
    except DoesNotFitError:
        raise
    manifest = next(m for m, v in found if v.name == best.name)
    path, digest = _file(manifest, best.path)
    adapter = adapter_digest = None
    if best.adapter:
        adapter, adapter_digest = _file(manifest, best.adapter)
    for p, want in ((path, digest), (adapter, adapter_digest)):
        if p is None:
            continue
        if not p.is_file():
            raise ModelNotFoundError(f"variant {best.name}: {p} is missing; rebuild the artifact")
        if file_sha256(p) != want:
            raise ModelIntegrityError(f"variant {best.name}: {p} does not match the sha256 in "
                                      f"{manifest.path}; rebuild the artifact")
    return Choice(name=best.name, path=path, sha256=digest, size_bytes=path.stat().st_size,
                  adapter=adapter, adapter_sha256=adapter_digest, profile=prof, variant=best)
