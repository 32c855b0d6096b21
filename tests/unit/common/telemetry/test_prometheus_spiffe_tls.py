"""Prometheus ``tls`` with SPIFFE: ``use_spire_svid`` serves the daemon's current SVID (a rotated
one at the next handshake), ``authorized_spiffe_ids`` lets in only clients whose X.509-SVID
chains to the trust domain's bundle and carries one of those IDs."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import ssl
import tempfile
from pathlib import Path
from typing import Any, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.common.config.sections import PrometheusTLSConfig
from spire_py.common.telemetry.errors import TelemetryError
from spire_py.common.telemetry.metrics import Metrics
from spire_py.common.telemetry.prometheus import PrometheusSink

TD = "example.org"
NOW = dt.datetime.now(dt.timezone.utc)


class CA:
    """A SPIFFE CA for ``td``: signs X.509-SVIDs (URI SAN, no subject needed)."""

    def __init__(self, td: str = TD) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{td} CA")])
        self.root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(minutes=1))
                     .not_valid_after(NOW + dt.timedelta(hours=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{td}")]),
                                    critical=False)
                     .sign(self.key, hashes.SHA256()))

    def svid(self, spiffe_id: str) -> tuple[list[x509.Certificate], Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.root.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - dt.timedelta(minutes=1)).not_valid_after(NOW + dt.timedelta(hours=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
                .sign(self.key, hashes.SHA256()))
        return [leaf], key


def _client_ctx(roots: list[x509.Certificate], svid: Optional[tuple[list[x509.Certificate], Any]] = None,
                d: Optional[Path] = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # an SVID names no host: the chain to the bundle is what is checked
    ctx.load_verify_locations(cadata="".join(r.public_bytes(serialization.Encoding.PEM).decode() for r in roots))
    if svid is not None:
        assert d is not None
        cert, key = d / "c.pem", d / "k.pem"
        cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid[0]))
        key.write_bytes(svid[1].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _scrape(port: int, ctx: ssl.SSLContext) -> tuple[str, x509.Certificate]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/metrics")
        assert conn.sock is not None
        served = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))
        return conn.getresponse().read().decode(), served
    finally:
        conn.close()


def _sink(tls: PrometheusTLSConfig, svid: Any, roots: Any, trust_domain: str = TD) -> PrometheusSink:
    sink = PrometheusSink("127.0.0.1", 0, tls)
    sink.trust_domain = trust_domain
    sink.serve_with(svid, roots)
    m = Metrics("spire_server")
    m.incr_counter(("server_ca", "sign", "x509_svid"))
    sink.start(m)
    return sink


async def test_use_spire_svid_serves_the_current_svid_and_a_rotated_one_next() -> None:
    ca = CA()
    current = {"svid": ca.svid(f"spiffe://{TD}/spire/server")}
    sink = _sink(PrometheusTLSConfig(use_spire_svid=True), lambda: current["svid"], lambda: [ca.root])
    try:
        port = sink.address[1]
        body, served = await asyncio.to_thread(_scrape, port, _client_ctx([ca.root]))
        assert "spire_server_server_ca_sign_x509_svid_total 1.0" in body
        assert served == current["svid"][0][0]
        current["svid"] = ca.svid(f"spiffe://{TD}/spire/server")  # rotated
        _, served = await asyncio.to_thread(_scrape, port, _client_ctx([ca.root]))
        assert served == current["svid"][0][0]
    finally:
        sink.close()


async def test_an_svid_not_yet_there_refuses_the_handshake_then_serves() -> None:
    ca = CA()
    current: dict[str, Any] = {"svid": None}
    sink = _sink(PrometheusTLSConfig(use_spire_svid=True), lambda: current["svid"], lambda: [ca.root])
    try:
        port = sink.address[1]
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(_scrape, port, _client_ctx([ca.root]))
        current["svid"] = ca.svid(f"spiffe://{TD}/spire/server")
        assert "spire_server" in (await asyncio.to_thread(_scrape, port, _client_ctx([ca.root])))[0]
    finally:
        sink.close()


async def test_authorized_spiffe_ids_let_in_only_those_ids_chained_to_the_bundle() -> None:
    ca, other_td = CA(), CA("other.org")
    tls = PrometheusTLSConfig(use_spire_svid=True, authorized_spiffe_ids=[f"spiffe://{TD}/prometheus"])
    server_svid = ca.svid(f"spiffe://{TD}/spire/server")
    sink = _sink(tls, lambda: server_svid, lambda: [ca.root])
    try:
        port = sink.address[1]
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            ok = _client_ctx([ca.root], ca.svid(f"spiffe://{TD}/prometheus"), d)
            assert "spire_server" in (await asyncio.to_thread(_scrape, port, ok))[0]
            refused = [
                _client_ctx([ca.root]),  # no client certificate
                _client_ctx([ca.root], ca.svid(f"spiffe://{TD}/someone-else"), d),  # chained, not authorized
                _client_ctx([ca.root], other_td.svid(f"spiffe://{TD}/prometheus"), d),  # the ID, from another CA
            ]
            for ctx in refused:
                with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                    await asyncio.to_thread(_scrape, port, ctx)
            assert "spire_server" in (await asyncio.to_thread(_scrape, port, ok))[0]  # still serving
    finally:
        sink.close()


async def test_authorized_spiffe_ids_with_a_web_certificate(tmp_path) -> None:
    ca, web = CA(), CA("web.example")
    cert, key = web.svid("spiffe://web.example/metrics")
    (tmp_path / "cert.pem").write_bytes(cert[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    tls = PrometheusTLSConfig(cert_file=str(tmp_path / "cert.pem"), key_file=str(tmp_path / "key.pem"),
                              authorized_spiffe_ids=[f"spiffe://{TD}/prometheus"])
    sink = _sink(tls, lambda: None, lambda: [ca.root])
    try:
        ok = _client_ctx([web.root], ca.svid(f"spiffe://{TD}/prometheus"), tmp_path)
        body, served = await asyncio.to_thread(_scrape, sink.address[1], ok)
        assert served == cert[0] and "spire_server" in body
    finally:
        sink.close()


@pytest.mark.parametrize("tls, sources, words", [
    (PrometheusTLSConfig(use_spire_svid=True, authorized_spiffe_ids=["spiffe://other.org/prometheus"]), True,
     "authorized_spiffe_ids must be in trust domain 'example.org': spiffe://other.org/prometheus"),
    (PrometheusTLSConfig(use_spire_svid=True), False, "use_spire_svid requires access to the current SPIRE SVID"),
])
def test_what_cannot_be_served_stops_start_up(tls, sources, words) -> None:
    sink = PrometheusSink("127.0.0.1", 0, tls)
    sink.trust_domain = TD
    if sources:
        sink.serve_with(lambda: None, lambda: [])
    with pytest.raises(TelemetryError, match=words):
        sink.start(Metrics("spire_server"))
