"""Envoy SDS v3 end to end: a real spire-server and spire-agent, and a grpclib client with the
published Envoy messages on the agent's socket, acting as Envoy does."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_spiffe_validator_config_pb2 as spiffe_pb2
from envoy.service.discovery.v3 import discovery_pb2
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.workloadapi.sds import SECRET_TYPE_URL
from spire_py.agent.workloadapi.sds_grpc import SecretDiscoveryServiceStub
from spire_py.common.x509util import spiffe_id_of, verify_chain

from tests.integration.helpers.harness import TD
from tests.unit.helpers.workload_world import CA

NOBODY = 65534
ME = f"spiffe://{TD}/me"


def request(*names: str, **kw) -> discovery_pb2.DiscoveryRequest:
    node = base_pb2.Node(id="envoy-test", cluster="test")
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 30
    return discovery_pb2.DiscoveryRequest(resource_names=list(names), type_url=SECRET_TYPE_URL, node=node, **kw)


def secrets_of(resp: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for res in resp.resources:
        s = secret_pb2.Secret()
        assert res.Unpack(s)
        out[s.name] = s
    return out


def trust_domains(s: secret_pb2.Secret) -> dict[str, list[x509.Certificate]]:
    cfg = spiffe_pb2.SPIFFECertValidatorConfig()
    assert s.validation_context.custom_validator_config.typed_config.Unpack(cfg)
    return {td.name: x509.load_pem_x509_certificates(td.trust_bundle.inline_bytes) for td in cfg.trust_domains}


def chain_of(s: secret_pb2.Secret) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(s.tls_certificate.certificate_chain.inline_bytes)


async def eventually(fetch, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return await fetch()
        except GRPCError as exc:
            last = exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last}")


async def tls_handshake(tmp: Path, cert: secret_pb2.Secret, roots: list[x509.Certificate]) -> str:
    """A loopback TLS handshake: the server presents the delivered chain and key, the client
    trusts only the delivered bundle; returns the SPIFFE ID the client saw."""
    chain, key = tmp / "chain.pem", tmp / "key.pem"
    chain.write_bytes(cert.tls_certificate.certificate_chain.inline_bytes)
    key.write_bytes(cert.tls_certificate.private_key.inline_bytes)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(chain, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False  # SVIDs name a SPIFFE ID, not a host
    client_ctx.load_verify_locations(cadata="".join(
        r.public_bytes(serialization.Encoding.PEM).decode() for r in roots))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        peer = x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        writer.close()
        return str(spiffe_id_of(peer))
    finally:
        server.close()


async def test_envoy_streams_secrets_acks_nacks_and_gets_the_rotation(spire_server, start_agent, tmp_path):
    token = spire_server.token()
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token}"
    spire_server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/nobody",
                     "-selector", f"unix:uid:{NOBODY}")
    agent = start_agent(spire_server, token)
    assert 'apis="Workload API,SDS API"' in agent.proc.logs()
    server_roots = x509.load_pem_x509_certificates(spire_server.cli("bundle", "show", "-format", "pem").stdout.encode())
    ch = Channel(path=agent.socket)
    stub = SecretDiscoveryServiceStub(ch)
    try:
        # No registration for this uid: bundles yes, a TLS certificate no.
        roots = await eventually(lambda: stub.FetchSecrets(request("ROOTCA"), timeout=10), 60, "ROOTCA")
        assert trust_domains(secrets_of(roots)["ROOTCA"]) == {TD: server_roots}
        try:
            await stub.FetchSecrets(request("default"), timeout=10)
            raise AssertionError("an unregistered caller got a TLS certificate")
        except GRPCError as exc:
            assert exc.status == Status.INVALID_ARGUMENT, exc
            assert 'requested identities ["default"]' in str(exc.message)

        spire_server.cli("entry", "create", "-parentID", agent_id, "-spiffeID", ME,
                         "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", "20")
        await eventually(lambda: stub.FetchSecrets(request("default"), timeout=10), 60, "the workload's SVID")

        # As in SPIRE, one request gets one of (trust domain, ROOTCA, ALL) and one of (SPIFFE ID,
        # default) for the same identity: Envoy asks for them on separate streams.
        async with stub.StreamSecrets.open(timeout=60) as other:
            await other.send_message(request("ALL", ME))
            by_id = secrets_of(await asyncio.wait_for(other.recv_message(), 30))
            assert set(by_id) == {"ALL", ME}
            assert trust_domains(by_id["ALL"]) == {TD: server_roots}
            assert by_id[ME].tls_certificate.private_key.inline_bytes.startswith(b"-----BEGIN PRIVATE KEY-----")
            await other.cancel()

        names = ("default", "ROOTCA")
        async with stub.StreamSecrets.open(timeout=120) as stream:
            await stream.send_message(request(*names))
            first = await asyncio.wait_for(stream.recv_message(), 30)
            got = secrets_of(first)
            assert set(got) == set(names) and first.version_info and first.nonce
            chain = chain_of(got["default"])
            assert [c.serial_number for c in chain] == [c.serial_number for c in chain_of(by_id[ME])]
            bundle = trust_domains(got["ROOTCA"])[TD]
            verify_chain(chain[0], chain[1:], bundle)  # the peer validates with the delivered context
            assert await tls_handshake(tmp_path, got["default"], bundle) == ME
            with pytest.raises(ssl.SSLCertVerificationError):  # a client trusting another CA refuses it
                await tls_handshake(tmp_path, got["default"], [CA("another root").cert])

            # ACK, then the rotation is pushed without asking.
            await stream.send_message(request(*names, version_info=first.version_info, response_nonce=first.nonce))
            second = await asyncio.wait_for(stream.recv_message(), 40)
            assert second.version_info != first.version_info and second.nonce != first.nonce
            rotated = chain_of(secrets_of(second)["default"])
            assert rotated[0].serial_number != chain[0].serial_number
            assert rotated[0].not_valid_after_utc > chain[0].not_valid_after_utc
            verify_chain(rotated[0], rotated[1:], trust_domains(secrets_of(second)["ROOTCA"])[TD])

            # NACK the rotation: the agent does not resend the version Envoy rejected.
            nack = request(*names, version_info=first.version_info, response_nonce=second.nonce)
            nack.error_detail.message = "test rejects this version"
            await stream.send_message(nack)
            try:
                again = await asyncio.wait_for(stream.recv_message(), 3)
            except asyncio.TimeoutError:
                again = None
            assert again is None or again.version_info != second.version_info
            await stream.cancel()
        assert "Envoy reported errors applying secrets" in agent.proc.logs()
    finally:
        ch.close()


def _status_of(sock: str, path: str, request_bytes: bytes, metadata: tuple = ()) -> Status:
    """The status a gRPC core client (as Envoy's) sees for one unary call."""
    import grpc

    with grpc.insecure_channel(f"unix:{sock}") as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            call(request_bytes, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return Status(exc.code().value[0])
    return Status.OK


def test_disable_sds_api_and_disable_workload_api_each_turn_off_one_api(spire_server, start_agent):
    from spire_py.proto.workload import workload_pb2

    sds = "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"
    jwt = "/SpiffeWorkloadAPI/FetchJWTSVID"
    jwt_request = workload_pb2.JWTSVIDRequest(audience=["a"]).SerializeToString()
    for extra, apis, sds_status, workload_status in (
            ("disable_sds_api = true", "Workload API", Status.UNIMPLEMENTED, Status.PERMISSION_DENIED),
            ("disable_workload_api = true", "SDS API", Status.OK, Status.UNIMPLEMENTED)):
        agent = start_agent(spire_server, spire_server.token(), extra_agent=extra)
        assert f'apis="{apis}"' in agent.proc.logs()
        assert _status_of(agent.socket, sds, request("ROOTCA").SerializeToString()) == sds_status, extra
        assert _status_of(agent.socket, jwt, jwt_request, (("workload.spiffe.io", "true"),)) == workload_status, extra
