"""Agent hardening, with real server and agent processes: the bootstrap bundle fails closed,
disable_workload_api is honoured, SIGUSR1 is not fatal, the X.509-SVID cache is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers.harness import (AGENT, SERVER, TD, AgentHandle, Proc, ServerHandle, agent_conf, short_dir,
                                              wait_for)


def custom_agent(tmp_path: Path, server: ServerHandle, token: str, replace_bundle: str = "",
                 extra_agent: str = "") -> AgentHandle:
    """An agent whose trust_bundle_path line is swapped for ``replace_bundle`` (another bundle source)."""
    d = short_dir(tmp_path, "agent")
    sock = str(d / "public" / "api.sock")
    bundle = server.bundle_path()
    text = agent_conf(d, server, sock, bundle, extra_agent)
    if replace_bundle:
        text = text.replace(f'trust_bundle_path = "{bundle}"', replace_bundle)
    conf = d / "agent.conf"
    conf.write_text(text)
    args = [AGENT, "run", "-config", str(conf), "-joinToken", token]
    return AgentHandle(d, conf, sock, Proc(args, d / "agent.log").start(), args)


def run_until_exit(h: AgentHandle, timeout: float = 60) -> int:
    assert h.proc.proc is not None
    try:
        return h.proc.proc.wait(timeout)
    finally:
        h.proc.stop()


def attested_agents(server: ServerHandle) -> list:
    return json.loads(server.cli("agent", "list", "-output", "json").stdout).get("agents", [])


# --- trust_bundle_spiffe_workload_api ----------------------------------------------------------
def test_agent_refuses_to_start_when_the_bootstrap_workload_api_cannot_be_read(spire_server, tmp_path):
    missing = "unix:///tmp/spire-py-missing-dir/api.sock"
    h = custom_agent(tmp_path, spire_server, spire_server.token(),
                     replace_bundle=f'trust_bundle_spiffe_workload_api = "{missing}"')
    assert run_until_exit(h) == 1
    logs = h.proc.logs()
    errors = [line for line in logs.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: unable to fetch trust bundle from SPIFFE Workload API {missing}: "
                      "[Errno 2] No such file or directory"], logs[-3000:]
    assert "Traceback" not in logs
    # It never reached the server: no insecure attestation behind the operator's back.
    assert "Node attestation was successful" not in logs
    assert attested_agents(spire_server) == []
    assert not os.path.exists(h.socket)


def test_agent_bootstraps_from_another_agents_workload_api(spire_server, start_agent, tmp_path):
    token = spire_server.token()
    first = start_agent(spire_server, token)
    spire_server.cli("entry", "create", "-parentID", f"spiffe://{TD}/spire/agent/join_token/{token}",
                     "-spiffeID", f"spiffe://{TD}/bootstrapper", "-selector", f"unix:uid:{os.getuid()}")
    wait_for(lambda: first.cli("api", "fetch", "x509", check=False).returncode == 0, 60, "first agent's SVID")
    second = custom_agent(tmp_path, spire_server, spire_server.token(),
                          replace_bundle=f'trust_bundle_spiffe_workload_api = "unix://{first.socket}"')
    try:
        wait_for(lambda: second.healthy() or not second.proc.alive(), 60, "second agent healthcheck")
        assert second.proc.alive(), second.proc.logs()[-3000:]
        assert "Node attestation was successful" in second.proc.logs()
        assert len(attested_agents(spire_server)) == 2
    finally:
        second.proc.stop()


# --- disable_workload_api ----------------------------------------------------------------------
def test_disabled_workload_api_attests_and_syncs_without_listening(spire_server, tmp_path):
    token = spire_server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    spire_server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/w",
                     "-selector", f"unix:uid:{os.getuid()}")
    h = custom_agent(tmp_path, spire_server, token, extra_agent="disable_workload_api = true\n disable_sds_api = true")
    try:
        wait_for(lambda: "Minted X509-SVID" in h.proc.logs() or not h.proc.alive(), 60, "an SVID signed")
        assert h.proc.alive(), h.proc.logs()[-3000:]
        logs = h.proc.logs()
        assert "Skipping agent APIs because public endpoint is disabled" in logs
        assert "Starting agent APIs" not in logs
        assert [a["id"]["path"] for a in attested_agents(spire_server)] == [f"/spire/agent/join_token/{token}"]
        assert not os.path.exists(h.socket)
    finally:
        h.proc.stop()


def _started_line(logs: str, what: str) -> str:
    """The one log line containing ``what`` (a daemon's start line)."""
    [line] = [ln for ln in logs.splitlines() if what in ln]
    return line


def test_agent_apis_start_is_logged_with_workload_and_sds(spire_server, start_agent):
    agent = start_agent(spire_server, spire_server.token())
    assert 'apis="Workload API,SDS API"' in _started_line(agent.proc.logs(), "Starting agent APIs")


# --- SIGUSR1 -----------------------------------------------------------------------------------
def test_sigusr1_is_logged_and_neither_daemon_dies(spire_server, start_agent):
    agent = start_agent(spire_server, spire_server.token())
    for name, proc, healthy in (("server", spire_server.proc, spire_server.healthy),
                                ("agent", agent.proc, agent.healthy)):
        assert proc.proc is not None
        os.kill(proc.proc.pid, signal.SIGUSR1)
        wait_for(lambda: "Received SIGUSR1; in-memory telemetry is not enabled" in proc.logs() or not proc.alive(),
                 30, f"{name} to log SIGUSR1")
        assert proc.alive(), f"{name} died on SIGUSR1:\n" + proc.logs()[-3000:]
        assert healthy(), name
    # Still stopped cleanly afterwards: the sockets go with them.
    assert agent.proc.stop() == 0 and not os.path.exists(agent.socket)
    assert spire_server.proc.stop() == 0 and not os.path.exists(spire_server.socket)


# --- x509_svid_cache_max_size ------------------------------------------------------------------
def test_x509_svid_cache_keeps_subscribed_svids_and_evicts_idle_ones(spire_server, tmp_path):
    token = spire_server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    for i in range(3):
        spire_server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/w{i}",
                         "-selector", f"unix:uid:{os.getuid()}")
    h = custom_agent(tmp_path, spire_server, token, extra_agent="x509_svid_cache_max_size = 1")
    try:
        wait_for(lambda: h.healthy() or not h.proc.alive(), 60, "agent healthcheck")
        wait_for(lambda: h.proc.logs().count("Minted X509-SVID") >= 1, 30, "the first SVID")
        assert h.proc.logs().count("Minted X509-SVID") == 1  # only one signed ahead: the bound
        # A workload matching all three gets all three (signed on demand: a subscriber is never denied).
        out = h.cli("api", "fetch", "x509", "-timeout", "30s").stdout
        assert "Received 3 svid" in out, out
        # Once it has gone, the next sync drops the two least recently used again.
        wait_for(lambda: h.proc.logs().count("Removing SVID record") >= 2, 30, "idle SVIDs evicted")
        assert "Received 3 svid" in h.cli("api", "fetch", "x509", "-timeout", "30s").stdout
    finally:
        h.proc.stop()


