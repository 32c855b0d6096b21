"""The metrics facade: SPIRE's counters, gauges and samples, kept in one registry the sinks read.

Recording is the hot path (every RPC), so it is an attribute update on a :class:`Series`
found once: names, labels, filters and each sink's spelling are worked out when a series is
first asked for, never per call. Callers on hot paths keep the handle
(``metrics.counter(key, labels)``) or a :class:`CallCounter`; the sinks read the registry
(Prometheus at scrape time) or drain it once a second (StatsD, DogStatsD, M3).

Keys are tuples of SPIRE's key parts (``("rpc", "agent", "v1", "agent", "attest_agent")``);
labels are tuples of ``(name, value)`` pairs. Filtering follows SPIRE's (go-metrics'):
the longest matching ``AllowedPrefixes``/``BlockedPrefixes`` entry decides, against the
dotted name with its prefix (``spire_server.rpc``); a metric no entry matches is kept.
``BlockedLabels`` drops those labels; a non-empty ``AllowedLabels`` keeps only those.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar, cast

from grpclib.const import Status

from ..grpc_codes import go_code

Key = tuple[str, ...]
Labels = tuple[tuple[str, str], ...]
F = TypeVar("F", bound=Callable[..., Any])

COUNTER, GAUGE, SAMPLE = "counter", "gauge", "sample"
ELAPSED_TIME = "elapsed_time"
# Sample values kept per series between two pushes (M3's reporter keeps 1000 timers per
# metric per batch too); count and sum still see every value.
MAX_PUSHED_SAMPLES = 1000

class Series:
    """One metric with one label set: what a sink reads. ``incr``/``set``/``add`` are the hot path."""

    __slots__ = ("kind", "name", "key", "labels", "value", "count", "sum", "min", "max", "values", "pushed",
                 "dirty", "sink_names")

    def __init__(self, kind: str, name: Key, key: Key, labels: Labels, push: bool) -> None:
        self.kind = kind
        self.name = name  # prefix + key
        self.key = key  # without the prefix (M3 names metrics without it)
        self.labels = labels
        self.value = 0.0  # counter total or gauge value
        self.count = 0  # samples
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.values: Optional[list[float]] = [] if push and kind == SAMPLE else None
        self.pushed = 0.0  # counter total at the last push
        self.dirty = False  # gauge set since the last push
        self.sink_names: dict[str, Any] = {}  # each sink's spelling, made once

    def incr(self, value: float = 1.0) -> None:
        self.value += value

    def set(self, value: float) -> None:
        self.value = value
        self.dirty = True

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        values = self.values
        if values is not None and len(values) < MAX_PUSHED_SAMPLES:
            values.append(value)

    def dotted(self) -> str:
        return ".".join(self.name)


class _Dropped:
    """A filtered-out metric, or any metric while telemetry is off."""

    __slots__ = ()

    def incr(self, value: float = 1.0) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def add(self, value: float) -> None:
        pass


DROPPED = _Dropped()


class CallCounter:
    """SPIRE's call counter: ``key`` counted and ``key.elapsed_time`` sampled (ms), both with a
    ``status`` label; the pair for each status is made on its first use."""

    __slots__ = ("_metrics", "_key", "_labels", "_by_status")

    def __init__(self, metrics: "Metrics", key: Key, labels: Labels = ()) -> None:
        self._metrics = metrics
        self._key = key
        self._labels = labels
        self._by_status: dict[Any, tuple[Any, Any]] = {}

    def done(self, started: float, status: Any = Status.OK) -> None:
        """``started``: time.monotonic() at the call's start; ``status``: a grpclib Status or a name."""
        pair = self._by_status.get(status)
        if pair is None:
            pair = self._pair(status)
        pair[0].incr(1.0)
        pair[1].add((time.monotonic() - started) * 1000.0)

    def _pair(self, status: Any) -> tuple[Any, Any]:
        name = go_code(status.value) if isinstance(status, Status) else str(status)
        labels = self._labels + (("status", name),)
        pair = (self._metrics.counter(self._key, labels), self._metrics.sample(self._key + (ELAPSED_TIME,), labels))
        self._by_status[status] = pair
        return pair

    def time(self) -> "_Timed":
        """``with counter.time(): ...``: OK, or the GRPCError's status, or Unknown."""
        return _Timed(self)


class _Timed:
    __slots__ = ("_counter", "_started")

    def __init__(self, counter: CallCounter) -> None:
        self._counter = counter
        self._started = 0.0

    def __enter__(self) -> "_Timed":
        self._started = time.monotonic()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            status: Any = Status.OK
        else:
            status = getattr(exc, "status", None)
            if not isinstance(status, Status):
                status = Status.UNKNOWN
        self._counter.done(self._started, status)


class ActiveCalls:
    """SPIRE's per-service "connection" counter and "connections" gauge: ``opened`` at a call's
    start counts it and raises the gauge, ``closed`` at its end lowers it (one per service,
    shared by its methods)."""

    __slots__ = ("_counter", "_gauge", "active")

    def __init__(self, counter: Any, gauge: Any) -> None:
        self._counter = counter
        self._gauge = gauge
        self.active = 0

    def opened(self) -> None:
        self.active += 1
        self._counter.incr(1.0)
        self._gauge.set(self.active)

    def closed(self) -> None:
        self.active -= 1
        self._gauge.set(self.active)


