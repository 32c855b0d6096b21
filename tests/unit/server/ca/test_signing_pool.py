"""SigningPool: large BatchNewX509SVID batches parsed, verified and signed in worker processes,
with the active CA only (a new CA replaces the pool), the same per-item answers as in-process
signing, and in-process signing when the CA key cannot be exported."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.agent.attestor import make_csr
from spire_py.common.tls import spiffe_id_of
from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from spire_py.proto.spire.api.types import selector_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2
from spire_py.server.api import svid as svid_api
from spire_py.server.ca import signing_pool
from spire_py.server.ca.signing_pool import SigningPool
from tests.unit.helpers.inprocess_server import TD, Handle, running_server, spiffe_id


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _items(n: int) -> list[Any]:
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
    return [(csr, f"spiffe://{TD}/w/{i}", 600.0, [f"w{i}.example"]) for i in range(n)]


async def test_a_new_ca_replaces_the_pool_and_signs_from_then_on() -> None:
    pool = SigningPool(workers=2)
    try:
        now = dt.datetime.now(dt.timezone.utc).timestamp()
        first_key, first = _ca("first")
        got = await pool.sign(first_key, first, [], _items(10), now)
        assert got is not None and [g[0] for g in got] == [0] * 10
        leaf = x509.load_der_x509_certificate(got[3][2][0])
        assert leaf.issuer == first.subject and str(spiffe_id_of(leaf)) == f"spiffe://{TD}/w/3"
        leaf.verify_directly_issued_by(first)
        assert leaf.not_valid_after_utc.timestamp() == got[3][3] <= now + 600
        second_key, second = _ca("second")  # rotation: the next batch signs with the new CA only
        got = await pool.sign(second_key, second, [], _items(8), now)
        assert got is not None
        for _, _, chain, _ in got:
            x509.load_der_x509_certificate(chain[0]).verify_directly_issued_by(second)
        assert await pool.sign(second_key, second, [], _items(signing_pool.MIN_POOLED_BATCH - 1), now) is None
    finally:
        pool.close()


async def test_a_ca_key_that_cannot_be_exported_signs_in_process() -> None:
    class HeldElsewhere:
        def private_bytes(self, *args: Any) -> bytes:
            raise TypeError("not exportable")

    _, ca = _ca("hsm")
    pool = SigningPool(workers=2)
    assert await pool.sign(HeldElsewhere(), ca, [], _items(10), 0.0) is None
    assert pool._pool is None


async def test_a_broken_pool_leaves_its_ca_to_in_process_signing() -> None:
    key, ca = _ca("broken")
    pool = SigningPool(workers=2)
    try:
        assert await pool.sign(key, ca, [], _items(8), 0.0) is not None
        assert pool._pool is not None
        for proc in list(pool._pool._processes.values()):  # a worker killed under it
            proc.kill()
            proc.join()
        assert await pool.sign(key, ca, [], _items(8), 0.0) is None
        assert await pool.sign(key, ca, [], _items(8), 0.0) is None and pool._pool is None
    finally:
        pool.close()


async def _batch(server: Handle) -> list[Any]:
    agent_id, chain, key = await server.attest_agent("pool-agent")
    made = await server.admin_stub(entry_grpc.EntryStub).BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=[
        types_entry_pb2.Entry(spiffe_id=spiffe_id(f"/w/{i}"), parent_id=spiffe_id(agent_id.removeprefix(f"spiffe://{TD}")),
                              selectors=[selector_pb2.Selector(type="unix", value=f"uid:{i}")], dns_names=[f"w{i}.test"])
        for i in range(8)]))
    ids = [r.entry.id for r in made.results]
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
    bad_sig = bytearray(csr)
    bad_sig[-3] ^= 0xFF
    params = [svid_pb2.NewX509SVIDParams(entry_id=i, csr=csr) for i in ids] + [
        svid_pb2.NewX509SVIDParams(entry_id=ids[0], csr=b"not a csr"),
        svid_pb2.NewX509SVIDParams(entry_id=ids[1], csr=bytes(bad_sig)),
        svid_pb2.NewX509SVIDParams(entry_id="unknown", csr=csr),
        svid_pb2.NewX509SVIDParams(entry_id=ids[2]),
        svid_pb2.NewX509SVIDParams(csr=csr),
    ]
    stub = server.tls_stub(svid_grpc.SVIDStub, chain, key)
    resp = await stub.BatchNewX509SVID(svid_pb2.BatchNewX509SVIDRequest(params=params))
    return list(resp.results)


def _outcome(r: Any) -> tuple[Any, ...]:
    if r.status.code:
        return (r.status.code, r.status.message)
    leaf = x509.load_der_x509_certificate(r.svid.cert_chain[0])
    dns = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    return (0, r.svid.id.path, str(spiffe_id_of(leaf)), dns, r.svid.expires_at == int(leaf.not_valid_after_utc.timestamp()))


async def test_a_pooled_batch_answers_each_item_as_in_process_signing_does(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(signing_pool, "WORKERS", 2)  # whatever this machine's cores
    (tmp_path / "pooled").mkdir()
    async with running_server(tmp_path / "pooled") as server:
        pooled = await _batch(server)
        core = server.server.core
        assert core is not None and core.signing_pool is not None and core.signing_pool._pool is not None
    (tmp_path / "alone").mkdir()
    monkeypatch.setattr(svid_api, "MIN_POOLED_BATCH", 10_000)
    async with running_server(tmp_path / "alone") as server:
        alone = await _batch(server)
    assert [_outcome(r) for r in pooled] == [_outcome(r) for r in alone]
    assert [r.status.code for r in pooled] == [0] * 8 + [3, 3, 5, 3, 3]
    assert _outcome(pooled[0])[3] == ["w0.test"]


async def test_workers_that_cannot_start_leave_signing_in_process(monkeypatch: Any) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("no /dev/shm here")

    monkeypatch.setattr(signing_pool, "ProcessPoolExecutor", refuse)
    key, ca = _ca("sandboxed")
    pool = SigningPool(workers=2)
    assert await pool.sign(key, ca, [], _items(8), 0.0) is None
    assert await pool.sign(key, ca, [], _items(8), 0.0) is None and pool._pool is None
