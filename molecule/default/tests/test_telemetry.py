"""Telemetry on real hosts: /metrics on the server and on each agent, and counters that move
when this verify step itself fetches SVIDs (SPIRE's metric names, docs/metrics.md)."""

from __future__ import annotations

import re
import uuid

from conftest import fetch_jwt, fetch_x509

SERVER_METRICS = "http://127.0.0.1:9988/metrics"
AGENT_METRICS = "http://127.0.0.1:9989/metrics"


def scrape(h, url):
    cmd = f"python3 -c \"import urllib.request; print(urllib.request.urlopen('{url}', timeout=10).read().decode())\""
    return h.check_output(cmd)


def total(text, name):
    """The sum of a counter over all its label sets."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def test_agent_counts_workload_api_fetches(fleet, agent):
    h = fleet.host(agent)
    name = "spire_agent_rpc_workload_api_fetch_x509svid_total"
    before = total(scrape(h, AGENT_METRICS), name)
    fetch_x509(h)
    after = total(scrape(h, AGENT_METRICS), name)
    assert after >= before + 1, (before, after)


def test_server_counts_the_jwt_svids_it_signs(fleet, agent):
    server = fleet.host(fleet.servers[0])
    signed = "spire_server_server_ca_sign_jwt_svid_total"
    before = total(scrape(server, SERVER_METRICS), signed)
    # A fresh audience is never in the agent's cache: the server signs a new JWT-SVID.
    assert fetch_jwt(fleet.host(agent), f"verify-{uuid.uuid4().hex[:8]}")["svids"]
    text = scrape(server, SERVER_METRICS)
    assert total(text, signed) >= before + 1
    assert total(text, "spire_server_rpc_svid_v1_svid_new_jwtsvid_total") >= 1


def test_metrics_are_served_on_loopback_only(fleet, agent):
    h = fleet.host(agent)
    listening = h.check_output("ss -ltnH 'sport = :9989'")
    assert listening and all(addr.startswith(("127.0.0.1:", "[::1]:")) for addr in
                             (line.split()[3] for line in listening.splitlines()))
