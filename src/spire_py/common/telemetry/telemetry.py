"""One daemon's telemetry: the registry, the sinks the ``telemetry`` block asks for, the
push loop and SPIRE's ``started``/``uptime_in_ms`` gauges.

    sinks = sinks_from_config(cfg.telemetry, "spire_server")      # the catalog does this
    tel = Telemetry(cfg.telemetry, "spire_server", trust_domain, sinks)
    await tel.start()          # Prometheus listens, pushes begin, telemetry.current() is tel.metrics
    tel.dump()                 # SIGUSR1: InMem writes what it holds to the log
    await tel.close()
"""

from __future__ import annotations

import asyncio
import socket
import time
from importlib import metadata
from typing import Any, Optional, Protocol

from .. import log
from . import names
from .inmem import InMemSink
from .metrics import NULL, Filter, Labels, Metrics, set_current
from .prometheus import PrometheusSink
from .prometheus_tls import BundleSource, SvidSource
from .push import DogStatsdSink, M3Sink, StatsdSink, drain

_log = log.get("telemetry")

PUSH_INTERVAL = 1.0  # tally's and go-metrics' InMem interval


def _version() -> str:
    try:
        return metadata.version("spire_py")
    except metadata.PackageNotFoundError:
        return "unknown"


class Sink(Protocol):
    """What the catalog hands the daemon: ``start`` with the registry, ``close`` on stop."""

    name: str

    def start(self, metrics: Metrics) -> None: ...

    def close(self) -> None: ...


def sinks_from_config(cfg: Any, service: str) -> list[Sink]:
    """The sinks a ``telemetry`` block (common/config/sections.TelemetryConfig) asks for, not started."""
    sinks: list[Sink] = []
    if cfg is None:
        return sinks
    if cfg.prometheus is not None:
        sinks.append(PrometheusSink(cfg.prometheus.host, cfg.prometheus.port, cfg.prometheus.tls))
    sinks += [DogStatsdSink(s.address) for s in cfg.dogstatsd]
    sinks += [StatsdSink(s.address) for s in cfg.statsd]
    sinks += [M3Sink(s.address, s.env, service) for s in cfg.m3]
    if cfg.inmem:
        sinks.append(InMemSink())
    return sinks


class Telemetry:
    def __init__(self, cfg: Any, service: str, trust_domain: str, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self._push = [s for s in sinks if hasattr(s, "send")]
        self._inmem = [s for s in sinks if isinstance(s, InMemSink)]
        self._started = time.monotonic()
        self._task: Optional[asyncio.Task[None]] = None
        self.trust_domain = trust_domain
        for sink in sinks:
            if isinstance(sink, PrometheusSink):
                sink.trust_domain = trust_domain
        if not sinks:
            self.metrics: Metrics = NULL
            return
        extra: Labels = ()
        if cfg.enable_trust_domain_label:  # SPIRE's default: off
            extra += (("trust_domain", trust_domain),)
        if cfg.enable_hostname_label is not False:  # SPIRE's default: on
            extra += (("host", socket.gethostname()),)
        self.metrics = Metrics(
            cfg.metric_prefix or service, extra_labels=extra, push=bool(self._push),
            filter=Filter(cfg.allowed_prefixes, cfg.blocked_prefixes, cfg.allowed_labels, cfg.blocked_labels))

    def serve_with(self, svid: SvidSource, bundle: BundleSource) -> None:
        """Before ``start``: the daemon's SVID and bundle, for a Prometheus ``tls`` block that uses them."""
        for sink in self.sinks:
            if isinstance(sink, PrometheusSink):
                sink.serve_with(svid, bundle)

    @property
    def inmem_enabled(self) -> bool:
        return bool(self._inmem)

    async def start(self) -> None:
        """Start every sink (a Prometheus port that cannot be bound stops start-up) and make
        these metrics the ones ``telemetry.current()`` hands out."""
        if not self.sinks:
            return
        for sink in self.sinks:
            sink.start(self.metrics)
        set_current(self.metrics)
        self.metrics.set_gauge(names.STARTED, 1, (("version", _version()), ("trust_domain_id", self.trust_domain)))
        self._uptime = self.metrics.gauge(names.UPTIME)
        self._uptime.set(0)
        self._task = asyncio.create_task(self._loop(), name="telemetry")
        _log.info("Telemetry started", extra=log.fields(
            sinks=",".join(sorted({s.name for s in self.sinks})), prefix=self.metrics.prefix))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            self.tick()

    def tick(self) -> None:
        """Uptime, then one push to every UDP sink; a sink that fails is logged, never fatal."""
        self._uptime.set(round((time.monotonic() - self._started) * 1000))
        if not self._push:
            return
        points = drain(self.metrics)
        for sink in self._push:
            try:
                sink.send(points)
            except Exception as exc:
                _log.warning("Telemetry push failed", extra=log.fields(sink=sink.name, error=str(exc)))

    def dump(self) -> bool:
        """SIGUSR1: InMem writes its series to the log; False when no InMem sink is configured."""
        for sink in self._inmem:
            sink.dump()
        return bool(self._inmem)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
            self.tick()  # what the last second recorded still goes out
        if self.metrics is not NULL:
            set_current(NULL)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                _log.warning("Failed to close telemetry sink", extra=log.fields(sink=sink.name, error=str(exc)))
