"""Typed node configuration: a YAML file mapped onto dataclasses.

The dataclasses are the source of truth; pydantic only validates the YAML mapping onto
them (unknown keys are rejected, values are range-checked) so every error names the key
path and what is allowed, e.g. ``serving.max_queue: must be >= 0 (got -1)``.

Example ``edgewise.yaml``::

    node: {name: clinic-1, tier: device}
    engine: {kind: llamacpp, model: smollm2-135m-instruct, n_ctx: 2048}
    serving: {max_queue: 16, max_body_bytes: 1000000}
    sampling: {temperature: 0.7}
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import Field, TypeAdapter, with_config

from edgewise.errors import ConfigError

__all__ = [
    "EdgewiseConfig",
    "EngineConfig",
    "NodeConfig",
    "SamplingDefaults",
    "ServingConfig",
    "load_config",
    "parse_config",
]

_STRICT = pydantic.ConfigDict(extra="forbid")


@with_config(_STRICT)
@dataclass
class NodeConfig:
    """Who this node is: reported in ``x-edgewise-node`` / ``x-edgewise-tier``."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")] = (
        field(default_factory=lambda: _default_node_name())
    )
    tier: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")] = (
        "device"
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080


@with_config(_STRICT)
@dataclass
class EngineConfig:
    """The local inference engine and the model it serves."""

    kind: Literal["llamacpp", "fake"] = "llamacpp"
    #: A catalogue name (``edgewise models``) or a path to a ``.gguf`` file.
    model: Annotated[str, Field(min_length=1)] = "smollm2-135m-instruct"
    #: Context window in tokens (prompt + completion).
    n_ctx: Annotated[int, Field(ge=64, le=131072)] = 2048
    #: Generation threads; ``None`` uses every core.
    n_threads: Annotated[int, Field(ge=1, le=512)] | None = None
    n_batch: Annotated[int, Field(ge=1, le=8192)] = 512
    #: Check the model file's sha256 against the catalogue before loading.
    verify_digest: bool = True


@with_config(_STRICT)
@dataclass
class ServingConfig:
    """Admission control and limits of the HTTP front end."""

    #: Requests allowed to wait for the engine; one more gets 429 + Retry-After.
    max_queue: Annotated[int, Field(ge=0, le=100_000)] = 16
    #: Seconds a queued request may wait before it gets 429.
    queue_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    #: Largest accepted request body; larger ones get 413.
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 4 * 1024 * 1024
    #: Seconds SIGTERM/Ctrl-C waits for in-flight requests before exiting.
    drain_timeout_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    #: Optional cap on ``max_tokens`` (``None``: up to the context window).
    max_tokens_limit: Annotated[int, Field(ge=1)] | None = None


@with_config(_STRICT)
@dataclass
class SamplingDefaults:
    """Sampling used when a request does not set a value (llama.cpp server defaults)."""

    temperature: Annotated[float, Field(ge=0, le=2)] = 0.8
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    top_k: Annotated[int, Field(ge=0)] = 40
    min_p: Annotated[float, Field(ge=0, le=1)] = 0.05
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] = 1.0


@with_config(_STRICT)
@dataclass
class EdgewiseConfig:
    """The whole node configuration."""

    node: NodeConfig = field(default_factory=NodeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)

    def replace(self, **sections: Any) -> EdgewiseConfig:
        """A copy with some fields of some sections replaced, re-validated.

        ``cfg.replace(node={"port": 9000})`` — used for CLI flag overrides.
        """
        data = dataclasses.asdict(self)
        for section, values in sections.items():
            data[section].update(values)
        return parse_config(data, source="command-line flags")


def _default_node_name() -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return name[:128] or "edgewise"


_ADAPTER: TypeAdapter[EdgewiseConfig] = TypeAdapter(EdgewiseConfig)


def _format_error(err: Any) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        parent = err["loc"][:-1]
        allowed = _allowed_keys(parent)
        return f"{path}: unknown key; allowed keys here: {', '.join(allowed)}"
    msg = err["msg"]
    got = err.get("input")
    return f"{path}: {msg} (got {got!r})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    cls: Any = EdgewiseConfig
    for part in loc:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        f = fields.get(str(part))
        if f is None or not isinstance(f.default_factory, type):
            return []
        cls = f.default_factory
    return [f.name for f in dataclasses.fields(cls)]


def parse_config(data: Any, *, source: str = "config") -> EdgewiseConfig:
    """Validate a mapping (parsed YAML) into an :class:`EdgewiseConfig`.

    Raises:
        ConfigError: naming every offending key path and what is allowed.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections "
                          f"(node, engine, serving, sampling), got {type(data).__name__}")
    try:
        return _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid configuration\n  " + "\n  ".join(lines)) from exc


def load_config(path: str | Path | None) -> EdgewiseConfig:
    """Load a YAML config file (``None``: all defaults)."""
    if path is None:
        return parse_config({})
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return parse_config(data, source=str(p))
