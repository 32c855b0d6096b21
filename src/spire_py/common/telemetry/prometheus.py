"""Prometheus sink: ``/metrics`` served by prometheus-client from its own registry (never the
process-global one), built from the metrics registry at scrape time.

Names are SPIRE's (go-metrics'): the key parts joined with ``_``. prometheus-client writes
counters with the conventional ``_total`` suffix; samples are summaries (``_count``, ``_sum``,
milliseconds for ``elapsed_time``).

With a ``tls`` block the endpoint is HTTPS (prometheus_tls.py): ``cert_file``/``key_file`` or
the daemon's SVID (``use_spire_svid``), clients checked against ``client_ca_file`` or
authorized by SPIFFE ID (``authorized_spiffe_ids``); the daemon hands its SVID and bundle
over with ``serve_with``.
"""

from __future__ import annotations

import ssl
from typing import Any, Iterator, Optional

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.core import Metric

from .. import log
from .errors import TelemetryError
from ..config.sections import prometheus_tls_problem
from .metrics import COUNTER, GAUGE, Metrics
from .names import prometheus_name
from .prometheus_tls import BundleSource, EndpointTLS, SvidSource, serve

_log = log.get("telemetry")

_TYPES = {COUNTER: "counter", GAUGE: "gauge"}


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        families: dict[tuple[str, str], Metric] = {}
        for s in self._metrics.series():
            spelled = s.sink_names.get("prometheus")
            if spelled is None:
                spelled = s.sink_names["prometheus"] = (prometheus_name(s.name), dict(s.labels))
            name, labels = spelled
            kind = _TYPES.get(s.kind, "summary")
            family = families.get((name, kind))
            if family is None:
                family = families[(name, kind)] = Metric(name, name.replace("_", " "), kind)
            if s.kind == COUNTER:
                family.add_sample(name + "_total", labels, s.value)
            elif s.kind == GAUGE:
                family.add_sample(name, labels, s.value)
            else:
                family.add_sample(name + "_count", labels, s.count)
                family.add_sample(name + "_sum", labels, s.sum)
        return iter(families.values())


class PrometheusSink:
    name = "Prometheus"

    def __init__(self, host: str, port: int, tls: Any = None) -> None:
        """``tls``: common.config.sections.PrometheusTLSConfig, or None for plain HTTP."""
        # SPIRE listens on localhost unless told otherwise.
        self.host = host or "localhost"
        self.port = port
        self.trust_domain = ""  # set by Telemetry: authorized_spiffe_ids must be in it
        self.tls: Optional[EndpointTLS] = None
        if tls is not None:
            problem = prometheus_tls_problem(tls)
            if problem:
                raise ValueError(f"failed to create TLS config for Prometheus: {problem}")
            self.tls = EndpointTLS(tls)
        self.registry = CollectorRegistry(auto_describe=False)
        self._server: Optional[Any] = None
        self._thread: Optional[Any] = None

    def start(self, metrics: Metrics) -> None:
        self.registry.register(_Collector(metrics))
        if self.host not in ("localhost", "127.0.0.1", "::1"):
            _log.warning("Prometheus telemetry listens on a remote address; make sure access to this port is "
                         "tightly controlled", extra=log.fields(address=f"{self.host}:{self.port}"))
        try:
            if self.tls is not None:
                self.tls.check(self.trust_domain)
                self._server, self._thread = serve(self.host, self.port, make_wsgi_app(self.registry), self.tls)
            else:
                self._server, self._thread = start_http_server(self.port, self.host, registry=self.registry)
        except TelemetryError:
            raise
        except ssl.SSLError as exc:
            raise TelemetryError(f"telemetry: failed to create TLS config for Prometheus: {exc}") from None
        except OSError as exc:
            raise TelemetryError(f"telemetry: Prometheus cannot listen on {self.host}:{self.port}: {exc}") from None

    def serve_with(self, svid: SvidSource, bundle: BundleSource) -> None:
        """The daemon's current SVID and bundle, for ``use_spire_svid`` and ``authorized_spiffe_ids``."""
        if self.tls is not None:
            self.tls.svid, self.tls.bundle = svid, bundle

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return host, port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
