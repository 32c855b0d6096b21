"""Forced rotation end to end with the real CLI, server, agent and a py-spiffe workload:
``localauthority x509 prepare → activate → taint → revoke`` (and the same for the JWT key).

After taint the agent re-signs the SVIDs the tainted CA signed (and its own); after revoke the
CA is gone from the workload's bundle. Meanwhile a watcher keeps fetching as the workload and
checks that every SVID it is handed verifies against the bundle handed with it.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable

import jwt as pyjwt
from cryptography import x509

from spire_py.common.x509util import X509SVIDError, authority_id, verify_chain
from tests.integration.helpers.harness import ME, TD, AgentHandle, ServerHandle, fetch, svid_for, wait_for

WORKLOAD_ID = f"spiffe://{TD}/rotated"


class Watcher(threading.Thread):
    """Fetches as the workload until stopped; records every SVID that fails its own bundle."""

    def __init__(self, sock: str) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.stop = threading.Event()
        self.seen = 0
        self.failures: list[str] = []
        self.last: dict[str, Any] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            doc = fetch(self.sock)
            if doc and doc["spiffe_id"] == WORKLOAD_ID:
                chain = x509.load_pem_x509_certificates(doc["chain"].encode())
                bundle = x509.load_pem_x509_certificates(doc["bundle"].encode())
                try:
                    verify_chain(chain[0], chain[1:], bundle, None)
                except X509SVIDError as exc:
                    self.failures.append(str(exc))
                self.seen += 1
                self.last = doc
            self.stop.wait(0.3)


def _authority(out: str) -> str:
    m = re.search(r"Authority ID: (\S+)", out)
    assert m, out
    return m.group(1)


def _issuer_id(doc: dict[str, Any]) -> str:
    """The authority ID of the CA of the workload's bundle that issued its leaf."""
    leaf = x509.load_pem_x509_certificates(doc["chain"].encode())[0]
    roots = x509.load_pem_x509_certificates(doc["bundle"].encode())
    (issuer,) = [r for r in roots if r.subject == leaf.issuer]
    return authority_id(issuer)


def _bundle_ids(doc: dict[str, Any]) -> set[str]:
    return {authority_id(c) for c in x509.load_pem_x509_certificates(doc["bundle"].encode())}


def test_prepare_activate_taint_revoke_keeps_the_workload_served(
        make_server: Callable[..., ServerHandle], start_agent: Callable[..., AgentHandle]) -> None:
    server = make_server()
    token = server.token()
    agent = start_agent(server, token=token)
    server.cli("entry", "create", "-parentID", f"spiffe://{TD}/spire/agent/join_token/{token}",
               "-spiffeID", WORKLOAD_ID, "-selector", f"unix:uid:{ME}")
    first_doc = svid_for(agent.socket, WORKLOAD_ID)
    first = _authority(server.cli("localauthority", "x509", "show").stdout)
    assert _issuer_id(first_doc) == first

    watcher = Watcher(agent.socket)
    watcher.start()
    try:
        second = _authority(server.cli("localauthority", "x509", "prepare").stdout)
        # Prepared CAs are published at once: the workload's bundle trusts both before anything is signed.
        wait_for(lambda: watcher.last and _bundle_ids(watcher.last) == {first, second}, 30,
                 "the prepared CA in the workload's bundle")
        assert "Activated X.509 authority:" in server.cli("localauthority", "x509", "activate",
                                                          "-authorityID", second).stdout
        assert "Tainted X.509 authority:" in server.cli("localauthority", "x509", "taint",
                                                        "-authorityID", first).stdout
        # The agent re-signs what the tainted CA signed: the workload's SVID, and its own.
        wait_for(lambda: watcher.last and _issuer_id(watcher.last) == second, 30,
                 "an SVID re-signed by the new CA")
        wait_for(lambda: "signed by a tainted authority" in agent.proc.logs(), 30, "the agent SVID renewal")

        assert "Revoked X.509 authority:" in server.cli("localauthority", "x509", "revoke",
                                                        "-authorityID", first).stdout
        wait_for(lambda: watcher.last and _bundle_ids(watcher.last) == {second}, 30,
                 "the revoked CA gone from the workload's bundle")
        assert first not in {authority_id(c) for c in x509.load_pem_x509_certificates(
            server.cli("bundle", "show").stdout.encode())}

        # The JWT key: after taint, the workload's JWT-SVID is signed by the new key.
        old_kid = _authority(server.cli("localauthority", "jwt", "show").stdout)
        new_kid = _authority(server.cli("localauthority", "jwt", "prepare").stdout)
        server.cli("localauthority", "jwt", "activate", "-authorityID", new_kid)
        server.cli("localauthority", "jwt", "taint", "-authorityID", old_kid)
        wait_for(lambda: watcher.last and pyjwt.get_unverified_header(watcher.last["jwt"])["kid"] == new_kid, 30,
                 "a JWT-SVID signed by the new key")
        server.cli("localauthority", "jwt", "revoke", "-authorityID", old_kid)
        assert old_kid not in server.cli("bundle", "show", "-format", "spiffe").stdout
    finally:
        watcher.stop.set()
        watcher.join(60)
    assert watcher.seen >= 3 and watcher.failures == []
    assert agent.proc.alive() and server.proc.alive()
    # The agent still talks to the server: its SVID and the server's are from the new CA.
    assert agent.cli("healthcheck").returncode == 0
