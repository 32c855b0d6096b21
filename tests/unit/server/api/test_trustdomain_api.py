"""spire.api.server.trustdomain.v1.TrustDomain over real gRPC against an in-process server:
relationships created, listed, read, updated and deleted with SPIRE's per-item statuses,
and RefreshBundle fetching a loopback bundle endpoint into the datastore."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc, trustdomain_pb2 as pb
from spire_py.proto.spire.api.types import bundle_pb2, federationrelationship_pb2 as fr_pb2
from tests.unit.helpers.federation import bundle_of, make_ca, make_svid, serving_endpoint
from tests.unit.helpers.inprocess_server import TD, Handle

OTHER = "other.test"


def spiffe_rel(td: str = OTHER, url: str = "https://127.0.0.1:1", with_bundle: bytes = b"") -> fr_pb2.FederationRelationship:
    fr = fr_pb2.FederationRelationship(trust_domain=td, bundle_endpoint_url=url,
                                       https_spiffe=fr_pb2.HTTPSSPIFFEProfile(endpoint_spiffe_id=f"spiffe://{td}/spire/server"))
    if with_bundle:
        fr.trust_domain_bundle.CopyFrom(bundle_pb2.Bundle(trust_domain=td, x509_authorities=[bundle_pb2.X509Certificate(asn1=with_bundle)]))
    return fr


def stub(server: Handle) -> trustdomain_grpc.TrustDomainStub:
    return server.admin_stub(trustdomain_grpc.TrustDomainStub)


async def test_relationships_are_created_listed_read_updated_and_deleted(server: Handle) -> None:
    der = make_ca().cert.public_bytes(serialization.Encoding.DER)
    web = fr_pb2.FederationRelationship(trust_domain="web.test", bundle_endpoint_url="https://web.test/bundle",
                                        https_web=fr_pb2.HTTPSWebProfile())
    resp = await stub(server).BatchCreateFederationRelationship(pb.BatchCreateFederationRelationshipRequest(
        federation_relationships=[spiffe_rel(with_bundle=der), web]))
    assert [r.status.code for r in resp.results] == [0, 0]
    assert resp.results[0].federation_relationship.trust_domain_bundle.x509_authorities[0].asn1 == der
    listed = await stub(server).ListFederationRelationships(pb.ListFederationRelationshipsRequest())
    assert [f.trust_domain for f in listed.federation_relationships] == [OTHER, "web.test"]
    assert listed.federation_relationships[1].WhichOneof("bundle_endpoint_profile") == "https_web"
    got = await stub(server).GetFederationRelationship(pb.GetFederationRelationshipRequest(trust_domain=OTHER))
    assert got.https_spiffe.endpoint_spiffe_id == f"spiffe://{OTHER}/spire/server"

    upd = await stub(server).BatchUpdateFederationRelationship(pb.BatchUpdateFederationRelationshipRequest(
        federation_relationships=[fr_pb2.FederationRelationship(trust_domain=OTHER, bundle_endpoint_url="https://moved.test")],
        input_mask=fr_pb2.FederationRelationshipMask(bundle_endpoint_url=True)))
    assert upd.results[0].status.code == 0
    assert upd.results[0].federation_relationship.bundle_endpoint_url == "https://moved.test"
    assert upd.results[0].federation_relationship.https_spiffe.endpoint_spiffe_id  # untouched by the mask

    deleted = await stub(server).BatchDeleteFederationRelationship(pb.BatchDeleteFederationRelationshipRequest(
        trust_domains=[OTHER, OTHER, ""]))
    assert [(r.trust_domain, r.status.code, r.status.message) for r in deleted.results] == [
        (OTHER, 0, "OK"), (OTHER, Status.NOT_FOUND.value, "federation relationship not found"),
        ("", Status.INVALID_ARGUMENT.value, "missing trust domain")]
    with pytest.raises(GRPCError) as err:
        await stub(server).GetFederationRelationship(pb.GetFederationRelationshipRequest(trust_domain=OTHER))
    assert (err.value.status, err.value.message) == (Status.NOT_FOUND, "federation relationship does not exist")


@pytest.mark.parametrize("item, message", [
    (spiffe_rel(TD), "unable to create federation relationship for server trust domain"),
    (spiffe_rel(url="http://other.test"), "failed to convert federation relationship: bundle endpoint URL must use the https scheme"),
    (spiffe_rel(url="https://u:p@other.test"), "failed to convert federation relationship: bundle endpoint URL must not contain user info"),
    (fr_pb2.FederationRelationship(trust_domain=OTHER, bundle_endpoint_url="https://x"),
     "failed to convert federation relationship: unsupported bundle endpoint profile type: <nil>"),
    (fr_pb2.FederationRelationship(trust_domain=OTHER, bundle_endpoint_url="https://x",
                                   https_spiffe=fr_pb2.HTTPSSPIFFEProfile(endpoint_spiffe_id="not-an-id")),
     "failed to convert federation relationship: failed to parse endpoint SPIFFE ID"),
])
async def test_invalid_relationships_get_invalid_argument(server: Handle, item: fr_pb2.FederationRelationship, message: str) -> None:
    resp = await stub(server).BatchCreateFederationRelationship(pb.BatchCreateFederationRelationshipRequest(
        federation_relationships=[item]))
    assert resp.results[0].status.code == Status.INVALID_ARGUMENT.value
    assert resp.results[0].status.message.startswith(message)


async def test_refresh_bundle_fetches_the_endpoint_into_the_datastore(server: Handle) -> None:
    with pytest.raises(GRPCError) as err:
        await stub(server).RefreshBundle(pb.RefreshBundleRequest(trust_domain="unknown.test"))
    assert (err.value.status, err.value.message) == (Status.NOT_FOUND, 'no relationship with trust domain "unknown.test"')

    old_ca, new_ca = make_ca("old"), make_ca("new")
    served = [bundle_of(OTHER, old_ca.cert, new_ca.cert, sequence=2)]
    async with serving_endpoint(served, make_svid(old_ca, f"spiffe://{OTHER}/spire/server"), refresh_hint=60) as ep:
        rel = spiffe_rel(url=f"https://127.0.0.1:{ep.port}",
                         with_bundle=old_ca.cert.public_bytes(serialization.Encoding.DER))
        await stub(server).BatchCreateFederationRelationship(pb.BatchCreateFederationRelationshipRequest(
            federation_relationships=[rel]))
        await stub(server).RefreshBundle(pb.RefreshBundleRequest(trust_domain=OTHER))
    stored = server.datastore.fetch_bundle(f"spiffe://{OTHER}")
    assert len(stored.x509_authorities) == 2 and stored.refresh_hint == 60 and stored.sequence_number == 2


async def test_refresh_bundle_from_an_endpoint_with_the_wrong_id_is_internal(server: Handle) -> None:
    ca = make_ca()
    async with serving_endpoint([bundle_of(OTHER, ca.cert)], make_svid(ca, f"spiffe://{OTHER}/impostor")) as ep:
        await stub(server).BatchCreateFederationRelationship(pb.BatchCreateFederationRelationshipRequest(
            federation_relationships=[spiffe_rel(url=f"https://127.0.0.1:{ep.port}",
                                                 with_bundle=ca.cert.public_bytes(serialization.Encoding.DER))]))
        with pytest.raises(GRPCError) as err:
            await stub(server).RefreshBundle(pb.RefreshBundleRequest(trust_domain=OTHER))
    assert err.value.status == Status.INTERNAL
    assert 'unexpected ID "spiffe://other.test/impostor"' in (err.value.message or "")
