"""The bundle endpoint and the bundle client against each other over real TLS on loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest

from spire_py.common.spiffeid import SpiffeId, TrustDomain
from spire_py.server.federation.client import MAX_BUNDLE_BYTES, FetchError, SpiffeAuth, fetch_bundle
from tests.unit.helpers.federation import bundle_of, make_ca, make_svid, make_web_cert, serving_endpoint

TD = TrustDomain.parse("other.test")
ENDPOINT_ID = SpiffeId.parse("spiffe://other.test/spire/server")


async def test_https_spiffe_endpoint_serves_the_bundle_with_the_configured_refresh_hint() -> None:
    ca = make_ca()
    from cryptography.hazmat.primitives.asymmetric import ec
    served = bundle_of("other.test", ca.cert, jwt_key=ec.generate_private_key(ec.SECP256R1()), sequence=7)
    async with serving_endpoint([served], make_svid(ca, str(ENDPOINT_ID)), refresh_hint=120) as ep:
        got = await fetch_bundle(TD, f"https://127.0.0.1:{ep.port}", SpiffeAuth(ENDPOINT_ID, (ca.cert,)))
    assert got.x509_authorities == [ca.cert]
    assert set(got.jwt_authorities) == {"kid-1"}
    assert (got.refresh_hint, got.sequence_number) == (120, 7)


async def test_https_spiffe_endpoint_with_another_spiffe_id_is_refused() -> None:
    ca = make_ca()
    async with serving_endpoint([bundle_of("other.test", ca.cert)], make_svid(ca, "spiffe://other.test/not-server")) as ep:
        with pytest.raises(FetchError, match='unexpected ID "spiffe://other.test/not-server"'):
            await fetch_bundle(TD, f"https://127.0.0.1:{ep.port}", SpiffeAuth(ENDPOINT_ID, (ca.cert,)))


async def test_https_spiffe_endpoint_chained_to_an_untrusted_root_is_refused() -> None:
    ca, stranger = make_ca(), make_ca("Stranger")
    async with serving_endpoint([bundle_of("other.test", ca.cert)], make_svid(stranger, str(ENDPOINT_ID))) as ep:
        with pytest.raises(FetchError, match="failed to fetch bundle: .*certificate"):
            await fetch_bundle(TD, f"https://127.0.0.1:{ep.port}", SpiffeAuth(ENDPOINT_ID, (ca.cert,)))


async def test_https_web_endpoint_is_verified_with_the_system_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web_ca = make_ca("Web CA")
    files = make_web_cert(web_ca, "127.0.0.1").write(tmp_path, "web")
    ca = make_ca()
    async with serving_endpoint([bundle_of("other.test", ca.cert)], web_files=files) as ep:
        url = f"https://127.0.0.1:{ep.port}"
        with pytest.raises(FetchError, match="certificate verify failed|unable to get local issuer"):
            await fetch_bundle(TD, url)  # the test CA is not a system root
        (tmp_path / "roots.pem").write_bytes(web_ca.write(tmp_path, "ca")[0].read_bytes())
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "roots.pem"))
        got = await fetch_bundle(TD, url)
    assert got.x509_authorities == [ca.cert]


async def _raw(port: int, request: bytes) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_endpoint_answers_get_on_root_only_and_bounds_the_request_head() -> None:
    ca = make_ca()
    async with serving_endpoint([bundle_of("other.test", ca.cert)], make_svid(ca, str(ENDPOINT_ID))) as ep:
        ok = await _raw(ep.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK") and b"application/json" in ok
        assert json.loads(ok.split(b"\r\n\r\n", 1)[1])["keys"][0]["use"] == "x509-svid"
        assert (await _raw(ep.port, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _raw(ep.port, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 404")
        big = await _raw(ep.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431")


class _Fake:
    """A TLS server that answers every request with ``body``."""

    def __init__(self, body: bytes, status: str = "200 OK") -> None:
        self.body, self.status = body, status

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {self.status}\r\nContent-Length: {len(self.body)}\r\n\r\n".encode() + self.body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", "200 OK", "failed to decode bundle"),
    (b'{"keys": "nope"}', "200 OK", "failed to decode bundle"),
    (b"x" * (MAX_BUNDLE_BYTES + 1), "200 OK", "bundle larger than"),
    (b"gone", "503 Service Unavailable", "unexpected status 503 fetching bundle: gone"),
])
async def test_invalid_oversize_or_failed_responses_are_refused(tmp_path: Path, body: bytes, status: str, message: str) -> None:
    ca = make_ca()
    svid = make_svid(ca, str(ENDPOINT_ID))
    cert, key = svid.write(tmp_path, "svid")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(_Fake(body, status).handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(FetchError, match=message):
            await fetch_bundle(TD, f"https://127.0.0.1:{port}", SpiffeAuth(ENDPOINT_ID, (ca.cert,)))
    finally:
        server.close()
        await server.wait_closed()


def test_an_acme_bundle_endpoint_is_refused() -> None:
    from spire_py.common.config.federation import ACMEConfig, BundleEndpointConfig
    from spire_py.server.federation.endpoint import BundleEndpoint, EndpointError

    cfg = BundleEndpointConfig(profile="https_web", acme=ACMEConfig(domain_name="b.test", email="a@b.test"))
    with pytest.raises(EndpointError, match="ACME is not supported by spire_py"):
        BundleEndpoint(cfg, lambda: None)  # type: ignore[arg-type,return-value]


async def test_https_web_serving_certificate_files_are_reloaded_when_they_change(tmp_path: Path) -> None:
    import os

    web_ca = make_ca("Web CA")
    files = make_web_cert(web_ca, "127.0.0.1").write(tmp_path, "web")
    ca = make_ca()
    async with serving_endpoint([bundle_of("other.test", ca.cert)], web_files=files) as ep:
        assert not ep._load_files()  # unchanged files are not read again
        replacement = make_web_cert(web_ca, "127.0.0.1")
        replacement.write(tmp_path, "web")
        for path in files:
            os.utime(path, (1, 1))  # a different mtime than the first load, whatever the clock's resolution
        assert ep._load_files()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        _, writer = await asyncio.open_connection("127.0.0.1", ep.port, ssl=ctx)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
    from cryptography import x509
    assert x509.load_der_x509_certificate(der) == replacement.cert
