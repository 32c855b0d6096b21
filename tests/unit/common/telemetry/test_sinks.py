"""common/telemetry: the facade, SPIRE's filters and names, and every sink against a real
receiver on loopback (an HTTP scrape, UDP listeners decoding StatsD, DogStatsD and the M3
thrift batch, the InMem dump)."""

import asyncio
import logging
import socket
import urllib.request

import pytest
from grpclib.const import Status

from spire_py.common.config.sections import PrometheusConfig, SinkConfig, TelemetryConfig
from spire_py.common.telemetry import NULL, Filter, Metrics, current
from spire_py.common.telemetry.names import metric_key, rpc_names
from spire_py.common.telemetry.push import M3Sink, drain, m3_module
from spire_py.common.telemetry.telemetry import Telemetry, sinks_from_config


def _udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recv_all(sock, until):
    """Datagrams until ``until(joined text)`` holds."""
    got = b""
    while not until(got.decode(errors="replace")):
        got += sock.recv(65536) + b"\n"
    return got.decode()


# --- names ----------------------------------------------------------------------------------
def test_rpc_names_are_spires():
    assert rpc_names("/spire.api.server.agent.v1.Agent/AttestAgent") == (
        "agent.v1.Agent/AttestAgent", ("rpc", "agent", "v1", "agent", "attest_agent"))
    assert rpc_names("/SpiffeWorkloadAPI/FetchJWTBundles")[1] == ("rpc", "workload_api", "fetch_jwt_bundles")
    assert rpc_names("/grpc.health.v1.Health/Check")[1] == ("rpc", "health", "check")
    # SPIRE's own test cases
    assert metric_key("ActivateX509Authority") == "activate_x509_authority"
    assert metric_key("LocalAuthority") == "local_authority"


# --- facade and filters ---------------------------------------------------------------------
def test_handles_are_made_once_and_record():
    m = Metrics("spire_server")
    c = m.counter(("a", "b"), (("k", "v"),))
    assert m.counter(("a", "b"), (("k", "v"),)) is c
    c.incr()
    m.incr_counter(("a", "b"), 2, (("k", "v"),))
    m.set_gauge(("g",), 7)
    calls = m.call_counter(("rpc", "x"))
    calls.done(0.0, Status.PERMISSION_DENIED)
    with pytest.raises(ValueError):
        with m.call(("rpc", "x")):
            raise ValueError
    by_name = {(s.dotted(), s.labels): s for s in m.series()}
    assert by_name[("spire_server.a.b", (("k", "v"),))].value == 3
    assert by_name[("spire_server.g", ())].value == 7
    assert by_name[("spire_server.rpc.x", (("status", "PermissionDenied"),))].value == 1
    assert by_name[("spire_server.rpc.x", (("status", "Unknown"),))].value == 1
    assert by_name[("spire_server.rpc.x.elapsed_time", (("status", "Unknown"),))].count == 1


def test_null_metrics_record_nothing():
    assert current() is NULL and not NULL.enabled
    NULL.incr_counter(("a",))
    NULL.call_counter(("rpc", "x")).done(0.0)
    assert NULL.series() == []


def test_blocked_prefix_drops_and_longest_prefix_wins():
    m = Metrics("spire_agent", filter=Filter(allowed_prefixes=["spire_agent.rpc.workload_api"],
                                             blocked_prefixes=["spire_agent.rpc"]))
    m.incr_counter(("rpc", "health", "check"))
    m.incr_counter(("rpc", "workload_api", "fetch_x509svid"))
    m.incr_counter(("uptime",))
    assert sorted(s.dotted() for s in m.series()) == ["spire_agent.rpc.workload_api.fetch_x509svid",
                                                      "spire_agent.uptime"]


def test_allowed_prefixes_alone_keep_everything_as_in_spire():
    # go-metrics allows by default; an allowed prefix only overrides a broader block.
    m = Metrics("spire_agent", filter=Filter(allowed_prefixes=["spire_agent.rpc"]))
    m.incr_counter(("uptime",))
    assert [s.dotted() for s in m.series()] == ["spire_agent.uptime"]


def test_label_filters():
    extra = (("host", "h1"),)
    blocked = Metrics("p", extra_labels=extra, filter=Filter(blocked_labels=["host"]))
    blocked.incr_counter(("a",), 1, (("status", "OK"),))
    assert blocked.series()[0].labels == (("status", "OK"),)
    allowed = Metrics("p", extra_labels=extra, filter=Filter(allowed_labels=["host"]))
    allowed.incr_counter(("a",), 1, (("status", "OK"), ("method", "m")))
    assert allowed.series()[0].labels == (("host", "h1"),)


# --- sinks against real receivers -------------------------------------------------------------
def _config(**kw):
    cfg = TelemetryConfig(enable_hostname_label=False, **kw)
    return cfg


async def test_prometheus_scrape_shows_counters_and_summaries():
    port = _free_port()
    cfg = _config(prometheus=PrometheusConfig(host="127.0.0.1", port=port), enable_trust_domain_label=True)
    tel = Telemetry(cfg, "spire_server", "example.org", sinks_from_config(cfg, "spire_server"))
    await tel.start()
    try:
        assert current() is tel.metrics
        calls = tel.metrics.call_counter(("rpc", "agent", "v1", "agent", "attest_agent"))
        calls.done(0.0)
        calls.done(0.0)
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
    finally:
        await tel.close()
    assert current() is NULL
    assert 'spire_server_rpc_agent_v1_agent_attest_agent_total{status="OK",trust_domain="example.org"} 2.0' in body
    assert 'spire_server_rpc_agent_v1_agent_attest_agent_elapsed_time_count{status="OK",trust_domain="example.org"} 2.0' in body
    assert 'spire_server_started{trust_domain="example.org",trust_domain_id="example.org",version=' in body
    assert "spire_server_uptime_in_ms" in body


