"""join_token: one single-use token per agent, made on the server; entries from the inventory.

This file also gives the scenario its own tests directory: Molecule's testinfra verifier skips the
whole verify step ("no tests found") when a scenario has no tests/ of its own, even with the
shared checks passed through additional_files_or_dirs, and git keeps no empty directory.
"""

from __future__ import annotations

import json
import re
import shlex

from conftest import SERVER_SOCKET

TOKEN_ID = re.compile(r"^/spire/agent/join_token/[0-9a-f-]{36}$")


def server_json(fleet, *args):
    server = fleet.host(fleet.servers[0])
    cmd = " ".join(shlex.quote(a) for a in ["spire-server", *args, "-socketPath", SERVER_SOCKET, "-output", "json"])
    return json.loads(server.check_output(cmd))


def agents_on_server(fleet):
    return server_json(fleet, "agent", "list").get("agents", [])


def sid(d):
    return f'spiffe://{d["trust_domain"]}{d["path"]}'


def test_each_agent_attested_with_its_own_join_token(fleet):
    agents = agents_on_server(fleet)
    assert len(agents) == len(fleet.agents)
    assert all(a["attestation_type"] == "join_token" for a in agents)
    paths = [a["id"]["path"] for a in agents]
    assert all(TOKEN_ID.match(p) for p in paths), paths
    assert len(set(paths)) == len(paths)  # one token per agent


def test_node_alias_of_each_agent_points_at_its_token_id(fleet):
    agent_ids = {sid(a["id"]) for a in agents_on_server(fleet)}
    parents = set()
    for name in fleet.agents:
        entries = server_json(fleet, "entry", "show", "-spiffeID", f"spiffe://example.org/host/{name}")["entries"]
        assert len(entries) == 1, (name, entries)
        parents.add(sid(entries[0]["parent_id"]))
    assert parents == agent_ids


def test_inventory_entries_are_registered_as_written(fleet):
    for want in fleet.var(fleet.servers[0], "spire_entries"):
        entries = server_json(fleet, "entry", "show", "-spiffeID", want["spiffe_id"])["entries"]
        assert len(entries) == 1, (want, entries)
        got = entries[0]
        assert sid(got["parent_id"]) == want["parent_id"]
        assert sorted(f'{s["type"]}:{s["value"]}' for s in got["selectors"]) == sorted(want["selectors"])


def test_used_token_is_gone_from_the_agent_host(fleet, agent):
    assert not fleet.host(agent).file("/opt/spire/conf/agent/join_token.env").exists


def test_a_used_token_is_refused(fleet, agent):
    """Replay the agent's own (used) token from its host: the server refuses it."""
    h = fleet.host(agent)
    # This host's agent ID is the parent of its node alias entry; the token is its last segment.
    alias = server_json(fleet, "entry", "show", "-spiffeID", f"spiffe://example.org/host/{agent}")["entries"]
    token = alias[0]["parent_id"]["path"].rsplit("/", 1)[1]
    conf = h.file("/opt/spire/conf/agent/agent.conf").content_string
    address = re.search(r'server_address\s*=\s*"([^"]+)"', conf).group(1)
    port = re.search(r'server_port\s*=\s*"?(\d+)', conf).group(1)
    work = "/tmp/fleet-token-replay"
    replay_conf = f"""agent {{
  data_dir = "{work}/data"
  log_level = "INFO"
  server_address = "{address}"
  server_port = "{port}"
  socket_path = "{work}/api.sock"
  trust_bundle_path = "/opt/spire/conf/agent/bundle.pem"
  trust_domain = "example.org"
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""
    h.check_output(f"rm -rf {work} && mkdir -m 0700 {work} && printf %s {shlex.quote(replay_conf)} > {work}/agent.conf")
    try:
        r = h.run(f"timeout 60 spire-agent run -config {work}/agent.conf -joinToken {shlex.quote(token)}")
    finally:
        h.run(f"rm -rf {work}")
    out = r.stdout + r.stderr
    assert r.rc not in (0, 124), f"replayed token was not refused (rc={r.rc}): {out[-2000:]}"
    assert "join token does not exist or has already been used" in out, out[-2000:]


def test_upstream_root_belongs_to_the_service_user_and_roots_the_bundle(fleet):
    server = fleet.host(fleet.servers[0])
    upstream = server.file("/opt/spire/data/server/upstream")
    assert upstream.is_directory and upstream.user == "spire" and upstream.mode == 0o700
    key = server.file("/opt/spire/data/server/upstream/root.key")
    assert key.user == "spire" and key.mode == 0o600
    root_pem = server.file("/opt/spire/data/server/upstream/root.crt").content_string.strip()
    bundle = server.check_output(f"spire-server bundle show -format pem -socketPath {SERVER_SOCKET}")
    assert root_pem in bundle
