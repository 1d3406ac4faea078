"""Fetching llama.cpp's conversion scripts (no network: pip is replaced by a fake) and
the one place optional dependencies are checked."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from edgewise.errors import MissingDependencyError
from edgewise.supply import tools
from edgewise.supply.deps import require


def _fake_pip(payload: dict[str, bytes], status: int = 0) -> tools.Runner:
    """A `pip download` that leaves a tarball with these members in the -d folder."""

    def run(argv: list[str]) -> int:
        assert argv[:4] == [sys.executable, "-m", "pip", "download"]
        assert "--no-binary" in argv and f"llama-cpp-python=={tools.LLAMA_CPP_PYTHON_VERSION}" \
            in argv
        dest = Path(argv[argv.index("-d") + 1])
        dest.mkdir(parents=True)
        with tarfile.open(dest / f"llama_cpp_python-{tools.LLAMA_CPP_PYTHON_VERSION}.tar.gz",
                          "w:gz") as tar:
            for name, data in payload.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return status

    return run


def test_a_tampered_sdist_is_refused_and_nothing_is_cached(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tools.TOOLS_DIR_ENV, str(tmp_path))
    prefix = f"llama_cpp_python-{tools.LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with pytest.raises(MissingDependencyError, match="refusing to run its scripts"):
        tools.fetch_convert_tools(runner=_fake_pip({prefix + "convert_hf_to_gguf.py": b"x"}))
    assert list(tmp_path.iterdir()) == []


def test_pip_failure_and_offline_use_say_what_to_run(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tools.TOOLS_DIR_ENV, str(tmp_path))
    with pytest.raises(MissingDependencyError, match="pip download --no-deps --no-binary"):
        tools.fetch_convert_tools(runner=_fake_pip({}, status=1))
    with pytest.raises(MissingDependencyError, match="make install-supply"):
        tools.convert_tools(fetch=False)
    assert list(tmp_path.iterdir()) == []


def test_only_the_conversion_files_are_unpacked(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tools.TOOLS_DIR_ENV, str(tmp_path))
    prefix = f"llama_cpp_python-{tools.LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    payload = {prefix + "convert_hf_to_gguf.py": b"print()", prefix + "conversion/base.py": b"",
               prefix + "gguf-py/gguf/__init__.py": b"", prefix + "ggml/src/big.c": b"int x;",
               f"llama_cpp_python-{tools.LLAMA_CPP_PYTHON_VERSION}/setup.py": b""}
    runner = _fake_pip(payload)
    monkeypatch.setattr(tools, "SDIST_SHA256", None)  # accept the fake tarball's digest

    def digest(path: Path) -> None:
        return None

    monkeypatch.setattr(tools, "file_sha256", digest)
    out = tools.fetch_convert_tools(runner=runner)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["conversion/base.py", "convert_hf_to_gguf.py", "edgewise-tools.json",
                     "gguf-py/gguf/__init__.py"]
    assert tools.convert_tools(fetch=False) == out  # cached: no second download


def test_require_names_the_extra() -> None:
    require("json", feature="x")
    with pytest.raises(MissingDependencyError) as info:
        require("json", "no_such_module_xyz", feature="the finetune stage")
    msg = str(info.value)
    assert "the finetune stage needs no_such_module_xyz, from edgewise's `supply` extra" in msg
    assert "pip install torch==2.13.0 && pip install -e '.[supply]'" in msg


def test_importing_edgewise_and_the_supply_package_does_not_import_torch() -> None:
    import subprocess

    code = ("import sys, edgewise, edgewise.supply; edgewise.supply.registered_stages(); "
            "import edgewise.node, edgewise.artifacts; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_the_artifact_format_imports_neither_torch_nor_the_supply_chain() -> None:
    """A node picks a built variant with ``edgewise.artifacts`` alone: the layer below the
    supply chain."""
    import subprocess

    code = ("import sys, edgewise.artifacts; "
            "print(sorted(m for m in sys.modules if m.startswith('edgewise.supply') "
            "or m.split('.')[0] in ('torch', 'transformers', 'peft', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"
