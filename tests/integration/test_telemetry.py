"""Telemetry end to end: real spire-server and spire-agent processes with a ``telemetry`` block,
scraped over HTTP and heard by UDP listeners on loopback."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import ssl
import time
import urllib.request

from cryptography import x509

from spire_py.common.tls import spiffe_id_of

from tests.integration.helpers.harness import TD, fetch, free_port, wait_for
from tests.unit.common.telemetry.test_sinks import _decode_m3


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def total(body: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    found = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", body, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found += float(m.group(2))
    return found


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def test_scrapes_show_rpc_and_issuance_counters_that_moved(start_agent, make_server):
    server_port, agent_port = free_port(), free_port()
    server = make_server(extra_top=f'telemetry {{\n Prometheus {{\n host = "127.0.0.1"\n port = {server_port}\n }}\n}}')
    token = server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/me",
               "-selector", f"unix:uid:{os.getuid()}")
    agent = start_agent(server, token)
    # The agent takes its telemetry block on a restart (it resumes with its stored SVID).
    agent.proc.stop()
    with open(agent.conf, "a") as f:
        f.write(f'\ntelemetry {{\n Prometheus {{\n host = "127.0.0.1"\n port = {agent_port}\n }}\n}}\n')
    agent.restart()
    wait_for(lambda: fetch(agent.socket) is not None, 60, "first SVID")

    before = scrape(agent_port)
    for _ in range(3):
        assert fetch(agent.socket)["spiffe_id"] == f"spiffe://{TD}/me"
    after = scrape(agent_port)
    fetches = "spire_agent_rpc_workload_api_fetch_x509svid_total"
    assert total(after, fetches) >= total(before, fetches) + 3, after
    assert total(after, fetches, method="WorkloadAPI/FetchX509SVID") > 0
    assert total(after, "spire_agent_workload_api_workload_attestation_total", status="OK") >= 3
    assert total(after, "spire_agent_workload_api_workload_attestor_total", attestor="unix") >= 3
    assert total(after, "spire_agent_manager_sync_fetch_entries_updates_total", status="OK") >= 1
    assert total(after, "spire_agent_lru_cache_svid_map_size", svid_type="X509") >= 1
    # SPIRE counts each Workload API RPC as a connection; the gauge is back to 0 once they ended.
    conns = "spire_agent_workload_api_connection_total"
    assert total(after, conns) >= total(before, conns) + 3, after
    wait_for(lambda: total(scrape(agent_port), "spire_agent_workload_api_connections") == 0, 10, "no call in flight")
    assert total(after, "spire_agent_jwt_svid_cache_size") >= 1  # the workload's JWT-SVID
    assert total(after, "spire_agent_lru_cache_entry_add_total") >= 1  # the first sync after the restart
    assert total(after, "spire_agent_sync_entries_total") >= 1 and total(after, "spire_agent_sync_bundles_total") >= 1
    assert total(after, "spire_agent_agent_key_manager_get_key_total", status="OK") >= 1
    assert total(after, "spire_agent_started", trust_domain_id=TD) == 1

    body = scrape(server_port)
    assert total(body, "spire_server_rpc_agent_v1_agent_attest_agent_total", status="OK") == 1, body
    assert total(body, "spire_server_node_attestor_attest_total", attestor="join_token", status="OK") == 1
    assert total(body, "spire_server_rpc_svid_v1_svid_batch_new_x509svid_total", status="OK") >= 1
    assert total(body, "spire_server_server_ca_sign_x509_svid_total") >= 3  # server, agent, workload SVIDs
    assert total(body, "spire_server_ca_manager_x509_ca_prepare_total", status="OK") >= 1
    assert total(body, "spire_server_server_key_manager_generate_key_total", status="OK") >= 2  # X.509 CA, JWT key
    assert total(body, "spire_server_rpc_agent_v1_agent_attest_agent_elapsed_time_count", status="OK") == 1
    # The datastore behind it: the token taken once, the entry created, a repeated token refused.
    assert total(body, "spire_server_datastore_join_token_fetch_total", status="OK") == 1, body
    assert total(body, "spire_server_datastore_registration_entry_create_total", status="OK") >= 1
    assert total(body, "spire_server_datastore_node_create_total", status="OK") == 1
    assert total(body, "spire_server_datastore_node_fetch_elapsed_time_count", status="OK") >= 1
    # Every sample carries the host label (EnableHostnameLabel defaults to true).
    assert f'host="{socket.gethostname()}"' in body


def test_server_run_with_every_sink_emits_to_all_of_them(make_server):
    statsd, dogstatsd, m3 = _udp(), _udp(), _udp()
    prom = free_port()
    server = make_server(extra_top=f"""
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {prom}
    }}
    DogStatsd = [{{ address = "127.0.0.1:{dogstatsd.getsockname()[1]}" }}]
    Statsd = [{{ address = "127.0.0.1:{statsd.getsockname()[1]}" }}]
    M3 = [{{ address = "127.0.0.1:{m3.getsockname()[1]}" env = "test" }}]
    InMem {{}}
    MetricPrefix = "spire_test"
    EnableHostnameLabel = false
    BlockedPrefixes = ["spire_test.rpc.health"]
}}""")
    try:
        server.cli("entry", "show")  # an RPC to count
        statsd_text = statsd.recv(65536).decode()
        dog_text = dogstatsd.recv(65536).decode()
        _, _, batch = _decode_m3(m3.recv(65536))
    finally:
        for s in (statsd, dogstatsd, m3):
            s.close()
    assert statsd_text.startswith("spire_test."), statsd_text
    assert dog_text.startswith("spire_test."), dog_text
    assert {(t.name, t.value) for t in batch.commonTags} == {("env", "test"), ("service", "spire_server")}
    assert batch.metrics

    body = scrape(prom)
    assert "spire_test_uptime_in_ms" in body
    assert "spire_test_rpc_health" not in body  # the healthcheck's calls are blocked
    assert "host=" not in body

    # SIGUSR1: InMem writes to the log, the server keeps serving.
    wait_for(lambda: "spire_test_rpc_entry_v1_entry_list_entries_total" in scrape(prom), 10, "entry RPC counted")
    os.kill(server.proc.proc.pid, signal.SIGUSR1)
    wait_for(lambda: "[C] 'spire_test.rpc.entry.v1.entry.list_entries;" in server.proc.logs(), 10, "InMem dump")
    time.sleep(0.5)
    assert server.proc.alive() and server.healthy()
    assert "in-memory telemetry is not enabled" not in server.proc.logs()


def test_sigusr1_without_inmem_says_so_and_keeps_running(spire_server):
    os.kill(spire_server.proc.proc.pid, signal.SIGUSR1)
    wait_for(lambda: "in-memory telemetry is not enabled" in spire_server.proc.logs(), 10, "SIGUSR1 log line")
    assert spire_server.proc.alive() and spire_server.healthy()


def test_prometheus_over_spiffe_mtls_serves_only_authorized_svids(make_server, tmp_path):
    """use_spire_svid + authorized_spiffe_ids on a real server: a scraper with an X.509-SVID
    minted for the authorized ID reads /metrics over mTLS, the server presenting its own SVID;
    another ID and no certificate are refused."""
    port = free_port()
    server = make_server(extra_top=f"""
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {port}
        tls {{
            use_spire_svid = true
            authorized_spiffe_ids = ["spiffe://{TD}/prometheus"]
        }}
    }}
}}""")

    def ctx_for(spiffe_id: str | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        d = tmp_path / (spiffe_id or "none").rsplit("/", 1)[-1]
        d.mkdir()
        server.cli("x509", "mint", "-spiffeID", spiffe_id or f"spiffe://{TD}/unused", "-write", str(d))
        ctx.load_verify_locations(cafile=str(d / "bundle.pem"))
        if spiffe_id:
            ctx.load_cert_chain(str(d / "svid.pem"), str(d / "key.pem"))
        return ctx

    def get(ctx: ssl.SSLContext) -> tuple[str, str]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/metrics")
            assert conn.sock is not None
            peer = str(spiffe_id_of(x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))))
            return peer, conn.getresponse().read().decode()
        finally:
            conn.close()

    peer, body = get(ctx_for(f"spiffe://{TD}/prometheus"))
    assert peer == f"spiffe://{TD}/spire/server"
    assert total(body, "spire_server_server_ca_sign_x509_svid_total") >= 1
    for ctx in (ctx_for(f"spiffe://{TD}/intruder"), ctx_for(None)):
        try:
            get(ctx)
        except (ssl.SSLError, ConnectionError, http.client.HTTPException):
            continue
        raise AssertionError("an unauthorized scraper read /metrics")


def test_agent_prometheus_serves_its_agent_svid_to_an_authorized_scraper(start_agent, make_server, tmp_path):
    """The agent's use_spire_svid is its agent SVID; its bundle authorizes the scraper."""
    port = free_port()
    server = make_server()
    token = server.token()
    agent = start_agent(server, token)
    agent.proc.stop()
    with open(agent.conf, "a") as f:
        f.write(f"""
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {port}
        tls {{
            use_spire_svid = true
            authorized_spiffe_ids = ["spiffe://{TD}/prometheus"]
        }}
    }}
}}
""")
    agent.restart()
    d = tmp_path / "scraper"
    d.mkdir()
    server.cli("x509", "mint", "-spiffeID", f"spiffe://{TD}/prometheus", "-write", str(d))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(d / "bundle.pem"))
    ctx.load_cert_chain(str(d / "svid.pem"), str(d / "key.pem"))
    got: dict[str, str] = {}

    def scraped() -> bool:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/metrics")
            assert conn.sock is not None
            got["peer"] = str(spiffe_id_of(x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))))
            got["body"] = conn.getresponse().read().decode()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    wait_for(scraped, 30, "an mTLS scrape of the agent")
    assert got["peer"] == f"spiffe://{TD}/spire/agent/join_token/{token}"
    assert total(got["body"], "spire_agent_started", trust_domain_id=TD) == 1
