"""The pipeline with fake stages (no torch): resume, atomicity, fingerprints, manifest."""

from __future__ import annotations

import fcntl
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import with_config

from edgewise.artifacts import Manifest, Variant
from edgewise.errors import DatasetError, StageError, SupplyError
from edgewise.supply.pipeline import build
from edgewise.supply.recipe import parse_recipe
from edgewise.supply.stage import STRICT, Stage, StageContext, StageResult
from edgewise.supply.stages import register_stage

CALLS: list[str] = []
FAIL: dict[str, BaseException | None] = {"t-fail": None}


@with_config(STRICT)
@dataclass
class WriteParams:
    text: str = "x"
    model: bool = False
    data: str | None = None


@register_stage
class WriteStage(Stage):
    """Writes a file (and optionally a 'model'), offers it as a variant."""

    kind = "t-write"
    Params = WriteParams
    dataset_fields = ("data",)

    def produces_model(self, params: WriteParams) -> bool:
        return params.model

    def run(self, params: WriteParams, ctx: StageContext) -> StageResult:
        CALLS.append(ctx.stage_id)
        out = ctx.out_dir / "out.bin"
        out.write_text(f"{params.text} from {ctx.model.hf_dir.name}")
        result = StageResult(variants=[Variant(
            name=ctx.stage_id, format="gguf", path=ctx.rel(out), quantization="F16",
            stage=ctx.stage_id, size_bytes=out.stat().st_size)],
            metrics={"lineage": ctx.lineage})
        if params.model:
            m = ctx.out_dir / "model"
            m.mkdir()
            (m / "config.json").write_text("{}")
            result.model = m
        return result


@with_config(STRICT)
@dataclass
class FailParams:
    partial: bool = True


@register_stage
class FailStage(Stage):
    """Writes half its output, then fails while FAIL says so."""

    kind = "t-fail"
    Params = FailParams

    def run(self, params: FailParams, ctx: StageContext) -> StageResult:
        CALLS.append(ctx.stage_id)
        (ctx.out_dir / "half.bin").write_text("partial")
        exc = FAIL["t-fail"]
        if exc is not None:
            raise exc
        return StageResult(metrics={"ok": True})


@with_config(STRICT)
@dataclass
class MeasureParams:
    scores: dict[str, float] | None = None


@register_stage
class MeasureStage(Stage):
    kind = "t-measure"
    Params = MeasureParams
    reads_variants = True

    def run(self, params: MeasureParams, ctx: StageContext) -> StageResult:
        CALLS.append(ctx.stage_id)
        scores = params.scores or {}
        return StageResult(variant_metrics={
            name: {"task_accuracy": scores.get(name, 0.5), "peak_rss_mb": 100.0}
            for name in ctx.variants})


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL["t-fail"] = None


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    (base / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "d.txt").write_text("some text\n")
    return tmp_path


def make(workdir: Path, stages: list[Any], **over: Any) -> Any:
    data = {"name": "fake", "base": "./base-model", "stages": stages,
            "datasets": {"d": {"path": "d.txt", "format": "text"}}, **over}
    return parse_recipe(data, root=workdir, sha256="r")


