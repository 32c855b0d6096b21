"""Two servers on one PostgreSQL datastore: either one serves the whole fleet."""

from __future__ import annotations

import datetime as dt
import time

from conftest import SERVER_SOCKET, der_certs, fetch_x509


def test_servers_use_the_shared_postgres_datastore(fleet, server):
    conf = fleet.host(server).file("/opt/spire/conf/server/server.conf").content_string
    assert 'database_type = "postgres"' in conf and "host=ha-db" in conf


def test_each_server_sees_every_agent(fleet, server):
    out = fleet.host(server).check_output(f"spire-server agent count -socketPath {SERVER_SOCKET}")
    assert f"{len(fleet.agents)} attested agents" in out


def test_bundle_holds_both_servers_cas(fleet, server):
    out = fleet.host(server).check_output(f"spire-server bundle show -socketPath {SERVER_SOCKET} -format pem")
    assert out.count("BEGIN CERTIFICATE") >= 2


def _not_after(h, spiffe_id):
    for svid in fetch_x509(h)["svids"]:
        if svid["spiffe_id"] == spiffe_id:
            return der_certs(svid["x509_svid"])[0].not_valid_after_utc
    raise AssertionError(f"no {spiffe_id}")


def _bundle_roots(h):
    out = h.check_output(f"spire-server bundle show -socketPath {SERVER_SOCKET} -format pem")
    return out.count("BEGIN CERTIFICATE")


def test_agents_keep_rotating_through_the_other_server(fleet):
    stopped = fleet.host(fleet.servers[0])
    roots_before = _bundle_roots(stopped)
    stopped.check_output("systemctl stop spire-server.service")
    try:
        assert stopped.service("spire-server.service").is_running is False
        before = {a: _not_after(fleet.host(a), fleet.expected_svids(a)[0]) for a in fleet.agents}
        deadline = time.monotonic() + 90
        rotated: dict[str, dt.datetime] = {}
        while len(rotated) < len(fleet.agents) and time.monotonic() < deadline:
            for a in fleet.agents:
                now_after = _not_after(fleet.host(a), fleet.expected_svids(a)[0])
                if now_after > before[a]:
                    rotated[a] = now_after
            time.sleep(3)
        assert sorted(rotated) == sorted(fleet.agents), f"not rotated with {fleet.servers[0]} down: {before}"
        for a in fleet.agents:
            assert fleet.host(a).run("spire-agent healthcheck -socketPath /run/spire/agent/public/api.sock").rc == 0
    finally:
        stopped.check_output("systemctl start spire-server.service")
    assert stopped.service("spire-server.service").is_running
    # Its journal is its own (keyed by its CA in the shared datastore): it resumes its CA, no new root.
    assert stopped.run(f"spire-server healthcheck -socketPath {SERVER_SOCKET}").rc == 0
    assert _bundle_roots(stopped) == roots_before
