"""Prometheus ``tls``: /metrics over HTTPS with cert_file/key_file, and with client_ca_file a
scraper without a certificate from that CA is refused in the handshake; SPIRE's checks of the
block at their line. The SVID-based options are in test_prometheus_spiffe_tls.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.common.config import ConfigError
from spire_py.common.config.sections import PrometheusTLSConfig
from spire_py.common.telemetry.errors import TelemetryError
from spire_py.common.telemetry.metrics import Metrics
from spire_py.common.telemetry.prometheus import PrometheusSink
from spire_py.server.config import load_server_config
from tests.unit.server.test_config_server import PLUGINS

NOW = dt.datetime.now(dt.timezone.utc)


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          ca: bool = False, san: list[x509.GeneralName] | None = None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(minutes=1))
         .not_valid_after(NOW + dt.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj: object) -> str:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                           serialization.NoEncryption()))
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("metrics CA", ca_key, None, ca=True)
    other_ca = _cert("other CA", other_key, None, ca=True)
    server_key, client_key, stranger_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    server = _cert("localhost", server_key, (ca.subject, ca_key),
                   san=[x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))])
    client = _cert("prometheus", client_key, (ca.subject, ca_key))
    stranger = _cert("stranger", stranger_key, (other_ca.subject, other_key))
    return {
        "ca": _pem(d / "ca.pem", ca),
        "cert": _pem(d / "server.pem", server), "key": _pem(d / "server.key", server_key),
        "client_cert": _pem(d / "client.pem", client), "client_key": _pem(d / "client.key", client_key),
        "stranger_cert": _pem(d / "stranger.pem", stranger), "stranger_key": _pem(d / "stranger.key", stranger_key),
    }


def _scrape(port: int, ca: str, cert: str = "", key: str = "") -> str:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=10, context=ctx) as resp:
        return resp.read().decode()


async def _served(tls: PrometheusTLSConfig) -> tuple[PrometheusSink, int]:
    m = Metrics("spire_agent", push=False)
    m.incr_counter(("workload_api", "connection"))
    sink = PrometheusSink("127.0.0.1", 0, tls)
    sink.start(m)
    return sink, sink.address[1]


async def test_https_scrape_with_cert_and_key(pki) -> None:
    sink, port = await _served(PrometheusTLSConfig(cert_file=pki["cert"], key_file=pki["key"]))
    try:
        body = await asyncio.to_thread(_scrape, port, pki["ca"])
        assert "spire_agent_workload_api_connection_total 1.0" in body
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is not served
            await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read())
    finally:
        sink.close()


async def test_client_ca_file_requires_a_client_certificate_from_that_ca(pki) -> None:
    sink, port = await _served(PrometheusTLSConfig(cert_file=pki["cert"], key_file=pki["key"], client_ca_file=pki["ca"]))
    try:
        body = await asyncio.to_thread(_scrape, port, pki["ca"], pki["client_cert"], pki["client_key"])
        assert "spire_agent_workload_api_connection_total 1.0" in body
        for cert, key in (("", ""), (pki["stranger_cert"], pki["stranger_key"])):
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                await asyncio.to_thread(_scrape, port, pki["ca"], cert, key)
        # The refusals did not stop the listener.
        assert "spire_agent_workload_api_connection_total" in await asyncio.to_thread(
            _scrape, port, pki["ca"], pki["client_cert"], pki["client_key"])
    finally:
        sink.close()


def test_an_unreadable_or_missing_key_stops_start_up(tmp_path, pki) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    for key_file in (str(bad), str(tmp_path / "missing.key")):
        sink = PrometheusSink("127.0.0.1", 0, PrometheusTLSConfig(cert_file=pki["cert"], key_file=key_file))
        with pytest.raises(TelemetryError, match="telemetry: failed to create TLS config for Prometheus"):
            sink.start(Metrics("spire_agent"))


def _load(tmp_path: Path, tls_body: str):
    text = ('server {\n    trust_domain = "example.org"\n}\n' + textwrap.dedent(PLUGINS)
            + "telemetry {\n    Prometheus {\n        port = 9988\n        tls {\n"
            + textwrap.indent(textwrap.dedent(tls_body).strip("\n"), " " * 12) + "\n        }\n    }\n}\n")
    p = tmp_path / "server.conf"
    p.write_text(text)
    return load_server_config(str(p))


@pytest.mark.parametrize("body, words", [
    ('cert_file = "/c.pem"', "cert_file and key_file must both be configured unless use_spire_svid is enabled"),
    ('use_spire_svid = true\ncert_file = "/c.pem"',
     "cert_file and key_file cannot be configured when use_spire_svid is enabled"),
    ('cert_file = "/c.pem"\nkey_file = "/k.pem"\nclient_ca_file = "/ca.pem"\n'
     'authorized_spiffe_ids = ["spiffe://example.org/prometheus"]',
     "client_ca_file cannot be configured with authorized_spiffe_ids"),
    ('use_spire_svid = true\nauthorized_spiffe_ids = ["example.org/prometheus"]', "invalid SPIFFE ID"),
])
def test_tls_blocks_spire_refuses_are_refused_at_their_line(tmp_path, body, words) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, body)
    assert words in str(exc.value)
    assert "server.conf:" in str(exc.value) and "tls" in str(exc.value)


def test_cert_key_and_client_ca_load_without_an_unacted_warning(tmp_path) -> None:
    cfg = _load(tmp_path, 'cert_file = "/c.pem"\nkey_file = "/k.pem"\nclient_ca_file = "/ca.pem"')
    assert cfg.telemetry.prometheus.tls.client_ca_file == "/ca.pem"
    assert not [w for w in cfg.warnings if "telemetry" in w]


def test_a_taken_port_is_one_error_line_for_run() -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError, match="telemetry: Prometheus cannot listen on 127.0.0.1:") as exc:
            PrometheusSink("127.0.0.1", taken.getsockname()[1]).start(Metrics("spire_agent"))
        assert isinstance(exc.value, TelemetryError)  # run prints an OSError as one line, no traceback
    finally:
        taken.close()