async def test_statsd_and_dogstatsd_lines():
    plain, dog = _udp(), _udp()
    cfg = _config(statsd=[SinkConfig(address="127.0.0.1:%d" % plain.getsockname()[1])],
                  dogstatsd=[SinkConfig(address="127.0.0.1:%d" % dog.getsockname()[1])])
    tel = Telemetry(cfg, "spire_agent", "example.org", sinks_from_config(cfg, "spire_agent"))
    await tel.start()
    try:
        calls = tel.metrics.call_counter(("rpc", "workload_api", "fetch_x509svid"))
        for _ in range(3):
            calls.done(0.0)
        tel.metrics.set_gauge(("lru_cache_svid_map_size",), 4)
        tel.tick()
        text = _recv_all(plain, lambda t: "elapsed_time" in t and "lru_cache" in t)
        dtext = _recv_all(dog, lambda t: "elapsed_time" in t and "lru_cache" in t)
    finally:
        await tel.close()
        plain.close()
        dog.close()
    lines = text.split()
    assert "spire_agent.rpc.workload_api.fetch_x509svid.OK:3|c" in lines
    assert sum(1 for l in lines if l.startswith("spire_agent.rpc.workload_api.fetch_x509svid.elapsed_time.OK:")
               and l.endswith("|ms")) == 3
    assert "spire_agent.lru_cache_svid_map_size:4|g" in lines
    dlines = dtext.split()
    assert "spire_agent.rpc.workload_api.fetch_x509svid:3|c|#status:OK" in dlines
    assert "spire_agent.lru_cache_svid_map_size:4|g" in dlines
    assert sum(1 for l in dlines if l.startswith("spire_agent.rpc.workload_api.fetch_x509svid.elapsed_time:")
               and l.endswith("|ms|#status:OK")) == 3


def _decode_m3(packet):
    from thriftpy2.protocol import TCompactProtocol
    from thriftpy2.transport import TMemoryBuffer

    m3 = m3_module()
    proto = TCompactProtocol(TMemoryBuffer(packet))
    name, kind, _ = proto.read_message_begin()
    args = m3.M3.emitMetricBatchV2_args()
    proto.read_struct(args)
    return name, kind, args.batch


async def test_m3_sends_a_thrift_batch_with_env_and_service():
    rx = _udp()
    cfg = _config(m3=[SinkConfig(address="127.0.0.1:%d" % rx.getsockname()[1], env="prod")])
    tel = Telemetry(cfg, "spire_server", "example.org", sinks_from_config(cfg, "spire_server"))
    await tel.start()
    try:
        tel.metrics.call_counter(("rpc", "svid", "v1", "svid", "batch_new_x509svid")).done(0.0)
        tel.metrics.incr_counter(("server_ca", "sign", "x509_svid"), 5)
        tel.tick()
        metrics, common = [], None
        while not any(m.name == "server_ca_sign_x509_svid" for m in metrics):
            name, kind, batch = _decode_m3(rx.recv(65536))
            assert (name, kind) == ("emitMetricBatchV2", 4)  # a oneway call
            metrics += batch.metrics
            common = {t.name: t.value for t in batch.commonTags}
    finally:
        await tel.close()
        rx.close()
    m3 = m3_module()
    assert common == {"env": "prod", "service": "spire_server"}
    by_name = {m.name: m for m in metrics}
    signed = by_name["server_ca_sign_x509_svid"]
    assert (signed.value.metricType, signed.value.count) == (m3.MetricType.COUNTER, 5)
    rpc = by_name["rpc_svid_v1_svid_batch_new_x509svid"]
    assert [(t.name, t.value) for t in rpc.tags] == [("status", "OK")]
    assert by_name["rpc_svid_v1_svid_batch_new_x509svid_elapsed_time"].value.metricType == m3.MetricType.TIMER
    assert by_name["uptime_in_ms"].value.metricType == m3.MetricType.GAUGE


def test_m3_splits_batches_to_fit_a_packet():
    sink = M3Sink("127.0.0.1:9", "e", "spire_server")
    try:
        m = Metrics("spire_server", push=True)
        for i in range(200):
            m.incr_counter(("datastore", "registration_entry", f"op{i}"))
        packets = sink._packets([sink._metric(s, 1, 0, count=1) for s, _ in drain(m)])
    finally:
        sink.close()
    assert len(packets) > 1 and all(len(p) <= 1440 for p in packets)
    assert sum(len(_decode_m3(p)[2].metrics) for p in packets) == 200


async def test_inmem_dump_writes_the_series_to_the_log(caplog):
    cfg = _config(inmem=True)
    tel = Telemetry(cfg, "spire_agent", "example.org", sinks_from_config(cfg, "spire_agent"))
    await tel.start()
    try:
        tel.metrics.call_counter(("agent_svid", "rotate")).done(0.0)
        with caplog.at_level(logging.INFO, logger="spire_py"):
            assert tel.dump() is True
    finally:
        await tel.close()
    text = caplog.text
    assert "[C] 'spire_agent.agent_svid.rotate;status=OK': Sum: 1.000" in text
    assert "[S] 'spire_agent.agent_svid.rotate.elapsed_time;status=OK': Count: 1" in text
    assert "[G] 'spire_agent.uptime_in_ms'" in text


def test_push_sink_down_is_not_fatal():
    # Nothing listens on the port: sendto may fail or vanish; the tick must not raise.
    m3 = M3Sink("127.0.0.1:9", "e", "spire_agent")
    try:
        m = Metrics("spire_agent", push=True)
        m.incr_counter(("a",))
        m3.send(drain(m))
    finally:
        m3.close()
