"""Engine build benchmark: edgewise's portable llama.cpp build against pip's native one,
and the thread count.

Run by hand (it is not a test; timings are never asserted)::

    pip wheel --no-deps --no-cache-dir llama-cpp-python==0.3.36 -w /tmp/native  # pip's default
    .venv/bin/python bench/engine_build.py --native-wheel /tmp/native/llama_cpp_python-*.whl

Part A — builds, side by side in one run. The same model (the default, SmolLM2-135M
Q4_1), prompt and settings on:

* ``native``: llama-cpp-python as pip builds it by default (``GGML_NATIVE``: compiled for
  this machine's CPU), installed into a temporary virtualenv. On a CPU that advertises
  AMX this build uses llama.cpp's AMX buffer type; its batched prompt crashes where AMX
  does not really work — the run records the crash. ``native, no AMX repack`` is the
  same build with llama.cpp's extra buffer types off (``use_extra_bufts = false``), so
  it runs there and its speed can be compared;
* ``portable``: the engine ``make`` installs (``GGML_NATIVE=OFF``, ``GGML_BACKEND_DL``,
  every CPU variant), with the variant edgewise chose (``edgewise doctor`` says which).

Each side runs in its own process: load the model, then per repetition a cold prompt of
``--prompt-tokens`` tokens (prompt tok/s = tokens / time of one batched ``eval``) and
``--max-tokens`` greedy tokens one at a time (decode tok/s), at ``--threads`` threads.
Repetitions alternate between the sides.

Part B — threads under contention, on the portable build: decode and prompt tok/s at 1,
2 and the default (cores − 1 generation / cores prompt) threads, with the machine idle
and with one core kept busy by another process (a spinning loop), the situation in which
llama.cpp's threads, which wait for each other at every layer, collapse.

Outputs ``bench/results/engine_build.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
N_CTX = 2048
TEXT = ("The history of the old harbour town is long and full of storms, trade and "
        "quiet winters. ") * 40

# The measuring child: reads its settings as JSON from argv, prints one JSON line.
CHILD = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
import llama_cpp
if cfg["portable"]:
    sys.path[:0] = cfg["path"]
    from edgewise.engines.cpu import ensure_backend
    info = ensure_backend()
    variant = info.variant
else:
    variant = "native"
if not cfg.get("extra_bufts", True):
    # llama-cpp-python does not expose it: patch the defaults it starts from.
    orig = llama_cpp.llama_model_default_params
    def params():
        p = orig()
        p.use_extra_bufts = False
        return p
    llama_cpp.llama_model_default_params = params
    import llama_cpp.llama as mod
    mod.llama_cpp.llama_model_default_params = params
llm = llama_cpp.Llama(model_path=cfg["model"], n_ctx=cfg["n_ctx"], n_batch=512,
                      n_threads=cfg["threads"], n_threads_batch=cfg["batch_threads"],
                      verbose=False)
toks = llm.tokenize(cfg["text"].encode())[: cfg["prompt_tokens"]]
out = {"variant": variant, "prompt": [], "decode": []}
for _ in range(cfg["reps"]):
    llm.reset()
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    t = time.perf_counter()
    llm.eval(toks)
    out["prompt"].append(len(toks) / (time.perf_counter() - t))
    n, t = 0, time.perf_counter()
    for tok in llm.generate(toks, temp=0.0, reset=False):
        n += 1
        if n == 1:
            t = time.perf_counter()  # decode speed excludes the first token
        if n >= cfg["max_tokens"]:
            break
    out["decode"].append((n - 1) / (time.perf_counter() - t))
print(json.dumps(out), flush=True)
"""


