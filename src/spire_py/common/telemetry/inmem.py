"""InMem sink: what has been recorded, written to the log when the daemon gets SIGUSR1
(SPIRE's in-memory sink dumps go-metrics' InmemSink the same way)."""

from __future__ import annotations

from .. import log
from .metrics import COUNTER, GAUGE, Metrics, Series

_log = log.get("telemetry")


def _name(s: Series) -> str:
    labels = "".join(f";{n}={v}" for n, v in s.labels)
    return f"'{s.dotted()}{labels}'"


def dump_lines(metrics: Metrics) -> list[str]:
    """One line per series, gauges then counters then samples, each sorted by name."""
    order = {GAUGE: 0, COUNTER: 1}
    lines = []
    for s in sorted(metrics.series(), key=lambda s: (order.get(s.kind, 2), s.dotted(), s.labels)):
        if s.kind == GAUGE:
            lines.append(f"[G] {_name(s)}: {s.value:.3f}")
        elif s.kind == COUNTER:
            lines.append(f"[C] {_name(s)}: Sum: {s.value:.3f}")
        elif s.count:
            lines.append(f"[S] {_name(s)}: Count: {s.count} Min: {s.min:.3f} Mean: {s.sum / s.count:.3f} "
                         f"Max: {s.max:.3f} Sum: {s.sum:.3f}")
    return lines


class InMemSink:
    name = "InMem"

    def __init__(self) -> None:
        self._metrics: Metrics | None = None

    def start(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def dump(self) -> int:
        """Log every series; the number of lines written."""
        if self._metrics is None:
            return 0
        lines = dump_lines(self._metrics)
        _log.info("In-memory telemetry dump", extra=log.fields(series=len(lines)))
        for line in lines:
            _log.info(line)
        return len(lines)

    def close(self) -> None:
        self._metrics = None