def test_agent_run_prints_no_traceback_for_an_unreadable_bundle_socket(spire_server, tmp_path):
    sock = short_dir(tmp_path, "bundle") / "bundle.sock"
    h = custom_agent(tmp_path, spire_server, spire_server.token(),
                     replace_bundle=f'trust_bundle_url = "http://bundles.local/b.pem"\n'
                                    f'    trust_bundle_unix_socket = "{sock}"')
    assert run_until_exit(h) == 1
    logs = h.proc.logs()
    assert "Error: unable to fetch trust bundle URL http://bundles.local/b.pem" in logs
    assert "Traceback" not in logs and attested_agents(spire_server) == []


# --- event loop (common/eventloop.py) ----------------------------------------------------------
def test_daemons_run_on_uvloop_and_say_so(spire_server, start_agent):
    pytest.importorskip("uvloop")
    agent = start_agent(spire_server, spire_server.token())
    assert "event_loop=uvloop" in _started_line(spire_server.proc.logs(), "Starting Server APIs")
    assert "event_loop=uvloop" in _started_line(agent.proc.logs(), "Starting agent APIs")


def test_daemons_on_asyncio_when_asked_still_serve_svids(make_server, start_agent, monkeypatch, tmp_path):
    monkeypatch.setenv("SPIRE_PY_EVENT_LOOP", "asyncio")
    server = make_server()
    token = server.token()
    server.cli("entry", "create", "-parentID", f"spiffe://{TD}/spire/agent/join_token/{token}",
               "-spiffeID", f"spiffe://{TD}/on-asyncio", "-selector", f"unix:uid:{os.getuid()}")
    agent = start_agent(server, token)
    assert "event_loop=asyncio" in _started_line(server.proc.logs(), "Starting Server APIs")
    assert "event_loop=asyncio" in _started_line(agent.proc.logs(), "Starting agent APIs")
    wait_for(lambda: agent.cli("api", "fetch", "x509", check=False).returncode == 0, 60, "an SVID over asyncio")
    assert f"spiffe://{TD}/on-asyncio" in agent.cli("api", "fetch", "x509").stdout


def test_an_unknown_event_loop_is_refused_by_name(spire_server, start_agent):
    agent = start_agent(spire_server, spire_server.token())
    env = {**os.environ, "SPIRE_PY_EVENT_LOOP": "trio"}
    for cli, conf in ((SERVER, spire_server.conf), (AGENT, agent.conf)):
        proc = subprocess.run([cli, "run", "-config", str(conf)], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, (cli, proc.stdout, proc.stderr)
        assert "Error: SPIRE_PY_EVENT_LOOP='trio': must be one of auto, uvloop, asyncio" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
