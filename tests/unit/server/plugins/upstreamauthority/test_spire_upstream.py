"""UpstreamAuthority "spire" against an in-process upstream server over real mTLS: its SVID and
the upstream bundle come from a loopback Workload API; NewDownstreamX509CA signs the CSR,
PublishJWTAuthority publishes the key, GetBundle is polled; a caller without a downstream
entry is refused; SPIRE's config errors."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from spire_py.common.keys import generate_key, public_key_der, public_keys_equal
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.x509util import certs_to_der_chain, create_ca_certificate, uri_sans, verify_chain, x509_ca_subject
from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.proto.workload import workload_grpc, workload_pb2
from spire_py.server.plugins.upstreamauthority.disk import UpstreamAuthorityError
from spire_py.server.plugins.upstreamauthority.spire import SpireUpstreamAuthority
from tests.unit.helpers.inprocess_server import TD, Handle, csr_for, running_server

CTX = PluginContext(TD)


class FakeWorkloadAPI(workload_grpc.SpiffeWorkloadAPIBase):
    """Serves one X509-SVID (and its trust bundle), as an agent would to the downstream server."""

    def __init__(self) -> None:
        self.svid: Optional[workload_pb2.X509SVID] = None

    async def FetchX509SVID(self, stream: Any) -> None:
        await stream.recv_message()
        if self.svid is None:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        await stream.send_message(workload_pb2.X509SVIDResponse(svids=[self.svid]))
        await asyncio.Event().wait()  # a stream stays open, as the agent's does

    async def FetchX509Bundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchJWTSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchJWTBundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def ValidateJWTSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[Handle, FakeWorkloadAPI, str]]:
    wl = FakeWorkloadAPI()
    d = tempfile.mkdtemp(prefix="spire-ua-", dir="/tmp")
    sock = f"{d}/agent.sock"
    server = Server([wl])
    await server.start(path=sock)
    try:
        async with running_server(tmp_path) as h:
            yield h, wl, sock
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(d, ignore_errors=True)


async def _root_bundle(h: Handle) -> list[x509.Certificate]:
    b = await h.admin_stub(bundle_grpc.BundleStub).GetBundle(bundle_pb2.GetBundleRequest())
    return [x509.load_der_x509_certificate(a.asn1) for a in b.x509_authorities]


async def _serve_svid(h: Handle, wl: FakeWorkloadAPI, path: str, downstream: bool = True) -> None:
    if downstream:
        chain, key = await h.downstream_svid(path)
    else:
        from spire_py.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2

        key = ec.generate_private_key(ec.SECP256R1())
        resp = await h.admin_stub(svid_grpc.SVIDStub).MintX509SVID(
            svid_pb2.MintX509SVIDRequest(csr=csr_for(key, f"spiffe://{TD}{path}")))
        chain = [x509.load_der_x509_certificate(d) for d in resp.svid.cert_chain]
    wl.svid = workload_pb2.X509SVID(
        spiffe_id=f"spiffe://{TD}{path}", x509_svid=certs_to_der_chain(chain),
        x509_svid_key=key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
        bundle=certs_to_der_chain(await _root_bundle(h)))


def _ca_csr() -> tuple[Any, bytes]:
    key = generate_key("ec-p256")
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509_ca_subject(serial_number="1"))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{TD}")]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.DER)


async def test_mints_the_intermediate_publishes_jwt_keys_and_polls_the_upstream_bundle(upstream: Any) -> None:
    h, wl, sock = upstream
    await _serve_svid(h, wl, "/nested")
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock, poll_interval=0.2)
    try:
        key, csr = _ca_csr()
        chain, roots = await asyncio.to_thread(plugin.mint_x509_ca, csr, TD, 600)
        root_bundle = await _root_bundle(h)
        assert roots == root_bundle
        ca = chain[0]
        assert public_keys_equal(ca.public_key(), key) and uri_sans(ca) == [f"spiffe://{TD}"]
        verify_chain(ca, chain[1:], roots, None)
        lifetime = ca.not_valid_after_utc.timestamp() - ca.not_valid_before_utc.timestamp()
        assert 500 < lifetime <= 700  # the preferred TTL is honoured

        jwt_key = generate_key("ec-p256").public_key()
        keys = await asyncio.to_thread(plugin.publish_jwt_key, "nested-kid", jwt_key, 2_000_000_000)
        assert "nested-kid" in {kid for kid, _, _ in keys}
        upstream_now = await h.admin_stub(bundle_grpc.BundleStub).GetBundle(bundle_pb2.GetBundleRequest())
        published = {k.key_id: k.public_key for k in upstream_now.jwt_authorities}
        assert published["nested-kid"] == public_key_der(jwt_key)

        plugin.start_polling()
        for _ in range(100):
            seen = plugin.upstream_bundle()
            if seen is not None and "nested-kid" in {kid for kid, _, _ in seen[1]}:
                break
            await asyncio.sleep(0.05)
        assert seen is not None and seen[0] == root_bundle
    finally:
        await plugin.close()


async def test_a_caller_without_a_downstream_entry_is_refused(upstream: Any) -> None:
    h, wl, sock = upstream
    await _serve_svid(h, wl, "/not-downstream", downstream=False)
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock)
    try:
        with pytest.raises(UpstreamAuthorityError, match="unable to request a new Downstream X509CA: rpc error: "
                                                         "code = PERMISSION_DENIED"):
            await asyncio.to_thread(plugin.mint_x509_ca, _ca_csr()[1], TD, 600)
    finally:
        await plugin.close()


async def test_an_upstream_server_outside_the_workload_api_bundle_is_not_trusted(upstream: Any) -> None:
    """The upstream server must chain to the trust bundle the agent hands us: with a bundle that
    holds only a foreign root, no CSR reaches it and nothing is minted."""
    h, wl, sock = upstream
    await _serve_svid(h, wl, "/nested")
    foreign_key, _ = _ca_csr()
    foreign_root = create_ca_certificate(foreign_key.public_key(), foreign_key,
                                         subject=x509_ca_subject(serial_number="foreign"), ttl=3600)
    assert wl.svid is not None
    wl.svid.bundle = certs_to_der_chain([foreign_root])
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock)
    try:
        with pytest.raises(UpstreamAuthorityError, match="unable to request a new Downstream X509CA: .*"
                                                         "CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(plugin.mint_x509_ca, _ca_csr()[1], TD, 600)
    finally:
        await plugin.close()


async def test_no_svid_from_the_workload_api_is_an_error(upstream: Any) -> None:
    h, _wl, sock = upstream
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock)
    try:
        with pytest.raises(UpstreamAuthorityError, match="unable to fetch X509-SVID from the Workload API"):
            await asyncio.to_thread(plugin.mint_x509_ca, _ca_csr()[1], TD, 600)
    finally:
        await plugin.close()


@pytest.mark.parametrize("data, key, message", [
    ({"server_port": "8081", "workload_api_socket": "/s"}, "server_address", "server_address is required"),
    ({"server_address": "h", "workload_api_socket": "/s"}, "server_port", "server_port is required"),
    ({"server_address": "h", "server_port": "x", "workload_api_socket": "/s"}, "server_port",
     'server_port "x" is not a valid port'),
    ({"server_address": "h", "server_port": "8081"}, "workload_api_socket", "workload_api_socket is required"),
    ({"server_address": "h", "server_port": "8081", "workload_api_socket": "/s",
      "experimental": {"workload_api_named_pipe_name": "p"}}, "experimental",
     "configuration: workload_api_named_pipe_name is not supported on this platform; "
     "please use workload_api_socket instead"),
    ({"server_address": "h", "server_port": "8081", "workload_api_socket": "/s",
      "experimental": {"require_pq_kem": True}}, "experimental", "require_pq_kem is not supported by spire_py"),
])
def test_config_is_checked_in_spire_s_words(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as exc:
        SpireUpstreamAuthority.check_config(data, CTX)
    assert exc.value.key == key and message in str(exc.value)


def test_require_pq_kem_false_is_accepted() -> None:
    SpireUpstreamAuthority.check_config({"server_address": "h", "server_port": 8081, "workload_api_socket": "/s",
                                         "experimental": {"require_pq_kem": False}}, CTX)
