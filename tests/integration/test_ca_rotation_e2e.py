"""CA rotation end to end: a server with a one-minute ca_ttl rotates its X.509 CA twice while
an agent and a py-spiffe workload stream keep running. The workload must hold a valid SVID
chaining to its latest bundle at every moment, new roots must reach it before anything is
signed with them, SVIDs must come from each new CA after activation, and expired roots must
leave the bundle, all without restarting the agent or the stream."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient

from spire_py.agent.storage import AgentStorage
from spire_py.common.x509util import X509SVIDError, verify_chain

from tests.integration.helpers.harness import TD, wait_for

# Rotation every ca_ttl/2 (prepare at 1/2, activate at 5/6 of the CA's life): with 60 s, the
# second CA signs from ~50 s, the third from ~80 s, and the first root (expired at 60 s) leaves
# the bundle one ca_ttl after it expired (~120 s). SVID TTLs stay at ca_ttl/6, as SPIRE advises.
CA_TTL = 60
SVID_TTL = 10
SAMPLE = 0.5
DEADLINE = 200  # seconds of rotation watching; the whole test stays under ~4 minutes


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Update:
    at: float
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def root_ders(self) -> set[bytes]:
        return {der(r) for r in self.roots}

    def issuer_root(self) -> bytes:
        """The bundle root the SVID chains to (self-signed CAs: the SVID's issuer)."""
        path = verify_chain(self.leaf, list(self.chain[1:]), list(self.roots), self.at)
        return der(path[-1])


class Recorder:
    """Every X509Context the Workload API stream delivers, stamped with its arrival time."""

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self.errors: list[Exception] = []
        self.lock = threading.Lock()

    def on_success(self, ctx) -> None:  # type: ignore[no-untyped-def]
        bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain(TD))
        update = Update(time.time(), tuple(ctx.default_svid.cert_chain), tuple(bundle.x509_authorities))
        with self.lock:
            self.updates.append(update)

    def on_error(self, exc: Exception) -> None:
        with self.lock:
            self.errors.append(exc)

    def latest(self) -> Update:
        with self.lock:
            return self.updates[-1]


@pytest.mark.timeout(DEADLINE + 90)
def test_workload_keeps_a_valid_svid_through_two_ca_rotations(make_server, start_agent):
    server = make_server(extra_server=f'ca_ttl = "{CA_TTL}s"\n    default_x509_svid_ttl = "{SVID_TTL}s"')
    token = server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/rotating",
               "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", str(SVID_TTL))
    agent = start_agent(server, token)
    agent_pid = agent.proc.proc.pid
    first_root = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    assert len(first_root) == 1
    root_a = der(first_root[0])
    root_a_expiry = first_root[0].not_valid_after_utc.timestamp()

    rec = Recorder()
    client = WorkloadApiClient(f"unix://{agent.socket}", default_timeout=20)
    # No reconnects: the one stream must carry every rotation.
    handle = client.stream_x509_contexts(rec.on_success, rec.on_error, retry_connect=False)
    try:
        wait_for(lambda: bool(rec.updates), 30, "the first X509 context")
        roots_seen: set[bytes] = set()
        issuers_seen: list[bytes] = []
        failures: list[str] = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            now = time.time()
            u = rec.latest()
            roots_seen |= u.root_ders()
            if u.leaf.not_valid_after_utc.timestamp() <= now:
                failures.append(f"{now:.1f}: latest SVID expired at {u.leaf.not_valid_after_utc}")
            try:
                verify_chain(u.leaf, list(u.chain[1:]), list(u.roots), now)
            except X509SVIDError as exc:
                failures.append(f"{now:.1f}: latest SVID does not chain to the latest bundle: {exc}")
            issuer = u.issuer_root() if not failures else b""
            if issuer and (not issuers_seen or issuers_seen[-1] != issuer):
                issuers_seen.append(issuer)
            assert not failures, "\n".join(failures[:10])
            assert not rec.errors, f"Workload API stream failed: {rec.errors!r}"
            assert agent.proc.alive() and agent.proc.proc.pid == agent_pid, agent.proc.logs()[-3000:]
            if len(roots_seen) >= 3 and len(issuers_seen) >= 3 and root_a not in u.root_ders():
                break
            time.sleep(SAMPLE)
        else:
            raise AssertionError(
                f"after {DEADLINE}s: {len(roots_seen)} roots seen, {len(issuers_seen)} signing CAs, "
                f"first root still in bundle: {root_a in rec.latest().root_ders()}\n"
                + "server log:\n" + server.proc.logs()[-5000:])
    finally:
        handle.cancel()
        client.close()

    updates = list(rec.updates)
    # Two rotations: three CAs signed SVIDs in turn, the first one first.
    assert len(issuers_seen) >= 3 and issuers_seen[0] == root_a
    assert len(set(issuers_seen)) == len(issuers_seen), "a retired CA signed again"
    # Every delivered SVID chained to the bundle delivered with it, so each new root reached the
    # workload before (or with) the first SVID it signed.
    for u in updates:
        u.issuer_root()
    for ca in issuers_seen[1:]:
        first_bundle = min(u.at for u in updates if ca in u.root_ders())
        first_svid = min(u.at for u in updates if u.issuer_root() == ca)
        assert first_bundle < first_svid, "a CA signed SVIDs before the workload trusted it"
    # The first root stayed trusted until it expired, and left the bundle afterwards.
    dropped_at = min(u.at for u in updates if root_a not in u.root_ders())
    assert dropped_at >= root_a_expiry
    assert all(root_a in u.root_ders() for u in updates if u.at < root_a_expiry)
    shown = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    assert root_a not in {der(c) for c in shown}

    # The agent kept going on its own SVID, renewed under the new CAs.
    logs = agent.proc.logs()
    assert "Synchronization failed" not in logs, logs[-5000:]
    state = AgentStorage(str(agent.dir / "data")).load_state()
    assert state is not None
    verify_chain(state.svid[0], state.svid[1:], shown)
    server_logs = server.proc.logs()
    assert server_logs.count("X509 CA activated") >= 3
    assert "Expired authorities pruned from the bundle" in server_logs


def test_maintenance_tick_and_prune_margin_follow_short_ca_ttls():
    from spire_py.server.server import bundle_prune_safety, maintenance_tick

    # Production ca_ttls keep SPIRE's cadence; short ones still rotate on time.
    assert maintenance_tick(24 * 3600) == 5.0
    assert maintenance_tick(CA_TTL) == 3.0
    assert maintenance_tick(1) == 0.5
    assert bundle_prune_safety(7 * 24 * 3600) == 24 * 3600
    assert bundle_prune_safety(CA_TTL) == CA_TTL
