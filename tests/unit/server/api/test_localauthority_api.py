"""spire.api.server.localauthority.v1.LocalAuthority over real gRPC against an in-process server:
prepare → activate → taint → revoke of the X.509 CA and of the JWT key on the CA manager's
slots, with SPIRE's refusals (codes and words) at each step and the bundle as agents see it."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.common.x509util import authority_id
from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from spire_py.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as pb
from tests.unit.helpers.inprocess_server import Handle


def api(server: Handle) -> localauthority_grpc.LocalAuthorityStub:
    return server.admin_stub(localauthority_grpc.LocalAuthorityStub)


async def _refused(call: object, code: Status, message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await call  # type: ignore[misc]
    assert (exc.value.status, exc.value.message) == (code, message)


async def _bundle(server: Handle) -> bundle_pb2.GetBundleRequest:
    return await server.admin_stub(bundle_grpc.BundleStub).GetBundle(bundle_pb2.GetBundleRequest())


def _x509_ids(b: object) -> dict[str, bool]:
    from cryptography import x509

    return {authority_id(x509.load_der_x509_certificate(a.asn1)): a.tainted
            for a in b.x509_authorities}  # type: ignore[attr-defined]


async def test_x509_prepare_activate_taint_revoke(server: Handle) -> None:
    la = api(server)
    state = await la.GetX509AuthorityState(pb.GetX509AuthorityStateRequest())
    first = state.active.authority_id
    assert first and state.active.expires_at > 0 and not state.HasField("prepared") and not state.HasField("old")
    assert server.server.core.ca.manager.current_x509.authority_id == first  # type: ignore[union-attr]

    await _refused(la.ActivateX509Authority(pb.ActivateX509AuthorityRequest()), Status.INVALID_ARGUMENT,
                   "no authority ID provided")
    prepared = (await la.PrepareX509Authority(pb.PrepareX509AuthorityRequest())).prepared_authority
    assert prepared.authority_id not in ("", first) and not prepared.upstream_authority_subject_key_id
    assert _x509_ids(await _bundle(server)) == {first: False, prepared.authority_id: False}  # published at once
    state = await la.GetX509AuthorityState(pb.GetX509AuthorityStateRequest())
    assert (state.active.authority_id, state.prepared.authority_id) == (first, prepared.authority_id)
    await _refused(la.TaintX509Authority(pb.TaintX509AuthorityRequest(authority_id=prepared.authority_id)),
                   Status.INVALID_ARGUMENT, "only Old local authorities can be tainted: "
                                            "unsupported local authority status: PREPARED")
    await _refused(la.ActivateX509Authority(pb.ActivateX509AuthorityRequest(authority_id="nope")),
                   Status.INVALID_ARGUMENT, "unexpected authority ID")

    activated = (await la.ActivateX509Authority(pb.ActivateX509AuthorityRequest(
        authority_id=prepared.authority_id))).activated_authority
    assert activated.authority_id == prepared.authority_id
    state = await la.GetX509AuthorityState(pb.GetX509AuthorityStateRequest())
    assert (state.active.authority_id, state.old.authority_id) == (prepared.authority_id, first)

    await _refused(la.TaintX509Authority(pb.TaintX509AuthorityRequest(authority_id=prepared.authority_id)),
                   Status.INVALID_ARGUMENT, "unable to taint current local authority")
    await _refused(la.RevokeX509Authority(pb.RevokeX509AuthorityRequest(authority_id=first)),
                   Status.INTERNAL, "failed to revoke X.509 authority: rpc error: code = InvalidArgument "
                                    "desc = it is not possible to revoke an untainted root CA")
    tainted = (await la.TaintX509Authority(pb.TaintX509AuthorityRequest(authority_id=first))).tainted_authority
    assert tainted.authority_id == first
    b = await _bundle(server)
    assert _x509_ids(b) == {first: True, prepared.authority_id: False}
    await _refused(la.TaintX509Authority(pb.TaintX509AuthorityRequest(authority_id=first)),
                   Status.INTERNAL, "failed to taint X.509 authority: rpc error: code = InvalidArgument "
                                    "desc = root CA is already tainted")

    revoked = (await la.RevokeX509Authority(pb.RevokeX509AuthorityRequest(authority_id=first))).revoked_authority
    assert revoked.authority_id == first
    after = await _bundle(server)
    assert _x509_ids(after) == {prepared.authority_id: False} and after.sequence_number > b.sequence_number
    # The CA no longer publishes it: the next maintenance append does not bring it back.
    await server.server._publish_bundle()  # type: ignore[attr-defined]
    assert _x509_ids(await _bundle(server)) == {prepared.authority_id: False}
    await _refused(la.RevokeX509Authority(pb.RevokeX509AuthorityRequest(authority_id=prepared.authority_id)),
                   Status.INVALID_ARGUMENT, "invalid authority ID: unable to use current authority")


async def test_jwt_prepare_activate_taint_revoke(server: Handle) -> None:
    la = api(server)
    first = (await la.GetJWTAuthorityState(pb.GetJWTAuthorityStateRequest())).active.authority_id
    prepared = (await la.PrepareJWTAuthority(pb.PrepareJWTAuthorityRequest())).prepared_authority
    assert {k.key_id for k in (await _bundle(server)).jwt_authorities} == {first, prepared.authority_id}
    await _refused(la.RevokeJWTAuthority(pb.RevokeJWTAuthorityRequest(authority_id=prepared.authority_id)),
                   Status.INVALID_ARGUMENT, "invalid authority ID: unable to use a prepared key")
    await la.ActivateJWTAuthority(pb.ActivateJWTAuthorityRequest(authority_id=prepared.authority_id))
    state = await la.GetJWTAuthorityState(pb.GetJWTAuthorityStateRequest())
    assert (state.active.authority_id, state.old.authority_id) == (prepared.authority_id, first)
    await _refused(la.RevokeJWTAuthority(pb.RevokeJWTAuthorityRequest(authority_id=first)), Status.INTERNAL,
                   "failed to revoke JWT authority: rpc error: code = InvalidArgument "
                   "desc = it is not possible to revoke an untainted key")
    await la.TaintJWTAuthority(pb.TaintJWTAuthorityRequest(authority_id=first))
    keys = {k.key_id: k.tainted for k in (await _bundle(server)).jwt_authorities}
    assert keys == {first: True, prepared.authority_id: False}
    await la.RevokeJWTAuthority(pb.RevokeJWTAuthorityRequest(authority_id=first))
    await server.server._publish_bundle()  # type: ignore[attr-defined]
    assert {k.key_id for k in (await _bundle(server)).jwt_authorities} == {prepared.authority_id}
    await _refused(la.RevokeJWTAuthority(pb.RevokeJWTAuthorityRequest(authority_id="unknown")),
                   Status.INVALID_ARGUMENT, "invalid authority ID: no JWT authority found with provided authority ID")


async def test_upstream_methods_need_an_upstream_authority_and_wit_is_unimplemented(server: Handle) -> None:
    la = api(server)
    await _refused(la.TaintX509UpstreamAuthority(pb.TaintX509UpstreamAuthorityRequest(subject_key_id="ab")),
                   Status.FAILED_PRECONDITION, "upstream authority is not configured")
    await _refused(la.RevokeX509UpstreamAuthority(pb.RevokeX509UpstreamAuthorityRequest(subject_key_id="ab")),
                   Status.FAILED_PRECONDITION, "upstream authority is not configured")
    await _refused(la.GetWITAuthorityState(pb.GetWITAuthorityStateRequest()), Status.UNIMPLEMENTED,
                   "WIT-SVID functionality is not yet implemented")


async def test_an_anonymous_tls_caller_is_refused(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await server.tls_stub(localauthority_grpc.LocalAuthorityStub).GetX509AuthorityState(
            pb.GetX509AuthorityStateRequest())
    assert exc.value.status == Status.PERMISSION_DENIED


async def test_jwt_methods_are_unimplemented_when_jwt_svids_are_disabled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.helpers.inprocess_server import running_server

    async with running_server(tmp_path, extra_server="disable_jwt_svids = true") as h:
        await _refused(api(h).GetJWTAuthorityState(pb.GetJWTAuthorityStateRequest()), Status.UNIMPLEMENTED,
                       "JWT functionality is disabled")
        state = await api(h).GetX509AuthorityState(pb.GetX509AuthorityStateRequest())
        assert state.active.authority_id
