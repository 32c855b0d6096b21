"""Our .proto files speak the same wire protocol as SPIRE and the SPIFFE Workload API.

Reference facts are taken from spiffe/spire-api-sdk (proto/spire/api/...) and
go-spiffe v2 proto/spiffe/workload/workload.proto; py-spiffe's own generated
module is used as a second, independent copy of the Workload API.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor

from spire_py.proto import generate
from spire_py.proto.grpc.health.v1 import health_grpc, health_pb2
from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.proto.spire.api.server.bundle.v1 import bundle_pb2
from spire_py.proto.spire.api.server.entry.v1 import entry_pb2
from spire_py.proto.spire.api.server.svid.v1 import svid_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2
from spire_py.proto.spire.api.types import status_pb2
from spire_py.proto.workload import workload_grpc, workload_pb2

F = FieldDescriptor


def _field_shape(field: FieldDescriptor) -> tuple:
    """Everything about a field that shows on the wire or in generated APIs."""
    type_name = None
    if field.message_type is not None:
        type_name = field.message_type.name
    elif field.enum_type is not None:
        type_name = field.enum_type.name
    oneof = field.containing_oneof.name if field.containing_oneof is not None else None
    return (field.number, field.type, field.is_repeated, field.is_required, type_name, oneof)


def _message_shape(desc: Descriptor) -> dict:
    shape = {f.name: _field_shape(f) for f in desc.fields}
    for nested in desc.nested_types:
        shape[f"<{nested.name}>"] = _message_shape(nested)
    for enum in desc.enum_types:
        shape[f"<enum {enum.name}>"] = {v.name: v.number for v in enum.values}
    return shape


def _service_shape(svc: ServiceDescriptor) -> dict:
    return {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in svc.methods
    }


def _fields(desc: Descriptor) -> dict[str, int]:
    return {f.name: f.number for f in desc.fields}


def _grpclib_paths(base_cls: type, svc: ServiceDescriptor) -> set[str]:
    # __mapping__ only reads the handler attributes, so a stand-in self will do.
    handlers = SimpleNamespace(**{m.name: None for m in svc.methods})
    return set(base_cls.__mapping__(handlers))


# --- (a) the committed modules are what `make proto` produces -----------------


def test_generated_modules_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spire_py.proto.generate", "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_proto_directory_is_a_package() -> None:
    for proto in generate.proto_files():
        for d in proto.parents:
            if d == generate.PROTO_DIR.parent:
                break
            assert (d / "__init__.py").exists(), d


# --- (b) Workload API matches py-spiffe's copy -------------------------------

# py-spiffe keeps its generated module private; it is a test dependency.
from spiffe._proto import workload_pb2 as spiffe_workload_pb2  # noqa: E402
from spiffe._proto import workload_pb2_grpc as spiffe_workload_grpc  # noqa: E402


def test_workload_messages_match_py_spiffe() -> None:
    theirs = spiffe_workload_pb2.DESCRIPTOR.message_types_by_name
    ours = workload_pb2.DESCRIPTOR.message_types_by_name
    assert set(theirs) <= set(ours)
    for name, desc in theirs.items():
        assert _message_shape(ours[name]) == _message_shape(desc), name


def test_workload_service_matches_py_spiffe() -> None:
    theirs = spiffe_workload_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    ours = workload_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    assert _service_shape(ours) == _service_shape(theirs)


def test_workload_grpc_paths_match_py_spiffe() -> None:
    class RecordingChannel:
        def __init__(self) -> None:
            self.paths: set[str] = set()

        def _record(self, path: str, *args: object, **kwargs: object) -> None:
            self.paths.add(path)

        unary_unary = unary_stream = stream_unary = stream_stream = _record

    channel = RecordingChannel()
    spiffe_workload_grpc.SpiffeWorkloadAPIStub(channel)
    svc = workload_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    assert _grpclib_paths(workload_grpc.SpiffeWorkloadAPIBase, svc) == channel.paths
    assert "/SpiffeWorkloadAPI/FetchX509SVID" in channel.paths


def test_workload_messages_round_trip_with_py_spiffe() -> None:
    ours = workload_pb2.X509SVIDResponse(
        svids=[workload_pb2.X509SVID(spiffe_id="spiffe://example.org/w", x509_svid=b"c", x509_svid_key=b"k", bundle=b"b", hint="internal")],
        crl=[b"crl"],
        federated_bundles={"spiffe://other.org": b"fb"},
    )
    theirs = spiffe_workload_pb2.X509SVIDResponse.FromString(ours.SerializeToString())
    assert theirs.svids[0].spiffe_id == "spiffe://example.org/w"
    assert theirs.svids[0].hint == "internal"
    assert dict(theirs.federated_bundles) == {"spiffe://other.org": b"fb"}
    assert workload_pb2.X509SVIDResponse.FromString(theirs.SerializeToString()) == ours


def test_health_matches_grpclib_standard_copy() -> None:
    from grpclib.health.v1 import health_grpc as std_grpc
    from grpclib.health.v1 import health_pb2 as std_pb2

    for name, desc in std_pb2.DESCRIPTOR.message_types_by_name.items():
        assert _message_shape(health_pb2.DESCRIPTOR.message_types_by_name[name]) == _message_shape(desc)
    std_svc = std_pb2.DESCRIPTOR.services_by_name["Health"]
    our_svc = health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert _service_shape(our_svc) == _service_shape(std_svc)
    assert _grpclib_paths(health_grpc.HealthBase, our_svc) == _grpclib_paths(std_grpc.HealthBase, std_svc)
    assert "/grpc.health.v1.Health/Check" in _grpclib_paths(health_grpc.HealthBase, our_svc)


# --- (c) SPIRE server API facts, from spire-api-sdk ----------------------------


def test_entry_field_numbers() -> None:
    assert _fields(types_entry_pb2.Entry.DESCRIPTOR) == {
        "id": 1,
        "spiffe_id": 2,
        "parent_id": 3,
        "selectors": 4,
        "x509_svid_ttl": 5,
        "federates_with": 6,
        "admin": 7,
        "downstream": 8,
        "expires_at": 9,
        "dns_names": 10,
        "revision_number": 11,
        "store_svid": 12,
        "jwt_svid_ttl": 13,
        "hint": 14,
        "created_at": 15,
        "additional_attributes": 16,
    }
    entry = types_entry_pb2.Entry.DESCRIPTOR
    assert entry.fields_by_name["x509_svid_ttl"].type == F.TYPE_INT32
    assert entry.fields_by_name["expires_at"].type == F.TYPE_INT64
    assert entry.fields_by_name["selectors"].is_repeated
    assert entry.fields_by_name["additional_attributes"].has_presence
    mask = _fields(types_entry_pb2.EntryMask.DESCRIPTOR)
    assert "id" not in mask and mask["spiffe_id"] == 2 and mask["additional_attributes"] == 16


def test_attest_agent_request_is_a_params_or_challenge_response_oneof() -> None:
    desc = agent_pb2.AttestAgentRequest.DESCRIPTOR
    step = desc.oneofs_by_name["step"]
    assert {f.name: f.number for f in step.fields} == {"params": 1, "challenge_response": 2}
    assert desc.fields_by_name["challenge_response"].type == F.TYPE_BYTES
    assert _fields(agent_pb2.AttestAgentRequest.Params.DESCRIPTOR) == {"data": 1, "params": 2}
    assert _fields(agent_pb2.AgentX509SVIDParams.DESCRIPTOR) == {"csr": 1}
    resp = agent_pb2.AttestAgentResponse.DESCRIPTOR
    assert {f.name: f.number for f in resp.oneofs_by_name["step"].fields} == {"result": 1, "challenge": 2}
    assert _fields(agent_pb2.AttestAgentResponse.Result.DESCRIPTOR) == {"svid": 1, "reattestable": 2}


def test_batch_new_x509_svid_params_and_results() -> None:
    assert _fields(svid_pb2.BatchNewX509SVIDRequest.DESCRIPTOR) == {"params": 1}
    assert _fields(svid_pb2.NewX509SVIDParams.DESCRIPTOR) == {"entry_id": 1, "csr": 2}
    assert _fields(svid_pb2.BatchNewX509SVIDResponse.Result.DESCRIPTOR) == {"status": 1, "svid": 2}
    assert _fields(status_pb2.Status.DESCRIPTOR) == {"code": 1, "message": 2}


def test_sync_authorized_entries_messages() -> None:
    assert _fields(entry_pb2.SyncAuthorizedEntriesRequest.DESCRIPTOR) == {"output_mask": 1, "ids": 2}
    assert _fields(entry_pb2.SyncAuthorizedEntriesResponse.DESCRIPTOR) == {
        "entry_revisions": 1,
        "entries": 2,
        "more": 3,
    }
    assert _fields(entry_pb2.EntryRevision.DESCRIPTOR) == {"id": 1, "revision_number": 2, "created_at": 3}


def test_bundle_delete_modes() -> None:
    mode = bundle_pb2.BatchDeleteFederatedBundleRequest.Mode
    assert (mode.Value("RESTRICT"), mode.Value("DELETE"), mode.Value("DISSOCIATE")) == (0, 1, 2)


SERVER_SERVICES = {
    # full service name: {rpc: (client_streaming, server_streaming)}
    "spire.api.server.agent.v1.Agent": {
        "CountAgents": (False, False),
        "ListAgents": (False, False),
        "GetAgent": (False, False),
        "DeleteAgent": (False, False),
        "BanAgent": (False, False),
        "AttestAgent": (True, True),
        "RenewAgent": (False, False),
        "CreateJoinToken": (False, False),
        "PostStatus": (False, False),
    },
    "spire.api.server.entry.v1.Entry": {
        "CountEntries": (False, False),
        "ListEntries": (False, False),
        "GetEntry": (False, False),
        "BatchCreateEntry": (False, False),
        "BatchUpdateEntry": (False, False),
        "BatchDeleteEntry": (False, False),
        "GetAuthorizedEntries": (False, False),
        "SyncAuthorizedEntries": (True, True),
    },
    "spire.api.server.bundle.v1.Bundle": {
        "CountBundles": (False, False),
        "GetBundle": (False, False),
        "AppendBundle": (False, False),
        "PublishJWTAuthority": (False, False),
        "PublishWITAuthority": (False, False),
        "ListFederatedBundles": (False, False),
        "GetFederatedBundle": (False, False),
        "BatchCreateFederatedBundle": (False, False),
        "BatchUpdateFederatedBundle": (False, False),
        "BatchSetFederatedBundle": (False, False),
        "BatchDeleteFederatedBundle": (False, False),
    },
    "spire.api.server.svid.v1.SVID": {
        "MintX509SVID": (False, False),
        "MintJWTSVID": (False, False),
        "MintWITSVID": (False, False),
        "BatchNewX509SVID": (False, False),
        "NewJWTSVID": (False, False),
        "BatchNewWITSVID": (False, False),
        "NewDownstreamX509CA": (False, False),
    },
    "spire.api.server.debug.v1.Debug": {"GetInfo": (False, False)},
    "spire.api.server.trustdomain.v1.TrustDomain": {
        "ListFederationRelationships": (False, False),
        "GetFederationRelationship": (False, False),
        "BatchCreateFederationRelationship": (False, False),
        "BatchUpdateFederationRelationship": (False, False),
        "BatchDeleteFederationRelationship": (False, False),
        "RefreshBundle": (False, False),
    },
}


@pytest.mark.parametrize("full_name", sorted(SERVER_SERVICES))
def test_server_service_rpcs_and_paths(full_name: str) -> None:
    package, _, service = full_name.rpartition(".")
    short = package.split(".")[-2]
    pb2 = importlib.import_module(f"spire_py.proto.{package}.{short}_pb2")
    grpc_mod = importlib.import_module(f"spire_py.proto.{package}.{short}_grpc")
    svc = pb2.DESCRIPTOR.services_by_name[service]
    assert svc.full_name == full_name
    assert {m.name: (m.client_streaming, m.server_streaming) for m in svc.methods} == SERVER_SERVICES[full_name]
    expected_paths = {f"/{full_name}/{rpc}" for rpc in SERVER_SERVICES[full_name]}
    assert _grpclib_paths(getattr(grpc_mod, f"{service}Base"), svc) == expected_paths


# --- (d) grpclib stubs ----------------------------------------------------------

GRPC_MODULES = {
    "spire_py.proto.workload.workload_grpc": "SpiffeWorkloadAPI",
    "spire_py.proto.spire.api.server.agent.v1.agent_grpc": "Agent",
    "spire_py.proto.spire.api.server.entry.v1.entry_grpc": "Entry",
    "spire_py.proto.spire.api.server.bundle.v1.bundle_grpc": "Bundle",
    "spire_py.proto.spire.api.server.svid.v1.svid_grpc": "SVID",
    "spire_py.proto.spire.api.server.debug.v1.debug_grpc": "Debug",
    "spire_py.proto.spire.api.server.trustdomain.v1.trustdomain_grpc": "TrustDomain",
    "spire_py.proto.grpc.health.v1.health_grpc": "Health",
}


@pytest.mark.parametrize("module_name", sorted(GRPC_MODULES))
def test_grpc_module_exposes_base_and_stub(module_name: str) -> None:
    import grpclib.client

    module = importlib.import_module(module_name)
    service = GRPC_MODULES[module_name]
    base, stub_cls = getattr(module, f"{service}Base"), getattr(module, f"{service}Stub")
    svc = importlib.import_module(module_name.replace("_grpc", "_pb2")).DESCRIPTOR.services_by_name[service]
    rpcs = {m.name for m in svc.methods}
    assert base.__abstractmethods__ == frozenset(rpcs)
    stub = stub_cls(object.__new__(grpclib.client.Channel))
    assert {getattr(stub, rpc).name for rpc in rpcs} == _grpclib_paths(base, svc)
