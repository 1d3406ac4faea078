"""Which llama.cpp CPU code this process runs: runtime dispatch over ggml's CPU variants,
never AMX unless a probe proved it works, and the thread count.

**Why.** A llama.cpp built with ``GGML_NATIVE`` (pip's default) is compiled for the CPU
of the machine that built it, and pip's wheel cache then reuses that build on other
machines. On an Intel Xeon VM that advertises AMX (``amx_tile amx_int8`` in
``/proc/cpuinfo``) the native build picks the AMX repack buffer and the first batched
prompt dies with ``Illegal instruction``: the hypervisor lists AMX but does not run it.

**How.** ``make`` builds llama-cpp-python with ``GGML_NATIVE=OFF GGML_BACKEND_DL=ON
GGML_CPU_ALL_VARIANTS=ON``: one ``libggml-cpu-<variant>.so`` per x86-64 micro-
architecture level (``x64``, ``sse42``, … ``haswell`` (AVX2), ``skylakex``, ``icelake``,
``zen4`` (AVX-512 levels), ``alderlake`` (AVX-VNNI), ``sapphirerapids`` (AMX)), none
tied to the build machine. ggml's own loader (``ggml_backend_load_all``) picks the
variant with the best ``cpuid`` score — ``sapphirerapids`` on such a VM, the crash
again — and it searches the executable's directory and the current directory, not the
package. So before llama.cpp initialises, :func:`ensure_backend` picks the variant
itself and registers it with ``ggml_backend_load``:

1. Candidates are the variants whose every required feature is in the kernel's
   ``/proc/cpuinfo`` flags (the kernel clears a flag whose register state the OS does
   not save, so this is stricter than ``cpuid``, which ggml's score reads). A variant
   outside the known table is skipped.
2. A variant that uses AMX is a candidate only if a **probe** proved that llama.cpp's
   AMX code runs here: a child process loads that variant and decodes a 64-token batch
   with the default model (SmolLM2-135M, Q4_1: a type with AMX kernels, and AMX code
   runs only for batches). The AMX instructions alone are not enough: on the Xeon VM
   above, ``ldtilecfg``/``tdpbssd`` executed from a test program run fine while
   llama.cpp's AMX matmul dies with ``SIGILL``. The outcome is cached per CPU, kernel
   and library (``~/.cache/edgewise/cpu-probe.json``), so a machine pays for it once; a
   crash of the child is the expected "no". Without the default model installed there
   is nothing to probe with, and AMX is not used. The probe does not use the model
   being served: a model without AMX-typed weights would pass it and leave the AMX
   variant loaded for the next model of the same process.
3. Among the candidates, the highest ggml score wins (ggml's ``ggml_backend_score``).

``EDGEWISE_GGML_CPU=<variant>`` forces one variant (it must still pass step 1).

A llama-cpp-python built without ``GGML_BACKEND_DL`` (installed by hand) registers its
CPU backend itself; it is used as is and ``edgewise doctor`` says it is not runtime-
dispatched.

**Threads.** :func:`default_threads`: every core this process may use, minus one when
there are two or more (measured in ``bench/threads.py``: llama.cpp's threads spin-wait
for each other at every layer, so one busy core beside a 2-thread decode slows it ~5×,
while 1 thread loses ~35 % on an idle 2-core machine; ``cores − 1`` degrades
gracefully). Prompt processing (batched, compute-bound) uses every core.

Written by hand: neither llama.cpp nor llama-cpp-python exposes variant selection or
an AMX check (ggml's own score has a ``FIXME: this does not check for OS support``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgewise.errors import EngineError

__all__ = [
    "VARIANT_FEATURES",
    "BackendInfo",
    "Selection",
    "cpu_flags",
    "default_threads",
    "ensure_backend",
    "select_variant",
    "usable_cores",
]

log = logging.getLogger("edgewise.engine")

#: Linux /proc/cpuinfo flags each ggml x86 CPU variant is compiled for (the variant list
#: of ``ggml/src/CMakeLists.txt`` in the pinned llama.cpp; GGML_AVX512 means F, CD, VL,
#: DQ and BW, as ggml's score checks).
_AVX512 = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
_HASWELL = ("sse4_2", "avx", "f16c", "fma", "avx2", "bmi2")
VARIANT_FEATURES: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("sse4_2",),
    "sandybridge": ("sse4_2", "avx"),
    "ivybridge": ("sse4_2", "avx", "f16c"),
    "piledriver": ("sse4_2", "avx", "f16c", "fma"),
    "haswell": _HASWELL,
    "skylakex": (*_HASWELL, *_AVX512),
    "cannonlake": (*_HASWELL, *_AVX512, "avx512vbmi"),
    "cascadelake": (*_HASWELL, *_AVX512, "avx512_vnni"),
    "icelake": (*_HASWELL, *_AVX512, "avx512vbmi", "avx512_vnni"),
    "cooperlake": (*_HASWELL, *_AVX512, "avx512_vnni", "avx512_bf16"),
    "zen4": (*_HASWELL, *_AVX512, "avx512vbmi", "avx512_vnni", "avx512_bf16"),
    "alderlake": (*_HASWELL, "avx_vnni"),
    "sapphirerapids": (*_HASWELL, *_AVX512, "avx512vbmi", "avx512_vnni", "avx512_bf16",
                       "amx_tile", "amx_int8"),
}
_AMX = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
_PREFIX, _SUFFIX = "libggml-cpu-", ".so"


@dataclass
class BackendInfo:
    """What :func:`ensure_backend` registered, for ``edgewise doctor`` and ``/v1/models``."""

    #: The variant in use (``builtin``: a build without runtime dispatch).
    variant: str
    path: str | None
    #: Whether the build dispatches at run time (``GGML_BACKEND_DL``).
    dispatched: bool
    #: Variants found beside the library, and why each was not chosen.
    rejected: dict[str, str] = field(default_factory=dict)
    #: The AMX probe's verdict, when one was needed (``None``: no AMX variant applies).
    amx_probe: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_lock = threading.Lock()
_loaded: BackendInfo | None = None


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (``/proc/cpuinfo``), empty if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; containers restrict it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> tuple[int, int]:
    """(generation threads, prompt-batch threads) when ``engine.n_threads`` is unset:
    ``max(1, cores − 1)`` and ``cores`` (see the module docstring)."""
    cores = usable_cores()
    return max(1, cores - 1), cores


def _lib_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("llama-cpp-python is not installed: run `make run` (it builds "
                          "the engine for every x86-64 CPU)")
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    return Path(override) if override else Path(spec.submodule_search_locations[0]) / "lib"


def _variants(lib: Path) -> dict[str, Path]:
    """The CPU variant libraries of the installed build, by name. ggml installs them
    (``install(... DESTINATION bin)``) under the wheel's ``bin/`` folder, which lands
    in ``site-packages/bin``; a build that puts them beside the library is found too."""
    out: dict[str, Path] = {}
    for folder in (lib, lib.parent.parent / "bin"):
        for p in sorted(folder.glob(f"{_PREFIX}*{_SUFFIX}")):
            name = p.name[len(_PREFIX):-len(_SUFFIX)]
            if p.is_file() and name not in out:
                out[name] = p
    return out


def _score(path: Path) -> int:
    """ggml's own ranking of a variant (its ``ggml_backend_score``; 0: unusable)."""
    import _ctypes

    handle = ctypes.CDLL(str(path))
    try:
        fn = getattr(handle, "ggml_backend_score", None)
        if fn is None:
            return 0
        fn.restype = ctypes.c_int
        return int(fn())
    finally:
        _ctypes.dlclose(handle._handle)


