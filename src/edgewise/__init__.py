"""edgewise: small language models at the edge, escalating to bigger ones only when needed.

Public API::

    from edgewise import EdgewiseConfig, Node, create_app, load_config
    from edgewise import Detector, AuditLog          # the privacy guard, the audit log

Names are imported on first use (PEP 562), so ``import edgewise.engines.cpu`` — or a
child process that only needs one module — does not load the HTTP app and its
dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AuditLog": "edgewise.security",
    "AuditRecord": "edgewise.security",
    "Detection": "edgewise.privacy",
    "Detector": "edgewise.privacy",
    "EdgewiseConfig": "edgewise.config",
    "EdgewiseError": "edgewise.errors",
    "Engine": "edgewise.engines",
    "Level": "edgewise.levels",
    "Node": "edgewise.node",
    "SamplingParams": "edgewise.engines",
    "build_engine": "edgewise.node",
    "create_app": "edgewise.api.app",
    "load_config": "edgewise.config",
    "parse_config": "edgewise.config",
}

__all__ = [
    "AuditLog",
    "AuditRecord",
    "Detection",
    "Detector",
    "EdgewiseConfig",
    "EdgewiseError",
    "Engine",
    "Level",
    "Node",
    "SamplingParams",
    "__version__",
    "build_engine",
    "create_app",
    "load_config",
    "parse_config",
]

if TYPE_CHECKING:
    from edgewise.api.app import create_app
    from edgewise.config import EdgewiseConfig, load_config, parse_config
    from edgewise.engines import Engine, SamplingParams
    from edgewise.errors import EdgewiseError
    from edgewise.levels import Level
    from edgewise.node import Node, build_engine
    from edgewise.privacy import Detection, Detector
    from edgewise.security import AuditLog, AuditRecord


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgewise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
