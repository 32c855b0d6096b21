"""How the server API answers a failed datastore call: one mapping, for whole calls and batch items alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.common.registration import MATCH_EXACT, MATCH_SUPERSET, Selector
from spire_py.common.spiffeid import TrustDomain
from spire_py.proto.spire.api.types import selector_pb2
from spire_py.server.api import convert
from spire_py.server.api.status import OK, datastore_error_status, error_status, status
from spire_py.server.core import ServerCore
from spire_py.server.datastore import errors as ds

CASES = [
    (ds.NotFoundError("no such entry"), Status.NOT_FOUND, "no such entry"),
    (ds.AlreadyExistsError("entry exists"), Status.ALREADY_EXISTS, "entry exists"),
    (ds.InvalidArgumentError("bad token"), Status.INVALID_ARGUMENT, "bad token"),
    (ds.ConflictError("still federated"), Status.FAILED_PRECONDITION, "still federated"),
    (ds.DataStoreError("disk full"), Status.INTERNAL, "datastore error: disk full"),
]


@pytest.mark.parametrize(("exc", "code", "message"), CASES)
def test_datastore_error_maps_to_one_status(exc: Exception, code: Status, message: str) -> None:
    assert datastore_error_status(exc) == (code, message)
    assert error_status(exc) == (code, message)


@pytest.mark.parametrize(("exc", "code", "message"), CASES)
def test_server_core_raises_the_same_status_for_a_whole_call(exc: Exception, code: Status, message: str) -> None:
    core = ServerCore(config=None, trust_domain=TrustDomain("example.org"), datastore=None, ca=None,
                      cache=None)  # type: ignore[arg-type]

    def fail() -> Any:
        raise exc

    with pytest.raises(GRPCError) as info:
        asyncio.run(core.db(fail))
    assert (info.value.status, info.value.message) == (code, message)


def test_batch_item_keeps_a_raised_grpc_status() -> None:
    assert error_status(GRPCError(Status.PERMISSION_DENIED, "no")) == (Status.PERMISSION_DENIED, "no")
    assert error_status(GRPCError(Status.NOT_FOUND)) == (Status.NOT_FOUND, "")


def test_status_objects() -> None:
    assert (OK.code, OK.message) == (0, "OK")
    assert (status(Status.NOT_FOUND, "gone").code, status(Status.NOT_FOUND, "gone").message) == (5, "gone")


def test_selector_filter_takes_its_match_mode_and_defaults_to_exact() -> None:
    pb = selector_pb2.SelectorMatch(selectors=[selector_pb2.Selector(type="unix", value="uid:1")], match=2)
    assert convert.selector_match_from_proto(pb) == ([Selector("unix", "uid:1")], MATCH_SUPERSET)
    pb.match = 42
    assert convert.selector_match_from_proto(pb)[1] == MATCH_EXACT


def test_selector_filter_refuses_a_selector_without_type() -> None:
    pb = selector_pb2.SelectorMatch(selectors=[selector_pb2.Selector(value="uid:1")])
    with pytest.raises(convert.InvalidInput, match="invalid selectors filter: missing selector type"):
        convert.selector_match_from_proto(pb)
