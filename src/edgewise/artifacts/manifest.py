"""The artifact manifest: what was built, from what, how, and what it measured.

``<artifact>/manifest.json`` is the input the registry and signing will consume. It
records the source model's digest, every dataset's digest, every completed stage with
its parameters, fingerprint, timings, metrics and the sha256 of every file it wrote, the
variants (deployable files) with their metrics, the per-profile choices and the tool
versions. It is rewritten atomically (temp file, fsync, ``os.replace``) after every
stage, so a crash leaves the previous complete manifest; a stage is complete exactly
when its entry is in it.

Schema (``"schema": "edgewise.artifact/1"``)::

    {name, schema, created, updated, complete,
     recipe:   {path, sha256},
     source:   {name, path, format, sha256, size_bytes},
     datasets: {<name>: {path, format, sha256, size_bytes}},
     tools:    {python, edgewise, llama_cpp_python, torch, transformers, peft, ...},
     stages:   [{id, kind, input, params, fingerprint, lineage, started, finished,
                 seconds, model, metrics, files: {<relpath>: {sha256, size_bytes}}}],
     variants: [{name, format, path, adapter, quantization, stage, lineage,
                 size_bytes, metrics}],
     profiles: [{profile, best, variants: [{variant, fits, reasons, ...}]}]}
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.artifacts.variant import Variant
from edgewise.errors import SupplyError
from edgewise.models import file_sha256

__all__ = [
    "MANIFEST",
    "SCHEMA",
    "Manifest",
    "StageRecord",
    "atomic_write_text",
    "digest_tree",
    "tool_versions",
]

MANIFEST = "manifest.json"
SCHEMA = "edgewise.artifact/1"

_TOOLS = ("edgewise", "llama-cpp-python", "torch", "transformers", "peft", "safetensors",
          "tokenizers", "gguf", "onnx", "onnxscript", "onnxruntime", "numpy")


def tool_versions() -> dict[str, str | None]:
    """Installed versions of everything that can change an output (None: absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _TOOLS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def digest_tree(root: Path, rel_to: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root``, keyed by path relative to ``rel_to``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(rel_to))] = {"sha256": file_sha256(p),
                                               "size_bytes": p.stat().st_size}
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, rename (never a torn file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass
class StageRecord:
    id: str
    kind: str
    input: str
    params: dict[str, Any]
    fingerprint: str
    lineage: list[str]
    started: float
    finished: float
    #: Relative path of the working model this stage wrote (None: it kept its input).
    model: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "input": self.input, "params": self.params,
                "fingerprint": self.fingerprint, "lineage": self.lineage,
                "started": self.started, "finished": self.finished,
                "seconds": round(self.finished - self.started, 3), "model": self.model,
                "metrics": self.metrics, "files": self.files}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StageRecord:
        return cls(id=d["id"], kind=d["kind"], input=d["input"], params=d["params"],
                   fingerprint=d["fingerprint"], lineage=d.get("lineage", []),
                   started=d["started"], finished=d["finished"], model=d.get("model"),
                   metrics=d.get("metrics", {}), files=d.get("files", {}))


@dataclass
class Manifest:
    """In-memory manifest; :meth:`save` writes it atomically."""

    path: Path
    name: str
    created: float = field(default_factory=time.time)
    recipe: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False

    @classmethod
    def load(cls, artifact_dir: Path) -> Manifest | None:
        """The manifest of an artifact folder, or None if it has none yet.

        Raises:
            SupplyError: the file exists but is not a manifest this version reads.
        """
        path = artifact_dir / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SupplyError(f"{path} is not a readable manifest ({exc}); move the "
                              "artifact folder aside to rebuild it") from exc
        if data.get("schema") != SCHEMA:
            raise SupplyError(f"{path} has schema {data.get('schema')!r}, expected {SCHEMA!r}")
        return cls(path=path, name=data["name"], created=data["created"],
                   recipe=data.get("recipe", {}), source=data.get("source", {}),
                   datasets=data.get("datasets", {}), tools=data.get("tools", {}),
                   stages=[StageRecord.from_json(s) for s in data.get("stages", [])],
                   variants=[Variant.from_json(v) for v in data.get("variants", [])],
                   profiles=data.get("profiles", []), complete=data.get("complete", False))

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "name": self.name, "created": self.created,
                "updated": time.time(), "complete": self.complete, "recipe": self.recipe,
                "source": self.source, "datasets": self.datasets, "tools": self.tools,
                "stages": [s.to_json() for s in self.stages],
                "variants": [v.to_json() for v in self.variants],
                "profiles": self.profiles}

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_json(), indent=2, default=_json_default))

    def stage(self, sid: str) -> StageRecord | None:
        return next((s for s in self.stages if s.id == sid), None)

    def drop_stage(self, sid: str) -> None:
        """Forget a stage and its variants (it will be redone)."""
        self.stages = [s for s in self.stages if s.id != sid]
        self.variants = [v for v in self.variants if v.stage != sid]


def _json_default(obj: Any) -> Any:
    # numpy scalars (llama.cpp logprobs are np.float32) and paths
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
