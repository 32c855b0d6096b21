"""spire.api.server.bundle.v1.Bundle over real gRPC against an in-process server: each RPC's
main path, and the bundle validations of server/api/convert.py (trust domain, X.509 and
JWT authorities) as the batch items and the single calls answer them."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.proto.spire.api.types import bundle_pb2 as types_pb2
from tests.unit.helpers.inprocess_server import TD, Handle

FED = "fed.example"


def ca_der(cn: str = "federated root") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def jwt_key(kid: str = "k1") -> types_pb2.JWTKey:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return types_pb2.JWTKey(public_key=der, key_id=kid, expires_at=2_000_000_000)


def bundle(td: str = FED, **kw: object) -> types_pb2.Bundle:
    kw.setdefault("x509_authorities", [types_pb2.X509Certificate(asn1=ca_der())])
    return types_pb2.Bundle(trust_domain=td, **kw)  # type: ignore[arg-type]


def api(server: Handle) -> bundle_grpc.BundleStub:
    return server.admin_stub(bundle_grpc.BundleStub)


# --- convert.bundle_from_proto: each refusal, per batch item ----------------------------------

INVALID_BUNDLES = [
    (bundle("bad td!"), 'invalid trust domain: trust domain "bad td!": characters are limited to lowercase letters, '
                        "numbers, dots, dashes, and underscores"),
    (bundle(x509_authorities=[types_pb2.X509Certificate(asn1=b"not DER")]), "invalid X.509 authority: "),
    (bundle(jwt_authorities=[types_pb2.JWTKey(public_key=jwt_key().public_key)]),
     "invalid JWT authority: missing key ID"),
    (bundle(jwt_authorities=[types_pb2.JWTKey(public_key=b"not a key", key_id="k")]), "invalid JWT authority: "),
    (bundle(TD), "creating a federated bundle for the server's own trust domain is not allowed"),
]


@pytest.mark.parametrize("method", ["BatchCreateFederatedBundle", "BatchUpdateFederatedBundle",
                                    "BatchSetFederatedBundle"])
async def test_batch_writes_refuse_each_invalid_bundle_with_convert_s_message(server: Handle, method: str) -> None:
    Request = getattr(bundle_pb2, method + "Request")
    resp = await getattr(api(server), method)(Request(bundle=[b for b, _ in INVALID_BUNDLES]))
    assert len(resp.results) == len(INVALID_BUNDLES)
    for (_, message), r in zip(INVALID_BUNDLES, resp.results):
        assert r.status.code == Status.INVALID_ARGUMENT.value
        assert r.status.message.startswith(f"failed to convert bundle: {message}"), r.status.message
    assert (await api(server).CountBundles(bundle_pb2.CountBundlesRequest())).count == 1  # our own only


async def test_append_and_publish_refuse_invalid_authorities(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).AppendBundle(bundle_pb2.AppendBundleRequest(
            x509_authorities=[types_pb2.X509Certificate(asn1=b"junk")]))
    assert exc.value.status == Status.INVALID_ARGUMENT and exc.value.message.startswith("invalid X.509 authority: ")
    downstream = server.tls_stub(bundle_grpc.BundleStub, *await server.downstream_svid())
    with pytest.raises(GRPCError) as exc:
        await downstream.PublishJWTAuthority(bundle_pb2.PublishJWTAuthorityRequest(
            jwt_authority=types_pb2.JWTKey(public_key=jwt_key().public_key)))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "invalid JWT authority: missing key ID")
    with pytest.raises(GRPCError) as exc:
        await downstream.PublishJWTAuthority(bundle_pb2.PublishJWTAuthorityRequest())
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "missing JWT authority")


@pytest.mark.parametrize("td,message", [
    ("bad td!", 'trust domain argument is not valid: trust domain "bad td!": characters are limited'),
    (TD, "getting a federated bundle for the server's own trust domain is not allowed"),
])
async def test_get_federated_bundle_refuses_a_bad_or_own_trust_domain(server: Handle, td: str, message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).GetFederatedBundle(bundle_pb2.GetFederatedBundleRequest(trust_domain=td))
    assert exc.value.status == Status.INVALID_ARGUMENT and exc.value.message.startswith(message)


# --- the main path of each RPC ----------------------------------------------------------------

async def test_own_bundle_get_append_publish(server: Handle) -> None:
    own = await api(server).GetBundle(bundle_pb2.GetBundleRequest())
    assert own.trust_domain == TD and len(own.x509_authorities) == 1
    extra = ca_der("extra root")
    appended = await api(server).AppendBundle(bundle_pb2.AppendBundleRequest(
        x509_authorities=[types_pb2.X509Certificate(asn1=extra)]))
    assert [c.asn1 for c in appended.x509_authorities][-1] == extra and len(appended.x509_authorities) == 2
    key = jwt_key("published")
    downstream = server.tls_stub(bundle_grpc.BundleStub, *await server.downstream_svid())
    published = await downstream.PublishJWTAuthority(bundle_pb2.PublishJWTAuthorityRequest(jwt_authority=key))
    assert "published" in [k.key_id for k in published.jwt_authorities]
    # Anyone may read the bundle, even without a client certificate.
    anonymous = await server.tls_stub(bundle_grpc.BundleStub).GetBundle(bundle_pb2.GetBundleRequest())
    assert "published" in [k.key_id for k in anonymous.jwt_authorities]
    with pytest.raises(GRPCError) as exc:
        await downstream.PublishWITAuthority(bundle_pb2.PublishWITAuthorityRequest())
    assert exc.value.status == Status.UNIMPLEMENTED


async def test_federated_bundles_create_get_list_update_set_delete(server: Handle) -> None:
    created = await api(server).BatchCreateFederatedBundle(bundle_pb2.BatchCreateFederatedBundleRequest(
        bundle=[bundle(), bundle()]))
    assert [(r.status.code, r.status.message) for r in created.results] == [
        (0, "OK"), (Status.ALREADY_EXISTS.value, "bundle already exists")]
    assert created.results[0].bundle.trust_domain == FED

    got = await api(server).GetFederatedBundle(bundle_pb2.GetFederatedBundleRequest(trust_domain=FED))
    assert got.trust_domain == FED and len(got.x509_authorities) == 1
    listed = await api(server).ListFederatedBundles(bundle_pb2.ListFederatedBundlesRequest())
    assert [b.trust_domain for b in listed.bundles] == [FED]
    assert (await api(server).CountBundles(bundle_pb2.CountBundlesRequest())).count == 2

    updated = await api(server).BatchUpdateFederatedBundle(bundle_pb2.BatchUpdateFederatedBundleRequest(
        bundle=[bundle(refresh_hint=60), bundle("nowhere.example")]))
    assert updated.results[0].status.code == 0 and updated.results[0].bundle.refresh_hint == 60
    assert (updated.results[1].status.code, updated.results[1].status.message) == (
        Status.NOT_FOUND.value, "bundle not found")

    set_ = await api(server).BatchSetFederatedBundle(bundle_pb2.BatchSetFederatedBundleRequest(
        bundle=[bundle("other.example")]))
    assert set_.results[0].status.code == 0 and set_.results[0].bundle.trust_domain == "other.example"

    deleted = await api(server).BatchDeleteFederatedBundle(bundle_pb2.BatchDeleteFederatedBundleRequest(
        trust_domains=[FED, "other.example", "nowhere.example"]))
    assert [(r.trust_domain, r.status.code) for r in deleted.results] == [
        (FED, 0), ("other.example", 0), ("nowhere.example", Status.NOT_FOUND.value)]
    with pytest.raises(GRPCError) as exc:
        await api(server).GetFederatedBundle(bundle_pb2.GetFederatedBundleRequest(trust_domain=FED))
    assert (exc.value.status, exc.value.message) == (Status.NOT_FOUND, "bundle not found")


async def test_the_bundle_sequence_is_bumped_by_each_authority_appended(server: Handle) -> None:
    # As SPIRE: the X.509 CA creates the bundle, the JWT key's append makes it 1, each later append bumps it.
    first = await api(server).GetBundle(bundle_pb2.GetBundleRequest())
    assert first.sequence_number == 1
    await api(server).AppendBundle(bundle_pb2.AppendBundleRequest(jwt_authorities=[jwt_key("extra")]))
    again = await api(server).GetBundle(bundle_pb2.GetBundleRequest())
    assert again.sequence_number == 2
