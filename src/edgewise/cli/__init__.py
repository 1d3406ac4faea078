"""``edgewise`` command line: a thin map from flags to typed functions.

One module per command (group); each registers itself on :data:`app` when imported.
"""

from __future__ import annotations

import sys

from edgewise.cli import (
    audit,
    build,
    calibrate,
    chat,
    control,
    doctor,
    federate,
    models,
    rollout,
    router,
    scan,
    serve,
)
from edgewise.cli._app import app, console
from edgewise.errors import EdgewiseError

__all__ = ["app", "audit", "build", "calibrate", "chat", "control", "doctor", "federate", "main",
           "models", "rollout", "router", "scan", "serve"]


def main() -> None:
    try:
        app()
    except EdgewiseError as exc:  # pragma: no cover - commands handle their own
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