STAGES = [{"t-write": {"id": "a", "model": True}},
          {"t-write": {"id": "b", "text": "y"}},
          {"t-fail": {"id": "c"}},
          {"t-write": {"id": "d", "data": "d"}}]


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_build_records_everything_in_the_manifest(workdir: Path) -> None:
    m = build(make(workdir, STAGES, profiles=[{"name": "p", "memory_mb": 1000}]))
    art = workdir / "artifacts" / "fake"
    assert CALLS == ["a", "b", "c", "d"]
    on_disk = json.loads((art / "manifest.json").read_text())
    assert on_disk["complete"] and on_disk["schema"] == "edgewise.artifact/1"
    assert on_disk["source"]["format"] == "hf" and len(on_disk["source"]["sha256"]) == 64
    assert on_disk["datasets"]["d"]["sha256"] == sha256(workdir / "d.txt")
    assert on_disk["tools"]["llama-cpp-python"] == "0.3.36"
    assert [s["id"] for s in on_disk["stages"]] == ["a", "b", "c", "d"]
    assert on_disk["stages"][1]["params"] == {"text": "y", "model": False, "data": None}
    # every file of every stage, with its real digest
    for stage in on_disk["stages"]:
        for rel, info in stage["files"].items():
            assert sha256(art / rel) == info["sha256"]
            assert (art / rel).stat().st_size == info["size_bytes"]
    assert "stages/a/model/config.json" in on_disk["stages"][0]["files"]
    # the model of `a` is the input of the later stages
    assert (art / "stages/b/out.bin").read_text() == "y from model"
    assert on_disk["stages"][0]["model"] == "stages/a/model"
    assert [v["name"] for v in on_disk["variants"]] == ["a", "b", "d"]
    assert m.profiles[0]["best"] == "b"  # all fit, nothing measured: the smallest file
    assert not list((art / "stages").glob(".*"))


def test_an_interrupted_build_resumes_at_the_failed_stage(workdir: Path) -> None:
    recipe = make(workdir, STAGES)
    art = workdir / "artifacts" / "fake"
    FAIL["t-fail"] = RuntimeError("disk on fire")
    with pytest.raises(StageError, match=r"stage 'c' \(t-fail\) failed: RuntimeError: disk on "
                                         "fire; completed stages are kept"):
        build(recipe)
    # completed stages are recorded and on disk; the failed one left nothing behind
    m = Manifest.load(art)
    assert m is not None and not m.complete
    assert [s.id for s in m.stages] == ["a", "b"]
    assert sorted(p.name for p in (art / "stages").iterdir()) == ["a", "b"]
    FAIL["t-fail"] = None
    CALLS.clear()
    build(recipe)
    assert CALLS == ["c", "d"]  # a and b were reused
    m = Manifest.load(art)
    assert m is not None and m.complete and [s.id for s in m.stages] == ["a", "b", "c", "d"]


