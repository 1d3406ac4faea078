"""Hardware profiles, and choosing the best variant that fits one.

A profile describes a class of device::

    # profiles/pi5-2gb.yaml
    name: pi5-2gb
    memory_mb: 600            # what the model process may use (weights + KV cache + runtime)
    cores: 4                  # threads llama.cpp will run
    latency:                  # optional targets
      ttft_ms: 1500           # time to first token of the evaluation prompt
      tokens_per_s: 10        # decode speed
    engine: llamacpp          # which runtime the device has: llamacpp | onnxruntime | any

**Fits** means: the variant's memory need (its measured peak RSS when ``evaluate`` ran
it, else file size + a runtime allowance) is within ``memory_mb``, its format runs on
``engine``, and, if latency targets are set, its measured speed scaled to the profile's
cores meets them. The scaling is linear in threads (``tokens/s × cores / threads used
when measuring``, capped at 1× when the profile has fewer cores): an estimate, stated as
such in the report; a device measured directly is better.

**Best** among those that fit: highest task accuracy, then lowest perplexity, then
smallest size (metrics that were not measured do not count).

:func:`machine_profile` describes the machine it runs on (memory available now, cores),
which ``edgewise serve`` uses with ``engine.model: auto`` when no profile file is given.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import Field, TypeAdapter, with_config

from edgewise.artifacts.variant import Variant
from edgewise.config import validation_messages
from edgewise.errors import DoesNotFitError, RecipeError

__all__ = [
    "Fit",
    "HardwareProfile",
    "LatencyTarget",
    "ProfileReport",
    "best_variant",
    "evaluate_profile",
    "load_profile",
    "machine_profile",
    "memory_need_mb",
    "parse_profile",
]

#: pydantic config of the profile dataclasses: unknown keys are errors.
_STRICT = pydantic.ConfigDict(extra="forbid")

#: Memory beyond the file when a variant's RSS was not measured: llama.cpp's compute
#: buffers and a 2048-token KV cache of a sub-1B model, plus the Python process.
RUNTIME_ALLOWANCE_MB = 150.0


@with_config(_STRICT)
@dataclass
class LatencyTarget:
    #: Longest acceptable time to first token of the evaluation prompt.
    ttft_ms: Annotated[float, Field(gt=0)] | None = None
    #: Slowest acceptable decode speed.
    tokens_per_s: Annotated[float, Field(gt=0)] | None = None


@with_config(_STRICT)
@dataclass
class HardwareProfile:
    """A class of device a variant must fit."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    #: Memory the model process may use, in MB (10^6 bytes).
    memory_mb: Annotated[float, Field(gt=0)]
    #: Threads the runtime will use.
    cores: Annotated[int, Field(ge=1, le=1024)] = 1
    latency: LatencyTarget = field(default_factory=LatencyTarget)
    #: The runtime on the device.
    engine: Literal["llamacpp", "onnxruntime", "any"] = "llamacpp"


@dataclass
class Fit:
    """One variant against one profile."""

    variant: str
    fits: bool
    #: Why not (empty when it fits).
    reasons: list[str]
    memory_mb: float
    est_tokens_per_s: float | None
    est_ttft_ms: float | None


@dataclass
class ProfileReport:
    profile: str
    best: str | None
    fits: list[Fit]

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "best": self.best,
                "variants": [f.__dict__ for f in self.fits]}


_ADAPTER: TypeAdapter[HardwareProfile] = TypeAdapter(HardwareProfile)


def parse_profile(data: Any, *, source: str = "profile") -> HardwareProfile:
    """Validate a mapping into a :class:`HardwareProfile` (errors name the key)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a hardware profile must be a mapping with name, "
                          f"memory_mb, cores, latency, engine; got {type(data).__name__}")
    try:
        return _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        raise RecipeError(f"{source}: invalid hardware profile\n  " + "\n  ".join(
            validation_messages(exc, HardwareProfile))) from exc


def load_profile(path: str | Path) -> HardwareProfile:
    """Load a profile YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecipeError(f"hardware profile {p} does not exist") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"hardware profile {p} cannot be read: {exc}") from exc
    return parse_profile(data, source=str(p))


def machine_profile(*, engine: Literal["llamacpp", "onnxruntime", "any"] = "llamacpp",
                    memory_fraction: float = 0.8) -> HardwareProfile:
    """This machine: ``memory_fraction`` of the memory available now, every core."""
    available = _available_memory_bytes()
    return HardwareProfile(name="this-machine", memory_mb=available * memory_fraction / 1e6,
                           cores=os.cpu_count() or 1, engine=engine)