class Filter:
    """SPIRE's (go-metrics') prefix and label filters."""

    def __init__(self, allowed_prefixes: Iterable[str] = (), blocked_prefixes: Iterable[str] = (),
                 allowed_labels: Iterable[str] = (), blocked_labels: Iterable[str] = ()) -> None:
        self._prefixes = [(p, True) for p in allowed_prefixes] + [(p, False) for p in blocked_prefixes]
        self._allowed_labels = frozenset(allowed_labels)
        self._blocked_labels = frozenset(blocked_labels)

    def allows(self, dotted: str) -> bool:
        best, allow = -1, True
        for prefix, allowed in self._prefixes:  # blocked last: it wins a tie, as go-metrics' radix tree
            if dotted.startswith(prefix) and len(prefix) >= best:
                best, allow = len(prefix), allowed
        return allow

    def labels(self, labels: Labels) -> Labels:
        if not self._blocked_labels and not self._allowed_labels:
            return labels
        return tuple((n, v) for n, v in labels if n not in self._blocked_labels
                     and (not self._allowed_labels or n in self._allowed_labels))


class Metrics:
    """The registry and facade one daemon records into."""

    enabled = True

    def __init__(self, prefix: str, *, extra_labels: Labels = (), filter: Optional[Filter] = None,
                 push: bool = False) -> None:
        """``prefix``: MetricPrefix (SPIRE: spire_server / spire_agent); ``extra_labels``: added to
        every metric (trust_domain, host); ``push``: keep sample values for a pushing sink."""
        self.prefix = prefix
        self._extra = extra_labels
        self._filter = filter or Filter()
        self._push = push
        self._series: dict[tuple[str, Key, Labels], Any] = {}
        self._calls: dict[tuple[Key, Labels], CallCounter] = {}
        self._active: dict[tuple[Key, Key], ActiveCalls] = {}

    # --- handles (cached) ------------------------------------------------------------
    def _get(self, kind: str, key: Sequence[str], labels: Labels) -> Any:
        k = (kind, tuple(key), labels)
        s = self._series.get(k)
        if s is None:
            s = self._series[k] = self._make(kind, k[1], labels)
        return s

    def _make(self, kind: str, key: Key, labels: Labels) -> Any:
        name = (self.prefix, *key) if self.prefix else key
        if not self._filter.allows(".".join(name)):
            return DROPPED
        return Series(kind, name, key, self._filter.labels(tuple(labels) + self._extra), self._push)

    def counter(self, key: Sequence[str], labels: Labels = ()) -> Any:
        return self._get(COUNTER, key, labels)

    def gauge(self, key: Sequence[str], labels: Labels = ()) -> Any:
        return self._get(GAUGE, key, labels)

    def sample(self, key: Sequence[str], labels: Labels = ()) -> Any:
        return self._get(SAMPLE, key, labels)

    def call_counter(self, key: Sequence[str], labels: Labels = ()) -> CallCounter:
        k = (tuple(key), labels)
        c = self._calls.get(k)
        if c is None:
            c = self._calls[k] = CallCounter(self, k[0], labels)
        return c

    def active_calls(self, counter: Sequence[str], gauge: Sequence[str]) -> ActiveCalls:
        k = (tuple(counter), tuple(gauge))
        a = self._active.get(k)
        if a is None:
            a = self._active[k] = ActiveCalls(self.counter(counter), self.gauge(gauge))
        return a

    # --- one-line forms (SPIRE's IncrCounterWithLabels, ...) ----------------------------
    def incr_counter(self, key: Sequence[str], value: float = 1.0, labels: Labels = ()) -> None:
        self._get(COUNTER, key, labels).incr(value)

    def set_gauge(self, key: Sequence[str], value: float, labels: Labels = ()) -> None:
        self._get(GAUGE, key, labels).set(value)

    def add_sample(self, key: Sequence[str], value: float, labels: Labels = ()) -> None:
        self._get(SAMPLE, key, labels).add(value)

    def measure_since(self, key: Sequence[str], started: float, labels: Labels = ()) -> None:
        """``started``: time.monotonic(); the sample is in milliseconds, as SPIRE's timers."""
        self._get(SAMPLE, key, labels).add((time.monotonic() - started) * 1000.0)

    def call(self, key: Sequence[str], labels: Labels = ()) -> _Timed:
        """``with metrics.call(("agent_svid", "rotate")): ...``"""
        return self.call_counter(key, labels).time()

    # --- what sinks read ------------------------------------------------------------------
    def series(self) -> list[Series]:
        """Every recorded series (a copy, safe to walk from the Prometheus thread)."""
        return [s for s in list(self._series.values()) if s is not DROPPED]


class NullMetrics(Metrics):
    """Telemetry off: every handle drops what it is given; ``enabled`` lets hot paths skip timing."""

    enabled = False

    def __init__(self) -> None:
        super().__init__("")

    def _get(self, kind: str, key: Sequence[str], labels: Labels) -> Any:
        return DROPPED


NULL = NullMetrics()
_current: Metrics = NULL


def current() -> Metrics:
    """The running daemon's metrics (NULL until telemetry starts, and again after it stops)."""
    return _current


def set_current(metrics: Metrics) -> None:
    global _current
    _current = metrics


def calls(key: Key) -> Callable[[F], F]:
    """Decorate a function as SPIRE's call counter ``key`` (status from its exception, if any)."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with _current.call(key):
                return fn(*args, **kwargs)
        return cast(F, inner)
    return wrap


def counts(key: Key) -> Callable[[F], F]:
    """Decorate a function so each call that returns counts once in counter ``key``."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            _current.incr_counter(key)
            return result
        return cast(F, inner)
    return wrap
