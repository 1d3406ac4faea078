"""llama.cpp's own conversion scripts, taken from the llama-cpp-python sdist.

GGUF files are written by llama.cpp's ``convert_hf_to_gguf.py`` and
``convert_lora_to_gguf.py`` (with the ``conversion`` package and the ``gguf-py`` library
they ship with), from the *same* llama-cpp-python release the node runs, so a converted
file is one this llama.cpp reads. They are not on PyPI as a package; the sdist of
llama-cpp-python carries them under ``vendor/llama.cpp/``. :func:`convert_tools` fetches
that sdist once with pip (``pip download --no-deps --no-binary :all:``, from PyPI — no
model hub), checks its sha256, and unpacks only those files into a cache directory
(``$EDGEWISE_TOOLS_DIR``, default ``~/.cache/edgewise/tools``), atomically. ``make test``
(the ``supply`` install step, ``make install-supply``) calls :func:`main` so that tests
never download anything.

The scripts run in a subprocess (:func:`run_worker` → ``_worker.py``): they need
``gguf-py`` from the sdist ahead of any ``gguf`` installed from PyPI (transformers' GGUF
loader uses that one), and llama.cpp's quantizer aborts the process on some errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgewise.errors import MissingDependencyError, StageError
from edgewise.models import file_sha256

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "SDIST_SHA256",
    "TOOLS_DIR_ENV",
    "convert_tools",
    "fetch_convert_tools",
    "run_worker",
    "tools_dir",
]

#: Must equal the llama-cpp-python pinned in pyproject.toml (the runtime that reads the files).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: sha256 of ``llama_cpp_python-0.3.36.tar.gz`` as published on PyPI (checked here).
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TOOLS_DIR_ENV = "EDGEWISE_TOOLS_DIR"

_PREFIX = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
#: What is unpacked from the sdist (relative to vendor/llama.cpp/).
_WANTED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE", "conversion/",
           "gguf-py/gguf/")
_STAMP = "edgewise-tools.json"

Runner = Callable[[list[str]], int]


def tools_dir() -> Path:
    """The cache of unpacked tools: ``$EDGEWISE_TOOLS_DIR`` or ``~/.cache/edgewise/tools``."""
    override = os.environ.get(TOOLS_DIR_ENV)
    base = Path(os.path.expanduser(override)) if override else (
        Path.home() / ".cache" / "edgewise" / "tools")
    return base / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def _complete(path: Path) -> bool:
    try:
        stamp = json.loads((path / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp.get("sdist_sha256") == SDIST_SHA256
                and (path / "convert_hf_to_gguf.py").is_file())


def _pip(argv: list[str]) -> int:
    return subprocess.run(argv, check=False, stdout=subprocess.DEVNULL).returncode


def convert_tools(*, fetch: bool = True, runner: Runner = _pip) -> Path:
    """The folder holding ``convert_hf_to_gguf.py`` & co., fetched on first use.

    Raises:
        MissingDependencyError: not cached and ``fetch`` is false, or the fetch failed
            (the message has the command to run by hand).
    """
    path = tools_dir()
    if _complete(path):
        return path
    if not fetch:
        raise MissingDependencyError(
            f"llama.cpp's conversion scripts are not in {path}: run "
            "`make install-supply` (needs PyPI) or `make test`")
    return fetch_convert_tools(runner=runner)


def fetch_convert_tools(*, runner: Runner = _pip) -> Path:
    """Download the llama-cpp-python sdist with pip, verify it, unpack the tools.

    Steps: (1) ``pip download`` into a temp folder next to the cache; (2) check the
    sha256; (3) extract only the wanted members (tarfile's ``data`` filter refuses links
    and paths outside the folder); (4) write the stamp; (5) ``os.replace`` onto the cache
    path. A failure leaves no partial cache.
    """
    dest = tools_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(tmp / "sdist")]
        if runner(argv) != 0:
            raise MissingDependencyError(
                "could not download the llama-cpp-python sdist (for llama.cpp's conversion "
                f"scripts); run `{' '.join(argv[2:])}` by hand to see why")
        tarballs = list((tmp / "sdist").glob("llama_cpp_python-*.tar.gz"))
        if len(tarballs) != 1:
            raise MissingDependencyError(f"pip did not leave one sdist in {tmp / 'sdist'}")
        digest = file_sha256(tarballs[0])
        if digest != SDIST_SHA256:
            raise MissingDependencyError(
                f"{tarballs[0].name} has sha256 {digest[:16]}…, expected {SDIST_SHA256[:16]}…;"
                " refusing to run its scripts")
        out = tmp / "tools"
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(_PREFIX)
                       and m.name[len(_PREFIX):].startswith(_WANTED) and m.isfile()]
            for m in members:
                m.name = m.name[len(_PREFIX):]
            tar.extractall(out, members=members, filter="data")
        (out / _STAMP).write_text(json.dumps(
            {"llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "sdist_sha256": SDIST_SHA256}))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(out, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run_worker(job: dict[str, Any], *, what: str, tools: Path | None = None,
               threads: int | None = None) -> dict[str, Any]:
    """Run one conversion/quantization job in a subprocess; return its JSON result.

    Raises:
        StageError: the job failed; the message has the tail of its output.
    """
    worker = Path(__file__).with_name("_worker.py")
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="edgewise-worker-") as td:
        result_file = Path(td) / "result.json"
        argv = [sys.executable, str(worker), json.dumps(
            {**job, "tools": str(tools) if tools else None, "result": str(result_file)})]
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not result_file.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise StageError(f"{what} failed (exit status {proc.returncode}):\n    "
                             + "\n    ".join(tail))
        result: dict[str, Any] = json.loads(result_file.read_text())
        return result


def main() -> None:  # pragma: no cover - used by the Makefile
    """Fetch the tools if needed and print where they are."""
    with contextlib.suppress(BrokenPipeError):
        print(convert_tools())


if __name__ == "__main__":  # pragma: no cover
    main()
