"""Serving machinery between the HTTP API and the engines."""

from edgewise.serving.admission import Admission
from edgewise.serving.runner import RunStats, stream_generation

__all__ = ["Admission", "RunStats", "stream_generation"]
