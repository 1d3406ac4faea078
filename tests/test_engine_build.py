"""The engine runs on every x86-64 CPU: llama.cpp's CPU variant is chosen at run time,
never AMX unless a probe ran it; the batched prompt path works on the real model;
`edgewise doctor` says what was chosen; the node never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgewise.chat import Message
from edgewise.engines import Generation, SamplingParams
from edgewise.engines.cpu import VARIANT_FEATURES, select_variant
from edgewise.errors import EngineError

EDGEWISE = str(Path(sys.executable).with_name("edgewise"))

HASWELL = frozenset({"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"})
AVX512 = HASWELL | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw",
                    "avx512vbmi", "avx512_vnni", "avx512_bf16"}
AMX = AVX512 | {"amx_tile", "amx_int8", "amx_bf16"}
FOUND = {name: Path(f"/lib/libggml-cpu-{name}.so") for name in VARIANT_FEATURES}


def ggml_like_score(path: Path) -> int:
    """More features, higher score (what ggml's ggml_backend_score does)."""
    name = path.name.removeprefix("libggml-cpu-").removesuffix(".so")
    return 1 + len(VARIANT_FEATURES[name])


@pytest.mark.parametrize(("flags", "best"), [
    (HASWELL, "haswell"),
    (HASWELL | {"avx_vnni"}, "alderlake"),
    (AVX512, "zen4"),  # zen4 and cooperlake/icelake: the widest feature set wins
    (frozenset({"sse4_2"}), "sse42"),
    (frozenset({"fpu"}), "x64"),  # any x86-64 CPU runs something
])
def test_the_best_variant_whose_features_the_kernel_reports(flags: frozenset[str],
                                                            best: str) -> None:
    got = select_variant(FOUND, flags, score=ggml_like_score)
    assert got.best == best
    if "avx512f" not in flags:
        assert got.rejected["skylakex"].startswith("CPU lacks ")
        assert "avx512f" in got.rejected["skylakex"]


def test_amx_only_after_the_probe_ran_it() -> None:
    failed = select_variant(FOUND, AMX, score=ggml_like_score,
                            probe=lambda p: "failed (killed by signal 4)")
    assert failed.best == "zen4" and failed.amx_probe == "failed (killed by signal 4)"
    assert failed.rejected["sapphirerapids"] == "AMX probe failed (killed by signal 4)"
    ok = select_variant(FOUND, AMX, score=ggml_like_score, probe=lambda p: "ok")
    assert ok.best == "sapphirerapids"
    # a CPU without AMX is never probed
    probed: list[Path] = []
    select_variant(FOUND, AVX512, probe=lambda p: probed.append(p) or "ok")
    assert probed == []


def test_forced_variant_and_no_runnable_variant() -> None:
    assert select_variant(FOUND, AVX512, forced="haswell").best == "haswell"
    with pytest.raises(EngineError, match=r"no llama.cpp CPU backend runs on this CPU "
                                          r"\(.*haswell: CPU lacks avx2, bmi2.*unset "
                                          r"EDGEWISE_GGML_CPU"):
        select_variant(FOUND, frozenset({"sse4_2", "avx", "f16c", "fma"}), forced="haswell")
    assert select_variant({"mystery": Path("/x.so"), **FOUND}, HASWELL).rejected[
        "mystery"] == "unknown variant"


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.model
def test_the_installed_engine_dispatches_at_run_time() -> None:
    """The build `make` installs has every variant and registers one for this CPU."""
    r = _child("import json; from edgewise.engines.cpu import ensure_backend; "
               "print(json.dumps(ensure_backend().as_dict()))")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["dispatched"] is True, "llama-cpp-python was not built by `make`"
    assert info["variant"] in VARIANT_FEATURES
    flags = Path("/proc/cpuinfo").read_text()
    if "amx_tile" in flags:  # this machine lists AMX: the probe decided
        assert info["amx_probe"] is not None
        assert (info["variant"] == "sapphirerapids") == (info["amx_probe"] == "ok")
    else:
        assert info["variant"] != "sapphirerapids"


@pytest.mark.model
def test_a_long_prompt_takes_the_batched_path_on_the_real_model() -> None:
    """≥ 200 prompt tokens are decoded in batches (llama.cpp's matmul kernels, where the
    AMX build crashed): the generation completes, greedy and deterministic."""
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import DEFAULT_MODEL, resolve_model

    engine = LlamaCppEngine(resolve_model(DEFAULT_MODEL), n_ctx=1024, n_threads=1,
                            n_batch=256)
    engine.load()
    try:
        story = " ".join(f"Day {i}: the keeper lit the lamp and wrote in his log."
                         for i in range(30))
        prompt = engine.chat_prompt([Message("user", f"{story}\nSummarise the log.")])
        assert len(prompt) >= 200
        params = SamplingParams(max_tokens=24, temperature=0.0)
        runs = []
        for _ in range(2):
            gen = Generation(engine, prompt, params, n_ctx=1024)
            runs.append("".join(c.text for c in gen))
            assert gen.outcome.completion_tokens > 0
        assert runs[0] == runs[1] and runs[0].strip()
        assert engine.info().extra["cpu_backend"] in VARIANT_FEATURES
    finally:
        engine.close()


@pytest.mark.model
def test_doctor_says_what_the_engine_uses() -> None:
    r = subprocess.run([EDGEWISE, "doctor", "--json"], capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["problems"] == []
    assert report["cpu"]["usable_cores"] >= 1 and "features" in report["cpu"]
    assert report["engine"]["variant"] in VARIANT_FEATURES
    assert report["engine"]["dispatched"] is True
    assert report["engine"]["threads"] >= 1 and report["engine"]["threads_default"]
    assert report["model"]["verified"] is True and len(report["model"]["sha256"]) == 64
    assert set(report["extras"]) >= {"supply", "dev"}
    text = subprocess.run([EDGEWISE, "doctor"], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "COLUMNS": "200"})
    assert f"CPU variant {report['engine']['variant']}" in text.stdout
    assert "sha256 verified" in text.stdout


def test_doctor_reports_a_missing_model_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run([EDGEWISE, "doctor", "--model", str(tmp_path / "nope.gguf")],
                       capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 1
    assert "problem: model:" in r.stdout and "nope.gguf" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


_NODE = """
import asyncio, json, sys, time
from edgewise.api.app import create_app
from edgewise.config import parse_config
from edgewise.engines.fake import FakeEngine
from edgewise.node import Node
state, ladder = sys.argv[1], sys.argv[2]
tiers = [{"name": "device", "endpoints": [{"engine": "fake"}], "clearance": "phi"}]
if ladder == "with-cloud":
    tiers.append({"name": "cloud", "endpoints": [{"url": "http://127.0.0.1:9/v1"}],
                  "clearance": "public", "escalation": "redact"})
cfg = parse_config({"engine": {"kind": "fake"}, "audit": {"path": state + "/a.db"},
                    "routing": {"jobs_path": state + "/j.db"}, "tiers": tiers})
async def main():
    app = create_app(Node(cfg, FakeEngine()), manage_lifecycle=False)
    router = app.state.router
    t = time.perf_counter()
    router.start()
    await router.wait_guard()
    loaded = time.perf_counter() - t
    level = (router.detector.detect(["Jane Doe, MRN 12345678, diabetes"]).level
             if router.detector is not None else None)
    await router.stop()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    # VmHWM: this process's peak RSS (ru_maxrss would keep the parent's across exec)
    hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status")
               if ln.startswith("VmHWM:"))
    print(json.dumps({"needs_guard": router.needs_guard, "level": level, "heavy": heavy,
                      "load_s": loaded, "presidio": "presidio_analyzer" in sys.modules,
                      "rss_mb": hwm / 1024}))
asyncio.run(main())
"""


def _node(tmp_path: Path, ladder: str) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", _NODE, str(tmp_path), ladder],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_a_node_with_the_privacy_guard_never_imports_torch(tmp_path: Path) -> None:
    """spaCy would import torch and Presidio transformers when installed (the supply
    extra is, here): the guard loads without them, and still detects."""
    out = _node(tmp_path, "with-cloud")
    assert out["needs_guard"] is True and out["level"] == "phi", out
    assert out["heavy"] == [], out
    assert isinstance(out["rss_mb"], float) and out["rss_mb"] < 450, out  # with torch: > 600


def test_scan_is_quick_without_deep_learning(tmp_path: Path) -> None:
    text = tmp_path / "note.txt"
    text.write_text("Call Jane Doe at 555-123-4567.")
    started = time.perf_counter()
    r = subprocess.run([EDGEWISE, "scan", str(text), "--json"], capture_output=True,
                       text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - started
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["level"] == "pii"
    assert elapsed < 30  # seconds; torch + transformers alone took 8–10 s here


def test_a_single_tier_node_does_not_load_the_guard(tmp_path: Path) -> None:
    """Every tier may hold phi: screening cannot change a decision, so Presidio is not
    loaded (the request is still audited: tests/test_privacy_enforce.py)."""
    out = _node(tmp_path, "device-only")
    assert out["needs_guard"] is False and out["presidio"] is False
    assert isinstance(out["load_s"], float) and out["load_s"] < 1.0
