"""Telemetry's errors."""

from __future__ import annotations

from ..errors import SpireError


class TelemetryError(SpireError, OSError):
    """A sink the telemetry block asks for cannot start (a port taken, a TLS file unreadable, a
    setting that cannot be served): start-up stops with this one line. An OSError, so both
    daemons' ``run`` print it without a traceback."""