def _available_memory_bytes() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1e9


def memory_need_mb(variant: Variant) -> float:
    """Measured peak RSS if ``evaluate`` ran the variant, else size + allowance."""
    rss = variant.metrics.get("peak_rss_mb")
    if isinstance(rss, int | float) and rss > 0:
        return float(rss)
    return variant.size_bytes / 1e6 + RUNTIME_ALLOWANCE_MB


def _scaled(value: Any, threads: Any, cores: int) -> float | None:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    used = threads if isinstance(threads, int) and threads > 0 else cores
    return float(value) * min(cores, used) / used


def _fit(variant: Variant, profile: HardwareProfile) -> Fit:
    reasons = []
    need = memory_need_mb(variant)
    if need > profile.memory_mb:
        reasons.append(f"needs {need:.0f} MB > {profile.memory_mb:.0f} MB")
    runtime = {"gguf": "llamacpp", "onnx": "onnxruntime"}[variant.format]
    if profile.engine not in ("any", runtime):
        reasons.append(f"{variant.format} runs on {runtime}, the profile has {profile.engine}")
    m = variant.metrics
    tps = _scaled(m.get("tokens_per_s"), m.get("threads"), profile.cores)
    # TTFT is prompt processing: it speeds up with threads like decoding (inverse).
    ttft_speed = _scaled(1.0 / m["ttft_ms"] if isinstance(m.get("ttft_ms"), int | float)
                         and m["ttft_ms"] > 0 else None, m.get("threads"), profile.cores)
    ttft = 1.0 / ttft_speed if ttft_speed else None
    target = profile.latency
    if target.tokens_per_s is not None:
        if tps is None:
            reasons.append("decode speed not measured (add an evaluate stage)")
        elif tps < target.tokens_per_s:
            reasons.append(f"~{tps:.1f} tokens/s < {target.tokens_per_s:g}")
    if target.ttft_ms is not None:
        if ttft is None:
            reasons.append("time to first token not measured (add an evaluate stage)")
        elif ttft > target.ttft_ms:
            reasons.append(f"TTFT ~{ttft:.0f} ms > {target.ttft_ms:g} ms")
    return Fit(variant.name, not reasons, reasons, need, tps, ttft)


def _rank(variant: Variant) -> tuple[float, float, float]:
    """Sort key, best first: accuracy high, perplexity low, size small."""
    m = variant.metrics
    acc = m.get("task_accuracy")
    ppl = m.get("perplexity")
    return (-(acc if isinstance(acc, int | float) else -1.0),
            ppl if isinstance(ppl, int | float) and math.isfinite(ppl) else math.inf,
            float(variant.size_bytes))


def evaluate_profile(variants: list[Variant], profile: HardwareProfile) -> ProfileReport:
    """Which variants fit ``profile``, and the best of them (None if none fits)."""
    fits = [_fit(v, profile) for v in variants]
    ok = {f.variant for f in fits if f.fits}
    ranked = sorted((v for v in variants if v.name in ok), key=_rank)
    return ProfileReport(profile.name, ranked[0].name if ranked else None, fits)


def best_variant(variants: list[Variant], profile: HardwareProfile) -> Variant:
    """The best variant that fits.

    Raises:
        DoesNotFitError: none fits; says the profile's budget and what the smallest needs.
    """
    report = evaluate_profile(variants, profile)
    if report.best is not None:
        return next(v for v in variants if v.name == report.best)
    if not variants:
        raise DoesNotFitError(f"no variants to choose from for profile {profile.name!r}: "
                              "build some with `edgewise build RECIPE.yaml`")
    smallest = min(report.fits, key=lambda f: f.memory_mb)
    why = "; ".join(f"{f.variant}: {', '.join(f.reasons)}" for f in report.fits[:6])
    raise DoesNotFitError(
        f"no variant fits profile {profile.name!r} ({profile.memory_mb:.0f} MB, "
        f"{profile.cores} cores, engine {profile.engine}): {why}. The smallest, "
        f"{smallest.variant}, needs {smallest.memory_mb:.0f} MB; add a smaller quantization "
        "(e.g. Q4_K_M) or a pruned/distilled variant to the recipe, or relax the profile")
