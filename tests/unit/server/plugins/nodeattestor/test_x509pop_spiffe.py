"""x509pop in SPIFFE mode: the agent's identity is an X509-SVID from a Workload API, the
server trusts its own bundle and maps the SVID path under spiffe_prefix to the agent ID."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from spire_py.agent.plugins.nodeattestor.base import AgentAttestationError
from spire_py.agent.plugins.nodeattestor.x509pop import X509PopAttestor as AgentX509Pop
from spire_py.common.x509util import split_der_chain
from spire_py.common.plugin import PluginContext
from spire_py.common.plugins import x509pop as pop
from spire_py.proto.workload import workload_grpc, workload_pb2
from spire_py.server.plugins.context import ServerPluginContext
from spire_py.server.plugins.nodeattestor.base import AttestationError
from spire_py.server.plugins.nodeattestor.x509pop import X509PopAttestor as ServerX509Pop

TD = "example.org"
NOW = dt.datetime.now(dt.timezone.utc)


def _cert(key: Any, issuer_key: Any, issuer: x509.Certificate | None, *, ca: bool, uri: str = "") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")] if ca else [])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True))
    if uri:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
    return b.sign(issuer_key, hashes.SHA256())


class FakeWorkloadAPI(workload_grpc.SpiffeWorkloadAPIBase):
    def __init__(self, chain: list[x509.Certificate], key: Any) -> None:
        self.chain, self.key = chain, key
        self.headers: list[Any] = []

    async def FetchX509SVID(self, stream: Any) -> None:
        self.headers.append(dict(stream.metadata))
        await stream.recv_message()
        der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.chain)
        key = self.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        await stream.send_message(workload_pb2.X509SVIDResponse(svids=[workload_pb2.X509SVID(
            spiffe_id="x", x509_svid=der, x509_svid_key=key)]))
        await asyncio.sleep(3600)  # a real Workload API keeps the stream open

    async def FetchX509Bundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchJWTSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchJWTBundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def ValidateJWTSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)


class Store:
    def __init__(self, roots: list[x509.Certificate]) -> None:
        self.roots = roots

    def fetch_bundle(self, td_id: str) -> Any:
        return type("Bundle", (), {"x509_authorities": [r.public_bytes(serialization.Encoding.DER) for r in self.roots]})()


@pytest.fixture
def ca() -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _cert(key, key, None, ca=True), key


async def _serve(tmp_path: Path, api: FakeWorkloadAPI) -> tuple[Server, str]:
    sock = str(tmp_path / "api.sock")
    server = Server([api])
    await server.start(path=sock)
    return server, sock


async def test_svid_from_workload_api_attests_as_trimmed_svid_path(tmp_path: Path, ca: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    svid = _cert(key, ca[1], ca[0], ca=False, uri=f"spiffe://{TD}/spire-exchange/rack-4/host-9")
    api = FakeWorkloadAPI([svid], key)
    grpc_server, sock = await _serve(tmp_path, api)
    try:
        agent = AgentX509Pop.configure({"spiffe_endpoint_socket": f"unix://{sock}"}, PluginContext(TD, side="agent"))
        server = ServerX509Pop.configure({"mode": "spiffe"}, ServerPluginContext(TD, datastore=Store([ca[0]])))
        result = await server.attest(await agent.payload(), agent.respond)
    finally:
        grpc_server.close()
        await grpc_server.wait_closed()
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/x509pop/rack-4/host-9"
    assert api.headers[0].get("workload.spiffe.io") == "true"


async def test_svid_outside_the_server_bundle_is_refused(tmp_path: Path, ca: Any) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert(other_key, other_key, None, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    svid = _cert(key, ca[1], ca[0], ca=False, uri=f"spiffe://{TD}/spire-exchange/h")
    grpc_server, sock = await _serve(tmp_path, FakeWorkloadAPI([svid], key))
    try:
        agent = AgentX509Pop.configure({"spiffe_endpoint_socket": sock}, PluginContext(TD, side="agent"))
        server = ServerX509Pop.configure({"mode": "spiffe"}, ServerPluginContext(TD, datastore=Store([other])))
        with pytest.raises(AttestationError, match="certificate verification failed"):
            await server.attest(await agent.payload(), agent.respond)
    finally:
        grpc_server.close()
        await grpc_server.wait_closed()


async def test_unreachable_workload_api_is_reported_by_the_agent(tmp_path: Path) -> None:
    agent = AgentX509Pop.configure({"spiffe_endpoint_socket": str(tmp_path / "none.sock")},
                                   PluginContext(TD, side="agent"))
    with pytest.raises(AgentAttestationError, match="unable to fetch SVID from workload API"):
        await agent.payload()


async def test_spiffe_mode_without_a_datastore_fails_internally(ca: Any) -> None:
    server = ServerX509Pop.configure({"mode": "spiffe"}, PluginContext(TD))
    with pytest.raises(AttestationError, match="failed to get trust bundle") as err:
        await server.attest(pop.marshal_attestation_data([ca[0].public_bytes(serialization.Encoding.DER)]), agent_never)
    assert err.value.status == Status.INTERNAL


async def agent_never(data: bytes) -> bytes:
    raise AssertionError("no challenge expected")


def test_split_der_certificates_handles_long_form_lengths(ca: Any) -> None:
    ders = [ca[0].public_bytes(serialization.Encoding.DER)] * 3
    assert split_der_chain(b"".join(ders)) == ders
    with pytest.raises(ValueError):
        split_der_chain(ders[0][:-1])
