"""What the day-2 playbooks left on the hosts (molecule/day2/day2.yml ran them in order)."""

from __future__ import annotations

import json
import os

import pytest
from cryptography import x509

from conftest import SERVER_SOCKET, fetch_x509

SERVER, KEPT, GONE = "d2-server", "d2-agent1", "d2-agent2"


@pytest.fixture(scope="module")
def record():
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "day2-record.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def server_json(fleet, *args):
    return json.loads(fleet.host(SERVER).check_output(
        "spire-server " + " ".join(args) + f" -socketPath {SERVER_SOCKET} -output json"))


def pem_certs(text):
    return x509.load_pem_x509_certificates(text.encode())


def test_every_playbook_ran_without_failures(record):
    for name, recap in record["recaps"].items():
        assert recap, f"{name}: no PLAY RECAP"
        assert all(int(row[4]) == 0 and int(row[3]) == 0 for row in recap), (name, recap)


def test_upgrade_backed_up_the_server_first(fleet):
    h = fleet.host(SERVER)
    assert h.file("/opt/spire/backups").mode == 0o700
    latest = h.file("/opt/spire/backups/latest")
    assert latest.is_symlink
    meta = json.loads(h.file("/opt/spire/backups/latest/backup.json").content_string)
    assert meta["database_type"] == "sqlite3" and meta["schema_revision"]
    # Taken before the upgrade: it names release A.
    assert not meta["release"].startswith(fleet.var(SERVER, "fleet_release_b_version") + "-"), meta
    for name in ("datastore.sqlite3", "data.tar.gz", "conf.tar.gz"):
        assert h.file(f"/opt/spire/backups/latest/{name}").size > 0, name
    listing = h.check_output("tar -tzf /opt/spire/backups/latest/data.tar.gz")
    assert "./keys.json" in listing and "./upstream/root.key" in listing


def test_rollback_went_back_to_release_a_and_kept_b(fleet):
    version_b = fleet.var(SERVER, "fleet_release_b_version")
    for host in (SERVER, KEPT):
        h = fleet.host(host)
        current = h.file("/opt/spire/current").linked_to.rsplit("/", 1)[-1]
        assert not current.startswith(version_b + "-"), (host, current)
        releases = h.check_output("ls /opt/spire/releases").split()
        assert any(r.startswith(version_b + "-") for r in releases), releases


def test_restore_took_away_what_came_after_the_backup(fleet):
    entries = server_json(fleet, "entry", "show").get("entries") or []
    paths = {e["spiffe_id"]["path"] for e in entries}
    assert "/after-backup" not in paths
    assert "/workload/d2-agent1" in paths


def test_x509pop_rotation_trusts_only_the_new_ca_and_the_agent_moved(fleet):
    srv = fleet.host(SERVER)
    assert srv.file("/opt/spire/data/x509pop/ca.key.old").exists
    assert not srv.file("/opt/spire/data/x509pop/next").exists
    trusted = pem_certs(srv.file("/opt/spire/conf/server/x509pop-ca.crt").content_string)
    [new_ca] = pem_certs(srv.file("/opt/spire/data/x509pop/ca.crt").content_string)
    [old_ca] = pem_certs(srv.file("/opt/spire/data/x509pop/ca.crt.old").content_string)
    assert trusted == [new_ca] and new_ca != old_ca
    [agent_cert] = pem_certs(fleet.host(KEPT).file("/opt/spire/conf/agent/x509pop/agent.crt").content_string)
    agent_cert.verify_directly_issued_by(new_ca)


def test_sshpop_rotation_trusts_only_the_new_ca(fleet):
    srv = fleet.host(SERVER)
    trusted = srv.file("/opt/spire/conf/server/sshpop-ca.pub").content_string.strip().splitlines()
    new_ca = srv.file("/opt/spire/data/sshpop/ca_key.pub").content_string.strip()
    old_ca = srv.file("/opt/spire/data/sshpop/ca_key.pub.old").content_string.strip()
    assert [line.split()[:2] for line in trusted] == [new_ca.split()[:2]] and new_ca != old_ca


def test_reattested_agent_has_a_new_identity_and_serves_workloads(fleet, record):
    agents = server_json(fleet, "agent", "list").get("agents") or []
    x509pop = [a for a in agents if a["attestation_type"] == "x509pop"]
    assert len(x509pop) == 1, agents
    new_id = "spiffe://example.org" + x509pop[0]["id"]["path"]
    assert new_id != record["agent_ids_before"][KEPT]
    resp = fetch_x509(fleet.host(KEPT))
    assert [s["spiffe_id"] for s in resp["svids"]] == ["spiffe://example.org/workload/d2-agent1"]


def test_root_rotation_finished_with_the_new_root_active(fleet, record):
    srv = fleet.host(SERVER)
    upstream = "/opt/spire/data/server/upstream"
    for gone in ("next", "previous", "bundle.pem"):
        assert not srv.file(f"{upstream}/{gone}").exists, gone
    assert "bundle_file_path" not in srv.file("/opt/spire/conf/server/server.conf").content_string
    [root] = pem_certs(srv.file(f"{upstream}/root.crt").content_string)
    # The new root is in the trust bundle (the old one stays until it expires, as in SPIRE)...
    bundle = pem_certs(srv.check_output(f"spire-server bundle show -format pem -socketPath {SERVER_SOCKET}"))
    assert root in bundle and len(bundle) >= 2
    # ...and signs the active X509 authority (forced rotation during activate).
    state = server_json(fleet, "localauthority", "x509", "show")
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    active = state["active"]["upstream_authority_subject_key_id"].replace(":", "").lower()
    assert active == ski, state
    assert srv.run(f"spire-server healthcheck -socketPath {SERVER_SOCKET}").rc == 0
    # The backup taken by upgrade.yml still holds the old root: the root really changed.
    listing = srv.check_output("tar -xzOf /opt/spire/backups/latest/data.tar.gz ./upstream/root.crt")
    assert pem_certs(listing) != [root]


def test_decommissioned_agent_is_gone_everywhere(fleet):
    agents = server_json(fleet, "agent", "list").get("agents") or []
    assert not [a for a in agents if a["attestation_type"] == "sshpop"], agents
    entries = server_json(fleet, "entry", "show").get("entries") or []
    assert not [e for e in entries if e["parent_id"]["path"] == f"/spire/agent/sshpop/{GONE}"], entries
    h = fleet.host(GONE)
    assert not h.file("/etc/systemd/system/spire-agent.service").exists
    assert not h.file("/opt/spire/current").exists and not h.file("/opt/spire/conf").exists
    assert h.run("systemctl is-active spire-agent").stdout.strip() != "active"
    # sshd's own host key was never touched.
    assert h.file("/etc/ssh/ssh_host_ed25519_key").user == "root"


def test_server_env_file_is_absent_without_secrets(fleet):
    assert not fleet.host(SERVER).file("/opt/spire/conf/server/server.env").exists
