"""Per-item statuses of batch answers, and the gRPC status each datastore error maps to."""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...proto.spire.api.types import status_pb2
from ..datastore import errors as ds_errors

OK = status_pb2.Status(code=0, message="OK")



def status(code: Status, message: str = "") -> status_pb2.Status:
    return status_pb2.Status(code=code.value, message=message)


def datastore_error_status(exc: Exception) -> tuple[Status, str]:
    """The status and message a failed datastore call answers with."""
    # Each datastore error names its code (errors.py); the rest (DataStoreError itself and
    # anything unexpected) is INTERNAL.
    code = exc.grpc_code if isinstance(exc, ds_errors.DataStoreError) else Status.INTERNAL.value
    if code == Status.INTERNAL.value:
        return Status.INTERNAL, f"datastore error: {exc}"
    return Status(code), str(exc)


def error_status(exc: Exception) -> tuple[Status, str]:
    """The status for one batch item's failure: a raised GRPCError's own, else the datastore mapping."""
    if isinstance(exc, GRPCError):
        return exc.status, exc.message or ""
    return datastore_error_status(exc)
