"""The sinks that push over UDP: Statsd, DogStatsd (through the statsd and datadog clients)
and M3 (thrift compact over UDP, thriftpy2 reading m3.thrift).

They never run on the recording path: once a second the registry is drained into points
(counter deltas, gauges set since the last push, sample values) and each sink sends them
in as few packets as it can. A collector that is down costs nothing but a failed sendto.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Union, cast

from .. import log
from .metrics import COUNTER, ELAPSED_TIME, GAUGE, Metrics, Series

_log = log.get("telemetry")

Point = tuple[Series, Union[float, list[float]]]
M3_MAX_PACKET = 1440  # one Ethernet frame
_statsd_unsafe = str.maketrans({":": "_", " ": "_", "|": "_", "@": "_", "#": "_"})


def split_address(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"telemetry: {what} address {address!r} must be host:port")
    return host.strip("[]") or "localhost", int(port)


def drain(metrics: Metrics) -> list[Point]:
    """What changed since the last drain. Runs on the loop thread, as recording does."""
    points: list[Point] = []
    for s in metrics.series():
        if s.kind == COUNTER:
            delta = s.value - s.pushed
            if delta:
                s.pushed = s.value
                points.append((s, delta))
        elif s.kind == GAUGE:
            if s.dirty:
                s.dirty = False
                points.append((s, s.value))
        elif s.values:
            values, s.values = s.values, []
            points.append((s, values))
    return points


def _number(v: float) -> Union[int, float]:
    return int(v) if float(v).is_integer() else v


class StatsdSink:
    """Statsd: labels have no place in the protocol, so their values join the name (go-metrics')."""

    name = "Statsd"

    def __init__(self, address: str) -> None:
        import statsd

        self.address = address
        host, port = split_address(address, "Statsd")
        self._client = statsd.StatsClient(host, port, maxudpsize=1432)

    def start(self, metrics: Metrics) -> None:
        pass

    def send(self, points: list[Point]) -> None:
        pipe = self._client.pipeline()
        for s, value in points:
            name = s.sink_names.get("statsd")
            if name is None:
                name = s.sink_names["statsd"] = ".".join((*s.name, *(v for _, v in s.labels))).translate(
                    _statsd_unsafe)
            if s.kind == COUNTER:
                pipe.incr(name, _number(value))  # type: ignore[arg-type]
            elif s.kind == GAUGE:
                pipe.gauge(name, value)
            else:
                for v in value:  # type: ignore[union-attr]
                    pipe.timing(name, v)
        pipe.send()

    def close(self) -> None:
        self._client.close()


class DogStatsdSink:
    """DogStatsD: the dotted name, labels as ``name:value`` tags."""

    name = "DogStatsd"

    def __init__(self, address: str) -> None:
        from datadog.dogstatsd.base import DogStatsd

        self.address = address
        host, port = split_address(address, "DogStatsd")
        self._client = DogStatsd(host=host, port=port, disable_telemetry=True, origin_detection_enabled=False,
                                 max_buffer_len=1432)

    def start(self, metrics: Metrics) -> None:
        pass

    def send(self, points: list[Point]) -> None:
        c = self._client
        c.open_buffer()
        try:
            for s, value in points:
                spelled = s.sink_names.get("dogstatsd")
                if spelled is None:
                    spelled = s.sink_names["dogstatsd"] = (s.dotted().translate(_statsd_unsafe),
                                                           [f"{n}:{v}" for n, v in s.labels] or None)
                name, tags = spelled
                if s.kind == COUNTER:
                    c.increment(name, _number(value), tags=tags)  # type: ignore[arg-type]
                elif s.kind == GAUGE:
                    c.gauge(name, cast(float, value), tags=tags)
                else:
                    for v in value:  # type: ignore[union-attr]
                        c.timing(name, v, tags=tags)
        finally:
            c.close_buffer()

    def close(self) -> None:
        self._client.close_socket()


def m3_module() -> Any:
    import thriftpy2

    return thriftpy2.load(os.path.join(os.path.dirname(__file__), "m3.thrift"), module_name="spire_m3_thrift")


class M3Sink:
    """M3: SPIRE's names without the prefix, joined with ``_``; ``service`` and ``env`` as the
    batch's common tags, labels as the metric's tags; samples as timers in nanoseconds."""

    name = "M3"

    def __init__(self, address: str, env: str, service: str) -> None:
        from thriftpy2.protocol import TCompactProtocol
        from thriftpy2.thrift import TMessageType
        from thriftpy2.transport import TMemoryBuffer

        self.address = address
        self._target = split_address(address, "M3")
        self._m3 = m3_module()
        self._protocol, self._buffer, self._oneway = TCompactProtocol, TMemoryBuffer, TMessageType.ONEWAY
        self._common = [self._m3.MetricTag(name="env", value=env), self._m3.MetricTag(name="service", value=service)]
        family = socket.AF_INET6 if ":" in self._target[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def start(self, metrics: Metrics) -> None:
        pass

    def _metric(self, s: Series, kind: int, now: int, **value: Any) -> Any:
        m3 = self._m3
        spelled = s.sink_names.get("m3")
        if spelled is None:
            spelled = s.sink_names["m3"] = ("_".join(s.key), [m3.MetricTag(name=n, value=v) for n, v in s.labels])
        name, tags = spelled
        fields = {"count": 0, "gauge": 0.0, "timer": 0, **value}  # all are required on the wire
        return m3.Metric(name=name, value=m3.MetricValue(metricType=kind, **fields), timestamp=now, tags=tags)

    def encode(self, metrics: list[Any]) -> bytes:
        buf = self._buffer()
        proto = self._protocol(buf)
        proto.write_message_begin("emitMetricBatchV2", self._oneway, 0)
        args = self._m3.M3.emitMetricBatchV2_args(batch=self._m3.MetricBatch(metrics=metrics, commonTags=self._common))
        proto.write_struct(args)
        proto.write_message_end()
        return bytes(buf.getvalue())

    def _packets(self, metrics: list[Any]) -> list[bytes]:
        data = self.encode(metrics)
        if len(data) <= M3_MAX_PACKET or len(metrics) == 1:
            return [data]
        half = len(metrics) // 2
        return self._packets(metrics[:half]) + self._packets(metrics[half:])

    def send(self, points: list[Point]) -> None:
        t = self._m3.MetricType
        now = time.time_ns()
        metrics = []
        for s, value in points:
            if s.kind == COUNTER:
                metrics.append(self._metric(s, t.COUNTER, now, count=int(value)))  # type: ignore[arg-type]
            elif s.kind == GAUGE:
                metrics.append(self._metric(s, t.GAUGE, now, gauge=float(value)))  # type: ignore[arg-type]
            else:
                # SPIRE's M3 sink keeps timers for durations; other samples go out as their values.
                scale = 1_000_000 if s.key[-1] == ELAPSED_TIME else 1
                for v in value:  # type: ignore[union-attr]
                    metrics.append(self._metric(s, t.TIMER, now, timer=int(v * scale)))
        if not metrics:
            return
        for packet in self._packets(metrics):
            try:
                self._sock.sendto(packet, self._target)
            except OSError as exc:  # a collector that is down: the next second tries again
                _log.debug("M3 send failed", extra=log.fields(address=self.address, error=str(exc)))

    def close(self) -> None:
        self._sock.close()