def _child(python: str, cfg: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([python, "-c", CHILD, json.dumps(cfg)], capture_output=True,
                          text=True, timeout=900, check=False)
    if done.returncode != 0:
        why = (f"killed by signal {-done.returncode}" if done.returncode < 0
               else f"exit {done.returncode}")
        sig = {4: " (SIGILL: Illegal instruction)", 11: " (SIGSEGV)"}.get(-done.returncode, "")
        return {"crashed": why + sig, "stderr": done.stderr[-800:]}
    line = next(ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{"))
    result: dict[str, Any] = json.loads(line)
    return result


@contextlib.contextmanager
def native_venv(wheel: Path) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="edgewise-native-") as tmp:
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        py = str(Path(tmp) / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "-q", "numpy", "typing-extensions",
                        "diskcache", "jinja2"], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
        yield py


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """Another process keeping one core busy (a Python spin loop)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--native-wheel", type=Path, help="pip's default (native) build")
    p.add_argument("--threads", type=int, default=1, help="Part A threads (both sides)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=8, help="Part A alternations")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--skip-threads", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    from edgewise.engines.cpu import cpu_flags, default_threads, ensure_backend, usable_cores
    from edgewise.models import DEFAULT_MODEL, resolve_model

    model = resolve_model(DEFAULT_MODEL)
    src = str(Path(__file__).resolve().parent.parent / "src")
    chosen = ensure_backend()
    base = {"model": str(model.path), "text": TEXT, "reps": args.reps, "n_ctx": N_CTX,
            "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
            "path": [src]}
    flags = cpu_flags()
    machine = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), platform.processor()),
        "cores": usable_cores(), "amx": sorted(f for f in flags if f.startswith("amx")),
        "avx512": "avx512f" in flags, "portable_variant": chosen.variant,
        "amx_probe": chosen.amx_probe, "model": model.name,
    }
    result: dict[str, Any] = {"machine": machine, "settings": vars(args) | {
        "native_wheel": str(args.native_wheel) if args.native_wheel else None,
        "out": str(args.out)}}
    lines = ["## engine build benchmark", "",
             f"{machine['timestamp']} · {machine['cores']} × {machine['cpu']} · AMX flags: "
             f"{', '.join(machine['amx']) or 'none'} · portable variant chosen: "
             f"**{chosen.variant}** (AMX probe: {chosen.amx_probe or 'not needed'}) · "
             f"{model.name}", "",
             f"`{' '.join(['.venv/bin/python', 'bench/engine_build.py', *sys.argv[1:]])}`", ""]

    # -- Part A --------------------------------------------------------------------------
    sides: dict[str, dict[str, Any]] = {}
    cfg_a = base | {"threads": args.threads, "batch_threads": args.threads}
    with contextlib.ExitStack() as stack:
        native_py = (stack.enter_context(native_venv(args.native_wheel))
                     if args.native_wheel else None)
        for r in range(args.rounds):
            runs = [("portable", sys.executable, cfg_a | {"portable": True})]
            if native_py:
                runs += [("native", native_py, cfg_a | {"portable": False, "extra_bufts": True}),
                         ("native, no AMX repack", native_py,
                          cfg_a | {"portable": False, "extra_bufts": False})]
            for name, py, cfg in (runs if r % 2 == 0 else runs[::-1]):
                got = _child(py, cfg)
                side = sides.setdefault(name, {"prompt": [], "decode": [], "crashed": None,
                                               "rounds": []})
                if "crashed" in got:
                    side["crashed"] = got["crashed"]
                    side["stderr"] = got["stderr"]
                else:
                    side["prompt"] += got["prompt"]
                    side["decode"] += got["decode"]
                    side["variant"] = got["variant"]
                    side["rounds"].append((_med(got["prompt"]), _med(got["decode"])))
                print(f"A round {r} {name}: {got.get('crashed') or ''} "
                      f"prompt {_med(got.get('prompt', []))!s:.6} "
                      f"decode {_med(got.get('decode', []))!s:.6}", file=sys.stderr)
    result["part_a"] = sides
    ref = sides["portable"]
    lines += [f"### Part A — builds ({args.threads} thread(s), {args.prompt_tokens}-token "
              f"prompt, {args.max_tokens} decoded tokens, {args.rounds} rounds × {args.reps} "
              "runs, sides alternating)", "",
              "| build | runs? | prompt tok/s (median) | ÷ portable, paired (range) "
              "| decode tok/s (median) | ÷ portable, paired (range) |",
              "|---|---|---|---|---|---|"]

    def paired(side: dict[str, Any], k: int) -> str:
        ratios = sorted(a[k] / b[k] for a, b in zip(side["rounds"], ref["rounds"],
                                                    strict=False))
        return f"{_med(ratios):.3f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"

    for name, side in sides.items():
        if side["prompt"]:
            pr, de = _med(side["prompt"]), _med(side["decode"])
            lines.append(f"| {name}{' (' + side['variant'] + ')' if name == 'portable' else ''}"
                         f" | yes | {pr:.1f} | {paired(side, 0)} | {de:.1f} | "
                         f"{paired(side, 1)} |")
        else:
            lines.append(f"| {name} | **no: {side['crashed']}** | — | — | — | — |")

    # -- Part B --------------------------------------------------------------------------
    if not args.skip_threads:
        gen, batch = default_threads()
        settings = [("1 thread", 1, 1), ("2 threads", 2, 2),
                    (f"default ({gen} decode / {batch} prompt)", gen, batch)]
        rows: list[dict[str, Any]] = []
        for load in ("idle", "one core busy"):
            with busy_core() if load != "idle" else contextlib.nullcontext():
                for label, t, tb in settings:
                    got = _child(sys.executable, base | {
                        "portable": True, "threads": t, "batch_threads": tb})
                    rows.append({"load": load, "threads": label,
                                 "prompt": _med(got.get("prompt", [])),
                                 "decode": _med(got.get("decode", [])),
                                 "crashed": got.get("crashed")})
                    print(f"B {load} {label}: {rows[-1]}", file=sys.stderr)
        result["part_b"] = rows
        lines += ["", "### Part B — threads, machine idle vs one core busy (portable build)",
                  "", "| load | threads | prompt tok/s | decode tok/s |", "|---|---|---|---|"]
        lines += [f"| {r['load']} | {r['threads']} | {r['prompt']:.1f} | {r['decode']:.1f} |"
                  for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine_build.md").write_text("\n".join(lines) + "\n")
    (args.out / "engine_build.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(lines))
    if os.environ.get("EDGEWISE_BENCH_QUIET") is None:
        print(f"wrote {args.out / 'engine_build.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
