"""Telemetry as SPIRE emits it: SPIRE's metric keys and labels, recorded cheaply in one registry
(``metrics``) and fanned out to the sinks of the ``telemetry`` block (``telemetry.Telemetry``:
Prometheus, DogStatsd, Statsd, M3, InMem). See docs/metrics.md for what each daemon emits.

Importing the package stays light (no sink client libraries): ``common/rpc.py`` imports it.
"""

from .metrics import NULL, CallCounter, Filter, Metrics, NullMetrics, calls, counts, current, set_current

__all__ = ["NULL", "CallCounter", "Filter", "Metrics", "NullMetrics", "calls", "counts", "current", "set_current"]
