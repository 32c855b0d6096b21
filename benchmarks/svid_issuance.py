"""X.509-SVID issuance: BatchNewX509SVID throughput on a real server, batches of 1 and 50.

The caller is an attested join-token agent over mTLS (as spire-agent is) and the
entries are parented to it; keys and CSRs are prepared before the clock starts.
Baseline: building and signing the same certificate (same template, same keys)
with ``cryptography`` directly, in one process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spire_py.agent.attestor import make_csr
from spire_py.common.keys import generate_key
from spire_py.proto.spire.api.server.svid.v1 import svid_pb2

from .harness import sampling, Row, tree_cpu_seconds, ServerProcess, attest_agent, bundle_roots, create_entries, entry_pb

TARGET = {1: 0.1, 50: 0.5}  # of the raw rate, per batch size (issue #23)
REPEATS = 3  # both the server and the baseline: best of three
WORKLOAD = "spiffe://example.org/bench/issuance/{}"


def raw_sign_rate(public_keys: list[Any], ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> float:
    """Certificates per second: build and sign an X509-SVID like the server's, nothing else."""
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")])
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    def once() -> float:
        start = time.perf_counter()
        for i, pub in enumerate(public_keys):
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            (x509.CertificateBuilder()
             .serial_number(secrets.randbelow((1 << 128) - 1) + 1)
             .subject_name(subject)
             .issuer_name(ca.subject)
             .public_key(pub)
             .not_valid_before(now - dt.timedelta(seconds=10))
             .not_valid_after(now + dt.timedelta(hours=1))
             .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
             .add_extension(aki, critical=False)
             .add_extension(x509.SubjectAlternativeName(
                 [x509.UniformResourceIdentifier(WORKLOAD.format(i % 50))]), critical=False)
             .sign(ca_key, hashes.SHA256()))
        return time.perf_counter() - start

    once()  # warm-up
    return max(len(public_keys) / once() for _ in range(REPEATS))


def _self_signed_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, hashlib.sha1(b"bench").hexdigest())])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().serial_number(1).subject_name(name).issuer_name(name)
            .public_key(key.public_key()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


async def run(sizes: dict[str, int], profile: Any = None) -> list[Row]:
    total = sizes["issuance_svids"]
    rows: list[Row] = []
    with ServerProcess("issuance") as server:
        admin = server.admin()
        agent = await attest_agent(server, admin)
        try:
            await bundle_roots(admin)
            entries = [entry_pb(WORKLOAD.format(i), agent.agent_id, [("unix", f"uid:{1000 + i}")]) for i in range(50)]
            ids = await create_entries(admin, entries, 50)
            keys = [generate_key("ec-p256") for _ in range(total)]
            csrs = [make_csr(k) for k in keys]
            ca_key, ca = _self_signed_ca()
            raw = raw_sign_rate([k.public_key() for k in keys], ca_key, ca)
            for batch in (1, 50):
                n = total if batch == 50 else max(batch, total // 4)
                reqs = [svid_pb2.BatchNewX509SVIDRequest(params=[
                    svid_pb2.NewX509SVIDParams(entry_id=ids[(i + j) % len(ids)], csr=csrs[(i + j) % len(csrs)])
                    for j in range(batch)]) for i in range(0, n, batch)]
                # Warm-up: connection, caches, the server's thread pool.
                await agent.client.svid.BatchNewX509SVID(reqs[0])
                runs = []
                with sampling(profile, f"issuance-batch{batch}", server.pid):
                    for _ in range(REPEATS):
                        start = time.perf_counter()
                        cpu0, own0 = tree_cpu_seconds(server.pid), time.process_time()
                        for req in reqs:
                            resp = await agent.client.svid.BatchNewX509SVID(req)
                            if any(r.status.code != 0 for r in resp.results):
                                bad = next(r for r in resp.results if r.status.code != 0)
                                raise RuntimeError(f"BatchNewX509SVID failed: {bad.status.message}")
                        runs.append((time.perf_counter() - start, tree_cpu_seconds(server.pid) - cpu0,
                                     time.process_time() - own0))
                elapsed, server_cpu, client_cpu = min(runs)  # best of REPEATS, as the baseline
                svids = len(reqs) * batch
                rate = svids / elapsed
                rows.append(Row("X.509-SVID issuance", f"BatchNewX509SVID batch={batch}", rate, "SVID/s",
                                raw, "cryptography build+sign, one process", True, f">= {TARGET[batch]}x",
                                rate / raw >= TARGET[batch], {
                                    "svids": svids, "seconds": round(elapsed, 3),
                                    "server_cpu_us_per_svid": round(server_cpu / svids * 1e6),
                                    "client_cpu_us_per_svid": round(client_cpu / svids * 1e6),
                                    "raw_us_per_svid": round(1e6 / raw)}))
        finally:
            agent.close()
            admin.close()
    return rows

