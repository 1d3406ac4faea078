"""``control.yaml``: the settings of one fleet's control plane, written by
``edgewise control init`` into its directory.

Example::

    fleet: acme
    hosts: [localhost, 127.0.0.1, ::1]      # names in the control plane's certificate
    host: 127.0.0.1
    port: 8443
    database_url: null                       # null: sqlite in the control directory
    heartbeat_s: 10
    node_cert_hours: 24
    join_token_minutes: 15
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic
import yaml
from pydantic import Field, TypeAdapter, with_config

from edgewise.config import read_yaml, validation_messages
from edgewise.errors import ConfigError

__all__ = ["ControlSettings", "load_settings", "save_settings"]

SETTINGS_FILE = "control.yaml"


@with_config(pydantic.ConfigDict(extra="forbid"))
@dataclass
class ControlSettings:
    fleet: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    #: DNS names and addresses in the control plane's TLS certificate.
    hosts: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1", "::1"])
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8443
    #: ``postgresql://user:password@host:port/db`` for a shared control plane (several
    #: replicas); ``None``: SQLite, ``control.sqlite`` in the control directory.
    database_url: str | None = None
    #: Seconds between heartbeats nodes are told to use; two missed: ``offline``.
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    #: Lifetime of node certificates (renewed at half of it).
    node_cert_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 24.0
    #: Default lifetime of join tokens.
    join_token_minutes: Annotated[float, Field(gt=0, le=24 * 60 * 7)] = 15.0
    #: Failed join attempts one client address may make per minute before 429.
    join_failures_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 10


_ADAPTER: TypeAdapter[ControlSettings] = TypeAdapter(ControlSettings)


def load_settings(directory: Path) -> ControlSettings:
    path = directory / SETTINGS_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} is not a control plane directory (no "
                          f"{SETTINGS_FILE}); create one with `edgewise control init "
                          f"--dir {directory}`")
    _, data = read_yaml(path, ConfigError, "control plane settings")
    try:
        return _ADAPTER.validate_python(data or {})
    except pydantic.ValidationError as exc:
        lines = validation_messages(exc, ControlSettings)
        raise ConfigError(f"{path}: invalid settings\n  " + "\n  ".join(lines)) from exc


def save_settings(directory: Path, settings: ControlSettings) -> None:
    data: dict[str, Any] = asdict(settings)
    (directory / SETTINGS_FILE).write_text(
        "# edgewise control plane settings (edgewise control init)\n"
        + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
