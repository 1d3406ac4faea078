"""edgewise: small language models at the edge, escalating to bigger ones only when needed.

Public API::

    from edgewise import EdgewiseConfig, Node, create_app, load_config
    from edgewise import Detector, AuditLog          # the privacy guard, the audit log
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgewise.api.app import create_app
from edgewise.config import EdgewiseConfig, load_config, parse_config
from edgewise.engines import Engine, SamplingParams
from edgewise.errors import EdgewiseError
from edgewise.node import Node, build_engine
from edgewise.privacy import Detection, Detector
from edgewise.security import AuditLog, AuditRecord

__all__ = [
    "AuditLog",
    "AuditRecord",
    "Detection",
    "Detector",
    "EdgewiseConfig",
    "EdgewiseError",
    "Engine",
    "Node",
    "SamplingParams",
    "__version__",
    "build_engine",
    "create_app",
    "load_config",
    "parse_config",
]