def test_ctrl_c_mid_stage_leaves_no_half_written_output(workdir: Path) -> None:
    recipe = make(workdir, STAGES)
    art = workdir / "artifacts" / "fake"
    FAIL["t-fail"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        build(recipe)
    assert sorted(p.name for p in (art / "stages").iterdir()) == ["a", "b"]
    FAIL["t-fail"] = None
    CALLS.clear()
    build(recipe)
    assert CALLS == ["c", "d"]


def test_leftovers_of_a_crash_are_removed(workdir: Path) -> None:
    recipe = make(workdir, STAGES[:2])
    build(recipe)
    stages = workdir / "artifacts" / "fake" / "stages"
    (stages / ".c.tmp-999").mkdir()                 # killed mid-stage
    (stages / "orphan").mkdir()                     # renamed, manifest never written
    (stages / "orphan" / "x").write_text("?")
    CALLS.clear()
    build(recipe)
    assert CALLS == []
    assert sorted(p.name for p in stages.iterdir()) == ["a", "b"]


def test_a_changed_stage_reruns_with_what_depends_on_it(workdir: Path) -> None:
    build(make(workdir, STAGES))
    changed = [STAGES[0], {"t-write": {"id": "b", "text": "z"}}, *STAGES[2:]]
    CALLS.clear()
    build(make(workdir, changed))
    assert CALLS == ["b"]  # c and d start from a's model, not from b
    changed_model = [{"t-write": {"id": "a", "model": True, "text": "new"}}, *changed[1:]]
    CALLS.clear()
    build(make(workdir, changed_model))
    assert CALLS == ["a", "b", "c", "d"]


def test_a_new_method_version_reruns_the_stage(workdir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    build(make(workdir, STAGES))
    CALLS.clear()
    build(make(workdir, STAGES))
    assert CALLS == []  # version 1 is the fingerprint it always was
    monkeypatch.setattr(WriteStage, "version", 2)
    build(make(workdir, STAGES))
    assert CALLS == ["a", "b", "c", "d"]


def test_a_changed_dataset_reruns_the_stages_that_read_it(workdir: Path) -> None:
    build(make(workdir, STAGES))
    (workdir / "d.txt").write_text("other text\n")
    CALLS.clear()
    build(make(workdir, STAGES))
    assert CALLS == ["d"]


def test_a_stage_reading_variants_follows_them(workdir: Path) -> None:
    stages = [{"t-write": {"id": "a"}}, {"t-measure": {"id": "m", "scores": {"a": 0.9}}}]
    m = build(make(workdir, stages))
    assert m.variants[0].metrics == {"task_accuracy": 0.9, "peak_rss_mb": 100.0,
                                     "evaluated_by": "m"}
    CALLS.clear()
    build(make(workdir, [{"t-write": {"id": "a", "text": "2"}}, stages[1]]))
    assert CALLS == ["a", "m"]
    # a stage added after it leaves it alone; redone, it still sees only earlier variants
    grown = [*stages, {"t-write": {"id": "b"}}]
    build(make(workdir, grown))
    m = build(make(workdir, [grown[0], {"t-measure": {"id": "m", "scores": {"a": 0.8}}},
                             grown[2]]))
    assert {v.name: v.metrics.get("evaluated_by") for v in m.variants} == {"a": "m", "b": None}


def test_removed_stages_are_dropped_with_their_variants(workdir: Path) -> None:
    build(make(workdir, STAGES))
    m = build(make(workdir, STAGES[:1]))
    assert [s.id for s in m.stages] == ["a"] and [v.name for v in m.variants] == ["a"]
    assert sorted(p.name for p in (workdir / "artifacts/fake/stages").iterdir()) == ["a"]


def test_fresh_rebuilds_everything(workdir: Path) -> None:
    build(make(workdir, STAGES))
    CALLS.clear()
    build(make(workdir, STAGES), fresh=True)
    assert CALLS == ["a", "b", "c", "d"]


def test_one_build_at_a_time(workdir: Path) -> None:
    art = workdir / "artifacts" / "fake"
    art.mkdir(parents=True)
    with (art / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(SupplyError, match="another `edgewise build` is writing"):
            build(make(workdir, STAGES))
    assert CALLS == []


def test_missing_dataset_and_base_are_clear(workdir: Path) -> None:
    (workdir / "d.txt").unlink()
    with pytest.raises(DatasetError, match=r"dataset 'd': .*d.txt does not exist"):
        build(make(workdir, STAGES))
    from edgewise.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="is not a catalogue model"):
        build(make(workdir, STAGES, base="./nothing-here"))


def test_duplicate_variant_names_are_refused(workdir: Path) -> None:
    stages = [{"t-write": {"id": "a"}}, {"t-write": {"id": "b"}}]
    m = build(make(workdir, stages))
    assert [v.name for v in m.variants] == ["a", "b"]
    # a stage producing an existing name (here via a hand-edited manifest) is an error
    art = workdir / "artifacts" / "fake"
    data = json.loads((art / "manifest.json").read_text())
    data["variants"][0]["name"] = "c"
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(StageError, match="produced variant 'c', which an earlier stage"):
        build(make(workdir, [*stages, {"t-write": {"id": "c"}}]))


def test_a_stage_whose_files_were_damaged_is_redone(workdir: Path) -> None:
    build(make(workdir, STAGES))
    (workdir / "artifacts/fake/stages/b/out.bin").write_text("truncated")
    CALLS.clear()
    m = build(make(workdir, STAGES))
    assert CALLS == ["b"]
    files = m.stage("b").files  # type: ignore[union-attr]
    assert files["stages/b/out.bin"]["sha256"] == sha256(
        workdir / "artifacts/fake/stages/b/out.bin")
