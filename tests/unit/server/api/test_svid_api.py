"""spire.api.server.svid.v1.SVID over real gRPC against an in-process server: minting for
admins, batch signing and JWT-SVIDs for an attested agent, a downstream CA; and the CSR
checks of server/api/convert.py (parse_csr) with the SPIFFE ID check of MintJWTSVID."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.common.tls import spiffe_id_of
from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2
from spire_py.proto.spire.api.types import selector_pb2
from tests.unit.helpers.inprocess_server import TD, Handle, csr_for, spiffe_id

WORKLOAD = f"spiffe://{TD}/workload"


def api(server: Handle) -> svid_grpc.SVIDStub:
    return server.admin_stub(svid_grpc.SVIDStub)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def badly_signed_csr() -> bytes:
    der = bytearray(csr_for(new_key(), WORKLOAD))
    der[-1] ^= 0x01  # the last byte of the ECDSA signature's s: still DER, no longer a valid signature
    return bytes(der)


# --- convert.parse_csr: the three refusals, on a single call and as batch items ---------------

CSR_REFUSALS = [
    (b"", "malformed param: missing CSR"),
    (b"not DER", "malformed CSR: "),
    (badly_signed_csr(), "malformed CSR: invalid signature"),
]


@pytest.mark.parametrize("csr,message", CSR_REFUSALS, ids=["missing", "not-der", "bad-signature"])
async def test_mint_x509_svid_refuses_a_bad_csr(server: Handle, csr: bytes, message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).MintX509SVID(svid_pb2.MintX509SVIDRequest(csr=csr))
    assert exc.value.status == Status.INVALID_ARGUMENT and exc.value.message.startswith(message), exc.value.message


@pytest.mark.parametrize("csr,message", [
    (csr_for(new_key()), "CSR must have exactly one URI SAN"),
    (csr_for(new_key(), WORKLOAD, WORKLOAD + "2"), "CSR must have exactly one URI SAN"),
    (csr_for(new_key(), "spiffe://other.org/w"),
     'CSR URI SAN is invalid: "spiffe://other.org/w" is not a member of trust domain "example.org"'),
    (csr_for(new_key(), "https://example.org/w"), "CSR URI SAN is invalid: "),
])
async def test_mint_x509_svid_refuses_a_csr_without_one_member_uri(server: Handle, csr: bytes, message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).MintX509SVID(svid_pb2.MintX509SVIDRequest(csr=csr))
    assert exc.value.status == Status.INVALID_ARGUMENT and exc.value.message.startswith(message), exc.value.message


async def test_mint_x509_svid_refuses_a_negative_ttl(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).MintX509SVID(svid_pb2.MintX509SVIDRequest(csr=csr_for(new_key(), WORKLOAD), ttl=-1))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "ttl cannot be negative")


@pytest.mark.parametrize("req,message", [
    (svid_pb2.MintJWTSVIDRequest(audience=["a"]), "invalid SPIFFE ID: request must specify SPIFFE ID"),
    (svid_pb2.MintJWTSVIDRequest(id=spiffe_id("/w", "other.org"), audience=["a"]),
     'invalid SPIFFE ID: "spiffe://other.org/w" is not a member of trust domain "example.org"'),
    (svid_pb2.MintJWTSVIDRequest(id=spiffe_id("w"), audience=["a"]),
     'invalid SPIFFE ID: SPIFFE ID path "w": path must start with "/"'),
    (svid_pb2.MintJWTSVIDRequest(id=spiffe_id("/w")), "at least one audience is required"),
    (svid_pb2.MintJWTSVIDRequest(id=spiffe_id("/w"), audience=["a", ""]), "audience cannot be empty"),
], ids=["no-id", "other-td", "bad-path", "no-audience", "empty-audience"])
async def test_mint_jwt_svid_refuses_bad_input(server: Handle, req: svid_pb2.MintJWTSVIDRequest, message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).MintJWTSVID(req)
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, message)


# --- the main path of each RPC ----------------------------------------------------------------

async def test_mint_x509_and_jwt_svids(server: Handle) -> None:
    key = new_key()
    resp = await api(server).MintX509SVID(svid_pb2.MintX509SVIDRequest(csr=csr_for(key, WORKLOAD), ttl=300))
    leaf = x509.load_der_x509_certificate(resp.svid.cert_chain[0])
    assert str(spiffe_id_of(leaf)) == WORKLOAD and resp.svid.id.path == "/workload"
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()

    jwt = await api(server).MintJWTSVID(svid_pb2.MintJWTSVIDRequest(id=spiffe_id("/workload"), audience=["db"]))
    claims = pyjwt.decode(jwt.svid.token, options={"verify_signature": False})
    assert claims["sub"] == WORKLOAD and claims["aud"] in ("db", ["db"]) and jwt.svid.expires_at == claims["exp"]

    with pytest.raises(GRPCError) as exc:
        await api(server).MintWITSVID(svid_pb2.MintWITSVIDRequest())
    assert exc.value.status == Status.UNIMPLEMENTED


async def test_an_agent_signs_its_entries_in_a_batch_each_item_with_its_status(server: Handle) -> None:
    agent_id, chain, key = await server.attest_agent("api-svid")
    created = await server.admin_stub(entry_grpc.EntryStub).BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(
        entries=[types_entry_pb2.Entry(spiffe_id=spiffe_id("/workload"),
                                       parent_id=spiffe_id(agent_id.removeprefix(f"spiffe://{TD}")),
                                       selectors=[selector_pb2.Selector(type="unix", value="uid:1000")])]))
    entry_id = created.results[0].entry.id
    as_agent = server.tls_stub(svid_grpc.SVIDStub, chain, key)

    P = svid_pb2.NewX509SVIDParams
    resp = await as_agent.BatchNewX509SVID(svid_pb2.BatchNewX509SVIDRequest(params=[
        P(entry_id=entry_id, csr=csr_for(new_key())),
        P(csr=csr_for(new_key())),
        P(entry_id="not-mine", csr=csr_for(new_key())),
        P(entry_id=entry_id),
        P(entry_id=entry_id, csr=b"not DER"),
        P(entry_id=entry_id, csr=badly_signed_csr()),
    ]))
    got = [(r.status.code, r.status.message) for r in resp.results]
    assert got[0] == (0, "OK") and resp.results[0].svid.id.path == "/workload"
    assert got[1:4] == [(Status.INVALID_ARGUMENT.value, "missing entry ID"),
                        (Status.NOT_FOUND.value, "entry not found or not authorized"),
                        (Status.INVALID_ARGUMENT.value, "missing CSR")]
    assert got[4][0] == Status.INVALID_ARGUMENT.value and got[4][1].startswith("malformed CSR: ")
    assert got[5] == (Status.INVALID_ARGUMENT.value, "malformed CSR: invalid signature")

    jwt = await as_agent.NewJWTSVID(svid_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=["db"]))
    assert pyjwt.decode(jwt.svid.token, options={"verify_signature": False})["sub"] == WORKLOAD
    with pytest.raises(GRPCError) as exc:
        await as_agent.NewJWTSVID(svid_pb2.NewJWTSVIDRequest(audience=["db"]))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "missing entry ID")
    with pytest.raises(GRPCError) as exc:
        await as_agent.BatchNewWITSVID(svid_pb2.BatchNewWITSVIDRequest())
    assert exc.value.status == Status.UNIMPLEMENTED


async def test_a_downstream_workload_gets_an_intermediate_ca(server: Handle) -> None:
    downstream = server.tls_stub(svid_grpc.SVIDStub, *await server.downstream_svid())
    with pytest.raises(GRPCError) as exc:
        await downstream.NewDownstreamX509CA(svid_pb2.NewDownstreamX509CARequest())
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "malformed param: missing CSR")
    resp = await downstream.NewDownstreamX509CA(svid_pb2.NewDownstreamX509CARequest(csr=csr_for(new_key())))
    ca = x509.load_der_x509_certificate(resp.ca_cert_chain[0])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert len(resp.x509_authorities) >= 1
