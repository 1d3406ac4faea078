"""Hardware profiles: which variant fits, which is best, and `model: auto` at serve time."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise.artifacts.choose import choose_variant, installed_variants
from edgewise.artifacts.manifest import Manifest, StageRecord
from edgewise.artifacts.profiles import (
    HardwareProfile,
    LatencyTarget,
    best_variant,
    evaluate_profile,
    machine_profile,
    parse_profile,
)
from edgewise.artifacts.variant import Variant
from edgewise.errors import DoesNotFitError, ModelIntegrityError, ModelNotFoundError


def v(name: str, size_mb: float, fmt: str = "gguf", **metrics: Any) -> Variant:
    return Variant(name=name, format=fmt,  # type: ignore[arg-type]
                   path=f"stages/s/{name}.gguf", quantization="Q", stage="s",
                   size_bytes=int(size_mb * 1e6), metrics=metrics)


PORTFOLIO = [
    v("f16", 540, perplexity=20.0, task_accuracy=0.80, peak_rss_mb=700, tokens_per_s=20,
      ttft_ms=200, threads=2),
    v("q8_0", 290, perplexity=20.1, task_accuracy=0.80, peak_rss_mb=420, tokens_per_s=30,
      ttft_ms=150, threads=2),
    v("q4_k_m", 250, perplexity=21.0, task_accuracy=0.78, peak_rss_mb=380, tokens_per_s=35,
      ttft_ms=140, threads=2),
    v("onnx-int8", 300, fmt="onnx", perplexity=20.5, task_accuracy=0.79, peak_rss_mb=900,
      tokens_per_s=5, ttft_ms=400, threads=2),
    v("unmeasured", 100),
]


def profile(**kw: Any) -> HardwareProfile:
    return HardwareProfile(**{"name": "p", "memory_mb": 10_000, "cores": 2, **kw})


def test_best_is_most_accurate_then_lowest_perplexity_then_smallest() -> None:
    assert best_variant(PORTFOLIO, profile()).name == "f16"  # 0.80, ppl 20.0
    assert best_variant(PORTFOLIO, profile(memory_mb=500)).name == "q8_0"
    assert best_variant(PORTFOLIO, profile(memory_mb=400)).name == "q4_k_m"
    # not measured: size + runtime allowance (150 MB) must fit; ranks last
    assert best_variant(PORTFOLIO, profile(memory_mb=300)).name == "unmeasured"


def test_engine_and_latency_targets_filter() -> None:
    onnx_only = profile(engine="onnxruntime")
    assert best_variant(PORTFOLIO, onnx_only).name == "onnx-int8"
    fast = profile(latency=LatencyTarget(tokens_per_s=25))
    report = evaluate_profile(PORTFOLIO, fast)
    assert report.best == "q8_0"
    reasons = {f.variant: f.reasons for f in report.fits}
    assert reasons["f16"] == ["~20.0 tokens/s < 25"]
    assert reasons["unmeasured"] == ["decode speed not measured (add an evaluate stage)"]
    # one core: measured at 2 threads, scaled linearly → q4_k_m ~17.5 tok/s
    one_core = evaluate_profile(PORTFOLIO, profile(cores=1, latency=LatencyTarget(
        tokens_per_s=15, ttft_ms=290)))
    fits = {f.variant: f for f in one_core.fits}
    assert fits["q4_k_m"].est_tokens_per_s == pytest.approx(17.5)
    assert fits["q4_k_m"].est_ttft_ms == pytest.approx(280)
    assert one_core.best == "q4_k_m"  # q8_0: TTFT ~300 ms > 290


def test_nothing_fits_says_what_would() -> None:
    with pytest.raises(DoesNotFitError) as info:
        best_variant(PORTFOLIO, profile(name="watch", memory_mb=50, cores=1))
    msg = str(info.value)
    assert "no variant fits profile 'watch' (50 MB, 1 cores, engine llamacpp)" in msg
    assert "f16: needs 700 MB > 50 MB" in msg
    assert "The smallest, unmeasured, needs 250 MB" in msg


def test_machine_profile_describes_this_machine() -> None:
    p = machine_profile()
    assert p.cores == os.cpu_count() and p.memory_mb > 10
    with pytest.raises(Exception, match="memory_mb: Input should be greater than 0"):
        parse_profile({"name": "x", "memory_mb": -1})


# -- serve-time choice over built artifacts ------------------------------------------
def _artifact(root: Path, name: str, variants: list[Variant], complete: bool = True) -> Path:
    art = root / name
    files = {}
    for var in variants:
        p = art / var.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"GGUF\x03\x00\x00\x00" + var.name.encode() * 10)  # a GGUF header
        files[var.path] = {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                           "size_bytes": p.stat().st_size}
        if var.adapter:
            a = art / var.adapter
            a.write_bytes(b"adapter")
            files[var.adapter] = {"sha256": hashlib.sha256(b"adapter").hexdigest(),
                                  "size_bytes": 7}
    now = time.time()
    m = Manifest(path=art / "manifest.json", name=name, variants=variants, complete=complete,
                 stages=[StageRecord(id="s", kind="quantize", input="base", params={},
                                     fingerprint="f", lineage=["s"], started=now,
                                     finished=now, files=files)])
    m.save()
    return art


def test_auto_picks_the_best_gguf_that_fits(tmp_path: Path) -> None:
    lora = v("tuned", 260, task_accuracy=0.9, peak_rss_mb=400)
    lora.adapter = "stages/s/adapter.gguf"
    _artifact(tmp_path, "gemma", [*PORTFOLIO[:4], lora])
    _artifact(tmp_path, "half-built", [v("x", 1, task_accuracy=1.0)], complete=False)
    assert len(installed_variants(tmp_path)) == 5
    (tmp_path / "pi.yaml").write_text("name: pi\nmemory_mb: 450\ncores: 4\n")
    choice = choose_variant(tmp_path, tmp_path / "pi.yaml")
    assert choice.name == "gemma/tuned" and choice.profile.name == "pi"
    assert choice.path == tmp_path / "gemma/stages/s/tuned.gguf"
    assert choice.adapter == tmp_path / "gemma/stages/s/adapter.gguf"
    (tmp_path / "small.yaml").write_text("name: small\nmemory_mb: 390\n")
    assert choose_variant(tmp_path / "gemma", tmp_path / "small.yaml").name == "gemma/q4_k_m"


def test_auto_refuses_a_tampered_file_and_an_empty_folder(tmp_path: Path) -> None:
    art = _artifact(tmp_path, "gemma", PORTFOLIO[:3])
    (art / "stages/s/f16.gguf").write_bytes(b"tampered")
    (tmp_path / "big.yaml").write_text("name: big\nmemory_mb: 9000\n")
    with pytest.raises(ModelIntegrityError, match="does not match the sha256"):
        choose_variant(tmp_path, tmp_path / "big.yaml")
    with pytest.raises(ModelNotFoundError, match="found no built GGUF variants under"):
        choose_variant(tmp_path / "empty")


def test_the_node_serves_the_chosen_variant_with_its_adapter(tmp_path: Path) -> None:
    from edgewise.config import parse_config
    from edgewise.node import build_engine

    lora = v("tuned", 260, task_accuracy=0.9, peak_rss_mb=400)
    lora.adapter = "stages/s/adapter.gguf"
    _artifact(tmp_path, "gemma", [PORTFOLIO[2], lora])
    (tmp_path / "pi.yaml").write_text("name: pi\nmemory_mb: 450\n")
    cfg = parse_config({"engine": {"model": "auto", "artifacts": str(tmp_path),
                                   "profile": str(tmp_path / "pi.yaml")}})
    engine: Any = build_engine(cfg)  # constructed, not loaded
    assert engine.model.path == tmp_path / "gemma/stages/s/tuned.gguf"
    assert engine.lora_path == str(tmp_path / "gemma/stages/s/adapter.gguf")
    assert engine.model.name == "gemma/tuned"
    cfg = parse_config({"engine": {"model": "auto", "artifacts": str(tmp_path),
                                   "profile": str(tmp_path / "pi.yaml")}}).replace(
        engine={"profile": None})
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("name: tiny\nmemory_mb: 10\n")
    with pytest.raises(DoesNotFitError, match="no variant fits profile 'tiny'"):
        build_engine(cfg.replace(engine={"profile": str(tiny)}))
