"""Telemetry: Prometheus metrics (later: routing breakdowns)."""

from edgewise.telemetry.metrics import NodeMetrics

__all__ = ["NodeMetrics"]
