"""Checks every scenario passes: units, files, sockets, health, and workloads getting SVIDs.

With Type=notify a unit is "active" only after the daemon sent READY=1, so an active
spire-server/spire-agent unit means the APIs listened when systemd marked it started.
"""

from __future__ import annotations

import time

import pytest

from conftest import (AGENT_SOCKET, SERVER_SOCKET, WORKLOAD_UID, check_x509_svid, fetch_jwt,
                      fetch_x509, jwt_claims)

UNIT_PROPS = "Type,ActiveState,SubState,UnitFileState,User,Group,MainPID,NRestarts,Result"


def unit_show(h, unit):
    out = h.check_output(f"systemctl show -p {UNIT_PROPS} {unit}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def assert_daemon(h, unit):
    props = unit_show(h, unit)
    assert props["Type"] == "notify", props
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert props["UnitFileState"] == "enabled", props
    assert (props["User"], props["Group"]) == ("spire", "spire"), props
    pid = int(props["MainPID"])
    assert pid > 0
    assert h.check_output(f"ps -o user= -p {pid}").strip() == "spire"
    assert h.service(unit).is_running and h.service(unit).is_enabled


def assert_path(h, path, owner, group, mode, kind="file"):
    f = h.file(path)
    assert f.exists, f"{path} is missing"
    assert getattr(f, f"is_{kind}"), f"{path} is not a {kind}"
    assert (f.user, f.group, oct(f.mode)) == (owner, group, oct(mode)), path


# ------------------------------------------------------------------------------------ servers
def test_server_unit_reached_ready(fleet, server):
    assert_daemon(fleet.host(server), "spire-server.service")


def test_server_healthcheck(fleet, server):
    r = fleet.host(server).run(f"spire-server healthcheck -socketPath {SERVER_SOCKET}")
    assert r.rc == 0, r.stderr
    assert "Server is healthy." in r.stdout


def test_server_files_and_socket(fleet, server):
    h = fleet.host(server)
    assert_path(h, "/opt/spire/conf/server", "root", "spire", 0o750, "directory")
    assert_path(h, "/opt/spire/conf/server/server.conf", "root", "spire", 0o640)
    assert_path(h, "/opt/spire/data/server", "spire", "spire", 0o700, "directory")
    # The admin socket: root and the spire group only.
    sock_dir = h.file(SERVER_SOCKET.rsplit("/", 1)[0])
    assert sock_dir.is_directory and sock_dir.group == "spire" and sock_dir.mode & 0o007 == 0
    sock = h.file(SERVER_SOCKET)
    assert sock.is_socket and sock.user == "spire" and sock.mode & 0o007 == 0, oct(sock.mode)
    # The agent API listens on every address.
    assert h.socket("tcp://0.0.0.0:8081").is_listening


def test_server_config_is_valid(fleet, server):
    r = fleet.host(server).run("spire-server validate -config /opt/spire/conf/server/server.conf")
    assert r.rc == 0, r.stderr


def test_every_agent_is_attested(fleet, server):
    """Each agent host has one attested agent on the servers, with a current SVID."""
    out = fleet.host(server).check_output(f"spire-server agent count -socketPath {SERVER_SOCKET}")
    assert f"{len(fleet.agents)} attested agent" in out, out


# ------------------------------------------------------------------------------------ agents
def test_agent_unit_reached_ready(fleet, agent):
    assert_daemon(fleet.host(agent), "spire-agent.service")


def test_agent_healthcheck(fleet, agent):
    r = fleet.host(agent).run(f"spire-agent healthcheck -socketPath {AGENT_SOCKET}")
    assert r.rc == 0, r.stderr
    assert "Agent is healthy." in r.stdout


def test_agent_files_and_socket(fleet, agent):
    h = fleet.host(agent)
    assert_path(h, "/opt/spire/conf/agent", "root", "spire", 0o750, "directory")
    assert_path(h, "/opt/spire/conf/agent/agent.conf", "root", "spire", 0o640)
    assert_path(h, "/opt/spire/conf/agent/bundle.pem", "root", "spire", 0o644)
    assert_path(h, "/opt/spire/data/agent", "spire", "spire", 0o700, "directory")
    # SPIRE's convention: the Workload API is open to every local user (0777 in a 0755 directory).
    assert_path(h, AGENT_SOCKET.rsplit("/", 1)[0], "spire", "spire", 0o755, "directory")
    assert_path(h, AGENT_SOCKET, "spire", "spire", 0o777, "socket")
    # The single-use join token never outlives attestation.
    assert not h.file("/opt/spire/conf/agent/join_token.env").exists


def test_agent_config_is_valid(fleet, agent):
    h = fleet.host(agent)
    r = h.run("spire-agent validate -expandEnv -config /opt/spire/conf/agent/agent.conf")
    assert r.rc == 0, r.stderr


def test_workload_gets_its_x509_svids(fleet, agent):
    expected = fleet.expected_svids(agent)
    assert expected, f"fleet_expected_svids names nothing for {agent}"
    deadline = time.monotonic() + 60
    while True:
        resp = fetch_x509(fleet.host(agent))
        got = sorted(s["spiffe_id"] for s in resp["svids"])
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert got == expected
    for svid in resp["svids"]:
        check_x509_svid(svid)


def test_workload_gets_a_jwt_svid(fleet, agent):
    h = fleet.host(agent)
    svids = fetch_jwt(h, "x")["svids"]
    assert svids, "no JWT-SVID"
    for svid in svids:
        claims = jwt_claims(svid["svid"])
        assert claims["sub"] == svid["spiffe_id"]
        assert claims["sub"] in fleet.expected_svids(agent)
        assert claims["aud"] in ("x", ["x"])
        assert claims["exp"] > time.time()
        # The agent validates it against the trust domain's JWT keys.
        r = h.run(f"runuser -u workload -- spire-agent api validate jwt -socketPath {AGENT_SOCKET} "
                  f"-audience x -svid {svid['svid']}")
        assert r.rc == 0 and "SVID is valid." in r.stdout, r.stderr


@pytest.mark.parametrize("uid", [0, 65534])
def test_unregistered_caller_gets_nothing(fleet, agent, uid):
    """Only uid 2001 is registered: root and nobody are refused."""
    assert uid != WORKLOAD_UID
    h = fleet.host(agent)
    user = h.check_output(f"getent passwd {uid} | cut -d: -f1")
    r = h.run(f"runuser -u {user} -- spire-agent api fetch x509 -socketPath {AGENT_SOCKET}")
    assert r.rc != 0
    assert "PermissionDenied" in r.stderr and "no identity issued" in r.stderr, r.stderr
