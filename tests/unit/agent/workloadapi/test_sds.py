"""Envoy SDS v3 on the agent socket: resources as SPIRE builds them, the stream's
version/nonce rules, and StreamSecrets/FetchSecrets over a real socket with the
published Envoy messages."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_spiffe_validator_config_pb2 as spiffe_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.workloadapi.sds import (SECRET_TYPE_URL, SPIFFE_VALIDATOR, Identity, SDSNames,
                                            SecretDiscoveryService, StreamState, WorkloadUpdate, build_response)
from spire_py.agent.workloadapi.sds_grpc import SecretDiscoveryServiceStub
from spire_py.agent.workloadapi.server import close_workload_api, serve_workload_api
from spire_py.common.x509util import verify_chain

from tests.unit.helpers.workload_world import CA, FEDERATED_TD, TD_ID, WORKLOAD_ID, new_world, short_dir, uid_selector

NAMES = SDSNames()


def envoy_node(major: int = 1, minor: int = 30, metadata: dict | None = None) -> base_pb2.Node:
    node = base_pb2.Node(id="envoy", cluster="c")
    node.user_agent_build_version.version.major_number = major
    node.user_agent_build_version.version.minor_number = minor
    if metadata:
        node.metadata.update(metadata)
    return node


def request(*names: str, node: base_pb2.Node | None = None, **kw) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(resource_names=list(names), type_url=SECRET_TYPE_URL,
                                          node=node if node is not None else envoy_node(), **kw)


def secrets_of(resp: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for res in resp.resources:
        s = secret_pb2.Secret()
        assert res.Unpack(s)
        out[s.name] = s
    return out


def validator(s: secret_pb2.Secret) -> spiffe_pb2.SPIFFECertValidatorConfig:
    custom = s.validation_context.custom_validator_config
    assert custom.name == SPIFFE_VALIDATOR
    cfg = spiffe_pb2.SPIFFECertValidatorConfig()
    assert custom.typed_config.Unpack(cfg)
    return cfg


@pytest.fixture(scope="module")
def pki():
    ca, partner = CA("example.org root"), CA("partner root")
    first = Identity(WORKLOAD_ID, *ca.svid(WORKLOAD_ID))
    second = Identity("spiffe://example.org/other", *ca.svid("spiffe://example.org/other"))
    upd = WorkloadUpdate(TD_ID, [ca.cert], {FEDERATED_TD: [partner.cert]}, [first, second])
    return ca, partner, upd


# --- resources ---------------------------------------------------------------------------------
def test_default_svid_is_the_first_identity_with_chain_and_pkcs8_key(pki):
    ca, _, upd = pki
    got = secrets_of(build_response(NAMES, "1", request("default"), upd))
    tls = got["default"].tls_certificate
    chain = x509.load_pem_x509_certificates(tls.certificate_chain.inline_bytes)
    assert chain[0].serial_number == upd.identities[0].chain[0].serial_number
    verify_chain(chain[0], chain[1:], [ca.cert])
    assert tls.private_key.inline_bytes.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(tls.private_key.inline_bytes, None)
    assert key.public_key() == upd.identities[0].key.public_key()


def test_secrets_named_by_spiffe_id_and_trust_domain(pki):
    _, partner, upd = pki
    got = secrets_of(build_response(NAMES, "1", request("spiffe://example.org/other", FEDERATED_TD), upd))
    assert set(got) == {"spiffe://example.org/other", FEDERATED_TD}
    [td] = validator(got[FEDERATED_TD]).trust_domains
    assert td.name == "partner.test"
    assert x509.load_pem_x509_certificates(td.trust_bundle.inline_bytes) == [partner.cert]


def test_rootca_is_a_spiffe_validator_for_envoy_118_and_trusted_ca_before(pki):
    ca, _, upd = pki
    new = secrets_of(build_response(NAMES, "1", request("ROOTCA"), upd))["ROOTCA"]
    assert [t.name for t in validator(new).trust_domains] == ["example.org"]
    for node in (envoy_node(1, 17), base_pb2.Node(id="no version")):
        old = secrets_of(build_response(NAMES, "1", request("ROOTCA", node=node), upd))["ROOTCA"]
        assert x509.load_pem_x509_certificates(old.validation_context.trusted_ca.inline_bytes) == [ca.cert]
        assert not old.validation_context.HasField("custom_validator_config")


def test_all_is_one_spiffe_validator_with_every_bundle_sorted(pki):
    _, _, upd = pki
    got = secrets_of(build_response(NAMES, "1", request("ALL"), upd))
    assert [t.name for t in validator(got["ALL"]).trust_domains] == ["example.org", "partner.test"]


def test_disable_spiffe_cert_validation_by_config_or_node_metadata(pki):
    ca, _, upd = pki
    off = SDSNames(disable_spiffe_cert_validation=True)
    got = secrets_of(build_response(off, "1", request("ROOTCA"), upd))["ROOTCA"]
    assert x509.load_pem_x509_certificates(got.validation_context.trusted_ca.inline_bytes) == [ca.cert]
    with pytest.raises(GRPCError) as err:
        build_response(off, "1", request("ALL"), upd)
    assert err.value.status == Status.INTERNAL
    for value in (True, "true"):
        node = envoy_node(metadata={"disable_spiffe_cert_validation": value})
        got = secrets_of(build_response(NAMES, "1", request(TD_ID, node=node), upd))[TD_ID]
        assert got.validation_context.HasField("trusted_ca")
    # the node may turn it back on; an unparsable value is ignored
    on = secrets_of(build_response(off, "1", request(TD_ID, node=envoy_node(metadata={
        "disable_spiffe_cert_validation": False})), upd))[TD_ID]
    assert on.validation_context.HasField("custom_validator_config")
    odd = secrets_of(build_response(off, "1", request(TD_ID, node=envoy_node(metadata={
        "disable_spiffe_cert_validation": "maybe"})), upd))[TD_ID]
    assert odd.validation_context.HasField("trusted_ca")


def test_renamed_defaults_are_honoured(pki):
    _, _, upd = pki
    names = SDSNames("svid", "bundle", "everything")
    got = secrets_of(build_response(names, "1", request("svid", "bundle"), upd))
    assert set(got) == {"svid", "bundle"}
    assert set(secrets_of(build_response(names, "1", request("everything"), upd))) == {"everything"}
    with pytest.raises(GRPCError):
        build_response(names, "1", request("default"), upd)


def test_one_request_gets_one_bundle_name_and_one_name_per_identity_as_in_spire(pki):
    _, _, upd = pki
    for names in (("ROOTCA", "ALL"), (TD_ID, "ROOTCA"), (WORKLOAD_ID, "default")):
        with pytest.raises(GRPCError) as err:
            build_response(NAMES, "1", request(*names), upd)
        assert err.value.status == Status.INVALID_ARGUMENT
    # the default name is the first identity only
    got = secrets_of(build_response(NAMES, "1", request("spiffe://example.org/other", "default"), upd))
    assert chain_serial(got["default"]) == upd.identities[0].chain[0].serial_number


def chain_serial(s: secret_pb2.Secret) -> int:
    return x509.load_pem_x509_certificates(s.tls_certificate.certificate_chain.inline_bytes)[0].serial_number


def test_no_names_means_every_bundle_and_identity(pki):
    _, _, upd = pki
    resp = build_response(NAMES, "3", request(), upd)
    assert set(secrets_of(resp)) == {TD_ID, FEDERATED_TD, WORKLOAD_ID, "spiffe://example.org/other"}
    assert resp.version_info == "3" and len(resp.nonce) == 8 and resp.type_url == SECRET_TYPE_URL
    assert all(r.type_url == SECRET_TYPE_URL for r in resp.resources)


def test_unknown_names_are_invalid_argument_and_fetch_has_no_nonce(pki):
    _, _, upd = pki
    with pytest.raises(GRPCError) as err:
        build_response(NAMES, "1", request("default", "spiffe://example.org/not-mine", "zz"), upd)
    assert err.value.status == Status.INVALID_ARGUMENT
    assert err.value.message == ('workload is not authorized for the requested identities '
                                 '["spiffe://example.org/not-mine" "zz"]')
    nobody = WorkloadUpdate(TD_ID, upd.bundle)
    with pytest.raises(GRPCError):
        build_response(NAMES, "1", request("default"), nobody)
    fetched = build_response(NAMES, "", request("ROOTCA"), nobody)
    assert fetched.nonce == "" and fetched.version_info == ""


# --- versions and nonces --------------------------------------------------------------------------
def test_first_request_waits_for_an_update_then_acks_send_nothing():
    st = StreamState()
    assert st.on_request(request("default")) is False  # nothing cached yet
    assert st.on_update() is True and st.version_info == "1"
    st.sent(discovery_pb2.DiscoveryResponse(version_info="1", nonce="n1"))
    assert st.on_request(request("default", version_info="1", response_nonce="n1")) is False  # ACK
    assert st.on_update() is True and st.version_info == "2"  # a rotation is pushed


def test_nack_is_not_answered_with_the_same_version_and_stale_nonces_are_ignored():
    st = StreamState()
    st.on_update()
    assert st.on_request(request("default")) is True
    st.sent(discovery_pb2.DiscoveryResponse(version_info="1", nonce="n1"))
    nack = request("default", version_info="", response_nonce="n1")
    nack.error_detail.message = "bad key"
    assert st.on_request(nack) is False
    assert st.on_request(request("default", "ROOTCA", response_nonce="old")) is False  # stale
    assert st.on_request(request("default", "ROOTCA", version_info="1", response_nonce="n1")) is True  # new names


# --- over the socket --------------------------------------------------------------------------------
@pytest.fixture
async def sds_world():
    base = short_dir()
    w = new_world(base)
    w.server = await serve_workload_api(w.socket_path, w.service,
                                        extra_services=[SecretDiscoveryService(w.service, NAMES)])
    try:
        yield w
    finally:
        await close_workload_api(w.server, w.socket_path)
        shutil.rmtree(base, ignore_errors=True)


async def test_stream_secrets_acks_and_receives_a_rotation_without_asking(sds_world):
    w = sds_world
    entry = w.add_entry()
    ch = Channel(path=w.socket_path)
    try:
        async with SecretDiscoveryServiceStub(ch).StreamSecrets.open() as stream:
            await stream.send_message(request("default", "ROOTCA"))
            first = await asyncio.wait_for(stream.recv_message(), 10)
            assert set(secrets_of(first)) == {"default", "ROOTCA"} and first.version_info == "1"
            await stream.send_message(request("default", "ROOTCA", version_info="1", response_nonce=first.nonce))
            rotated = w.issue(entry)
            await w.cache.publish()
            second = await asyncio.wait_for(stream.recv_message(), 10)
            assert second.version_info == "2" and second.nonce != first.nonce
            leaf = x509.load_pem_x509_certificates(secrets_of(second)["default"].tls_certificate
                                                   .certificate_chain.inline_bytes)[0]
            assert leaf.serial_number == rotated.chain[0].serial_number
            # a NACK of version 2: logged, nothing resent
            nack = request("default", "ROOTCA", version_info="1", response_nonce=second.nonce)
            nack.error_detail.message = "rejected"
            await stream.send_message(nack)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.recv_message(), 1.0)
            # an unrelated cache change sends nothing either
            await w.cache.publish()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.recv_message(), 0.5)
            await stream.cancel()
    finally:
        ch.close()


async def test_caller_without_registration_gets_bundles_but_no_certificate(sds_world):
    w = sds_world
    w.add_entry(selectors=[uid_selector(os.getuid() + 4242)])
    ch = Channel(path=w.socket_path)
    stub = SecretDiscoveryServiceStub(ch)
    try:
        got = await stub.FetchSecrets(request("ROOTCA"))
        assert set(secrets_of(got)) == {"ROOTCA"}
        with pytest.raises(GRPCError) as err:
            await stub.FetchSecrets(request("default"))
        assert err.value.status == Status.INVALID_ARGUMENT
        with pytest.raises(GRPCError) as err:
            async with stub.StreamSecrets.open() as stream:
                await stream.send_message(request("default"))
                await asyncio.wait_for(stream.recv_message(), 10)
        assert err.value.status == Status.INVALID_ARGUMENT
        assert '["default"]' in err.value.message
        everything = await stub.FetchSecrets(request())
        assert set(secrets_of(everything)) == {TD_ID}
    finally:
        ch.close()


async def test_fetch_secrets_answers_once_and_delta_is_unimplemented(sds_world):
    w = sds_world
    w.add_entry()
    ch = Channel(path=w.socket_path)
    stub = SecretDiscoveryServiceStub(ch)
    try:
        got = await stub.FetchSecrets(request(WORKLOAD_ID, "ALL"))
        assert set(secrets_of(got)) == {WORKLOAD_ID, "ALL"} and got.version_info == "" and got.nonce == ""
        with pytest.raises(GRPCError) as err:
            async with stub.DeltaSecrets.open() as stream:
                await stream.send_message(discovery_pb2.DeltaDiscoveryRequest(), end=True)
                await stream.recv_message()
        assert err.value.status == Status.UNIMPLEMENTED
    finally:
        ch.close()


async def test_streams_end_with_unavailable_when_the_agent_stops(sds_world):
    w = sds_world
    w.add_entry()
    ch = Channel(path=w.socket_path)
    try:
        with pytest.raises(GRPCError) as err:
            async with SecretDiscoveryServiceStub(ch).StreamSecrets.open() as stream:
                await stream.send_message(request("default"))
                await asyncio.wait_for(stream.recv_message(), 10)
                await w.service.shutdown()
                await asyncio.wait_for(stream.recv_message(), 10)
        assert err.value.status == Status.UNAVAILABLE
    finally:
        ch.close()