def _probe_key(path: Path, flags: frozenset[str], model: Path) -> str:
    h = hashlib.sha256()
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    st = path.stat()
    for part in (cpu, " ".join(sorted(flags)), platform.release(), str(path), str(st.st_size),
                 str(int(st.st_mtime)), str(model)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgewise" / "cpu-probe.json"


def _probe_model() -> Path | None:
    """The model the AMX probe decodes with: the default catalogue model, if installed."""
    from edgewise.errors import ModelError
    from edgewise.models import DEFAULT_MODEL, resolve_model

    try:
        return Path(resolve_model(DEFAULT_MODEL, verify=False).path)
    except ModelError:
        return None


def _probe_amx(variant: Path, flags: frozenset[str]) -> str:
    """``ok`` if a child process decoded a batched prompt with ``variant``, else why not."""
    model = _probe_model()
    if model is None:
        return "not probed (the default model, which the probe decodes with, is not installed)"
    cache = _cache_file()
    key = _probe_key(variant, flags, model)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return str(known[key])
    log.info("probing AMX (%s) in a child process, once for this machine", variant.name)
    code = ("import sys; from edgewise.engines.cpu import _probe_child; "
            "_probe_child(sys.argv[1], sys.argv[2])")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(variant), str(model)],
                              capture_output=True, timeout=300, check=False)
        verdict = "ok" if done.returncode == 0 else (
            f"failed (killed by signal {-done.returncode})" if done.returncode < 0
            else f"failed (exit {done.returncode})")
    except subprocess.TimeoutExpired:
        verdict = "failed (timed out)"
    with contextlib.suppress(OSError, ValueError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[key] = verdict
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(cache)
    return verdict


def _probe_child(variant: str, model: str) -> None:  # pragma: no cover - child process
    """Load ``variant``, then decode a 64-token batch with ``model`` (AMX kernels run
    only for batches); a crash here is the probe's "no"."""
    _register(Path(variant))
    import llama_cpp

    llm = llama_cpp.Llama(model_path=model, n_ctx=256, n_batch=64, n_threads=1,
                          verbose=False)
    llm.eval(llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 6)[:64])


