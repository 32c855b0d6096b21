"""Federation end to end: two trust domains on loopback, each a real spire-server with a
bundle endpoint and an agent. a.test serves https_spiffe (its server SVID), b.test serves
https_web (a certificate from a test CA that a.test trusts through SSL_CERT_FILE, as Go
would). Relationships are created with the CLI in both directions; workloads in each trust
domain validate the other's X.509-SVIDs and JWT-SVIDs with the bundles their agent
delivered, and a bundle change in b.test reaches a.test's workloads after `federation refresh`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel

from spire_py.common.x509util import verify_chain
from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from tests.integration.helpers.federation import TrustDomainProcs, trust_domain
from tests.integration.helpers.harness import ME, entry_create, free_port, wait_for
from tests.unit.helpers.federation import make_ca, make_web_cert

pytestmark = pytest.mark.timeout(240)


def _x509_context(sock: str) -> Any:
    from spiffe import WorkloadApiClient

    with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as client:
        return client.fetch_x509_context()


def _workload(sock: str, spiffe_id: str, federated: str, root: Optional[x509.Certificate] = None) -> Any:
    """The workload's X.509 context once its SVID is ``spiffe_id`` and the bundle of ``federated``
    (holding ``root`` when given) was delivered."""
    got: dict[str, Any] = {}

    def ready() -> bool:
        try:
            ctx = _x509_context(sock)
        except Exception:
            return False
        from spiffe import TrustDomain

        fb = ctx.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(federated))
        if str(ctx.default_svid.spiffe_id) != spiffe_id or fb is None:
            return False
        if root is not None and root not in fb.x509_authorities:
            return False
        got["ctx"] = ctx
        return True

    wait_for(ready, 60, f"{spiffe_id} with the {federated} bundle", interval=0.5)
    return got["ctx"]


def _jwt(sock: str, audience: str) -> str:
    from spiffe import WorkloadApiClient

    with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as client:
        return str(client.fetch_jwt_svid({audience}).token)


def _validate_jwt(sock: str, token: str, td: str, audience: str) -> str:
    from spiffe import JwtSvid, TrustDomain, WorkloadApiClient

    with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as client:
        bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(TrustDomain(td))
    assert bundle is not None, f"no JWT bundle for {td}"
    return str(JwtSvid.parse_and_validate(token, bundle, {audience}).spiffe_id)


def _verify(ctx_of_peer: Any, ctx_of_me: Any, peer_td: str) -> None:
    from spiffe import TrustDomain

    chain = list(ctx_of_peer.default_svid.cert_chain)
    roots = ctx_of_me.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(peer_td)).x509_authorities
    verify_chain(chain[0], chain[1:], list(roots))


async def _append_root(server_sock: str, cert: x509.Certificate) -> None:
    ch = Channel(path=server_sock)
    try:
        await bundle_grpc.BundleStub(ch).AppendBundle(bundle_pb2.AppendBundleRequest(
            x509_authorities=[types_bundle_pb2.X509Certificate(asn1=cert.public_bytes(serialization.Encoding.DER))]))
    finally:
        ch.close()


def test_two_trust_domains_federate_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web_ca = make_ca("Federation Web CA")
    web_cert, web_key = make_web_cert(web_ca, "127.0.0.1").write(tmp_path, "web")
    roots, _ = web_ca.write(tmp_path, "web-ca")
    a_port, b_port = free_port(), free_port()
    b_conf = f"""federation {{ bundle_endpoint {{
        address = "127.0.0.1"
        port = {b_port}
        refresh_hint = "1m"
        profile "https_web" {{ serving_cert_file {{ cert_file_path = "{web_cert}" key_file_path = "{web_key}" }} }}
    }} }}"""
    a_conf = f"""federation {{ bundle_endpoint {{
        address = "127.0.0.1"
        port = {a_port}
        profile "https_spiffe" {{}}
    }} }}"""
    with trust_domain("b.test", b_conf) as b:
        monkeypatch.setenv("SSL_CERT_FILE", str(roots))  # a.test's server trusts the web CA as a system root
        with trust_domain("a.test", a_conf) as a:
            _federate(tmp_path, a, b, a_port, b_port)


def _federate(tmp_path: Path, a: TrustDomainProcs, b: TrustDomainProcs, a_port: int, b_port: int) -> None:
    # a.test -> b.test over https_web, created and refreshed through the CLI.
    a.server.cli("federation", "create", "-trustDomain", "b.test", "-bundleEndpointURL", f"https://127.0.0.1:{b_port}",
                 "-bundleEndpointProfile", "https_web")
    assert a.server.cli("federation", "refresh", "-id", "b.test").stdout == "Bundle refreshed\n"
    # b.test -> a.test over https_spiffe, bootstrapped with a.test's bundle.
    a_bundle = tmp_path / "a.pem"
    a_bundle.write_text(a.server.cli("bundle", "show").stdout)
    out = b.server.cli("federation", "create", "-trustDomain", "a.test", "-bundleEndpointURL", f"https://127.0.0.1:{a_port}",
                       "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://a.test/spire/server",
                       "-trustDomainBundlePath", str(a_bundle)).stdout
    assert "Endpoint SPIFFE ID        : spiffe://a.test/spire/server" in out
    assert b.server.cli("federation", "refresh", "-id", "a.test").stdout == "Bundle refreshed\n"
    assert "Found 1 federation relationship\n" in b.server.cli("federation", "list").stdout

    entry_create(a.server, a.agent_id, "spiffe://a.test/wa", "-selector", f"unix:uid:{ME}", "-federatesWith", "spiffe://b.test")
    entry_create(b.server, b.agent_id, "spiffe://b.test/wb", "-selector", f"unix:uid:{ME}", "-federatesWith", "spiffe://a.test")
    assert "FederatesWith           : b.test\n" in a.server.cli("entry", "show", "-spiffeID", "spiffe://a.test/wa").stdout

    wa = _workload(a.agent.socket, "spiffe://a.test/wa", "b.test")
    wb = _workload(b.agent.socket, "spiffe://b.test/wb", "a.test")
    _verify(wb, wa, "b.test")  # a.test's workload validates b.test's X.509-SVID
    _verify(wa, wb, "a.test")  # and the other way round
    assert _validate_jwt(a.agent.socket, _jwt(b.agent.socket, "fed-a"), "b.test", "fed-a") == "spiffe://b.test/wb"
    assert _validate_jwt(b.agent.socket, _jwt(a.agent.socket, "fed-b"), "a.test", "fed-b") == "spiffe://a.test/wa"

    # b.test's bundle changes; after a refresh a.test's workloads get the new root.
    new_root = make_ca("b.test new root").cert
    asyncio.run(_append_root(b.server.socket, new_root))
    a.server.cli("federation", "refresh", "-id", "b.test")
    _workload(a.agent.socket, "spiffe://a.test/wa", "b.test", root=new_root)