def _register(path: Path) -> None:
    from llama_cpp import llama_cpp as lib

    # Through libllama's own handle: dlsym searches its dependencies, so this is the
    # libggml (and backend registry) llama.cpp uses — the wheel holds several copies of
    # the file (libggml.so, .so.0, …), and opening one by path could load a second one.
    load = lib._lib.ggml_backend_load
    load.restype = ctypes.c_void_p
    load.argtypes = [ctypes.c_char_p]
    if not load(str(path).encode()):
        raise EngineError(f"llama.cpp could not load its CPU backend {path.name}")


@dataclass(frozen=True)
class Selection:
    """What :func:`select_variant` decided."""

    best: str
    rejected: dict[str, str]
    amx_probe: str | None


def select_variant(found: dict[str, Path], flags: frozenset[str], *,
                   forced: str | None = None,
                   probe: Callable[[Path], str] = lambda p: "not probed",
                   score: Callable[[Path], int] = lambda p: 1) -> Selection:
    """Steps 1–3 of the module docstring, as a pure function of what is installed
    (``found``: variant name → library), the CPU ``flags``, the AMX ``probe`` and
    ggml's ``score``.

    Raises:
        EngineError: no variant runs here (each one's reason is in the message).
    """
    rejected: dict[str, str] = {}
    usable: list[tuple[int, str]] = []
    amx_verdict: str | None = None
    for name, path in found.items():
        need = VARIANT_FEATURES.get(name)
        if need is None:
            rejected[name] = "unknown variant"
            continue
        if forced and name != forced:
            rejected[name] = f"EDGEWISE_GGML_CPU={forced}"
            continue
        missing = [f for f in need if f not in flags]
        if flags and missing:
            rejected[name] = "CPU lacks " + ", ".join(missing)
            continue
        if _AMX & set(need):
            amx_verdict = probe(path)
            if amx_verdict != "ok":
                rejected[name] = f"AMX probe {amx_verdict}"
                continue
        value = score(path)
        if value <= 0:
            rejected[name] = "ggml's score says it cannot run here"
            continue
        usable.append((value, name))
    if not usable:
        raise EngineError(
            "no llama.cpp CPU backend runs on this CPU ("
            + "; ".join(f"{k}: {v}" for k, v in sorted(rejected.items()))
            + ("" if not forced else "; unset EDGEWISE_GGML_CPU") + ")")
    _, best = max(usable)
    for _, name in usable:
        if name != best:
            rejected[name] = f"lower score than {best}"
    return Selection(best, rejected, amx_verdict)


def ensure_backend() -> BackendInfo:
    """Register the CPU variant for this machine (once per process; see the module
    docstring).

    Raises:
        EngineError: llama-cpp-python is missing, or no variant runs on this CPU.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        lib = _lib_dir()
        # libllama loads libggml-base by full path; the variants (installed elsewhere,
        # see _variants) then find it among the loaded libraries by its soname.
        import llama_cpp  # noqa: F401

        found = _variants(lib)
        if not found:  # a build without GGML_BACKEND_DL: its CPU backend is built in
            _loaded = BackendInfo("builtin", None, dispatched=False)
            log.warning("llama-cpp-python was built without runtime CPU dispatch (it may "
                        "only run on the CPU it was built on); `make run` builds it "
                        "portable")
            return _loaded
        flags = cpu_flags()
        chosen = select_variant(found, flags, forced=os.environ.get("EDGEWISE_GGML_CPU"),
                                probe=lambda p: _probe_amx(p, flags), score=_score)
        _register(found[chosen.best])
        _loaded = BackendInfo(chosen.best, str(found[chosen.best]), dispatched=True,
                              rejected=chosen.rejected, amx_probe=chosen.amx_probe)
        log.info("llama.cpp CPU backend: %s", chosen.best)
        return _loaded
