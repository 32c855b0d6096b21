"""Per-item statuses of batch answers, and the gRPC status each datastore error maps to."""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...proto.spire.api.types import status_pb2
from ..datastore import errors as ds_errors

OK = status_pb2.Status(code=0, message="OK")

# The rest (DataStoreError and anything unexpected) is INTERNAL.
_DS_STATUS = (
    (ds_errors.NotFoundError, Status.NOT_FOUND),
    (ds_errors.AlreadyExistsError, Status.ALREADY_EXISTS),
    (ds_errors.InvalidArgumentError, Status.INVALID_ARGUMENT),
    (ds_errors.ConflictError, Status.FAILED_PRECONDITION),  # e.g. deleting a bundle entries federate with
)


def status(code: Status, message: str = "") -> status_pb2.Status:
    return status_pb2.Status(code=code.value, message=message)


def datastore_error_status(exc: Exception) -> tuple[Status, str]:
    """The status and message a failed datastore call answers with."""
    for kind, code in _DS_STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    return Status.INTERNAL, f"datastore error: {exc}"


def error_status(exc: Exception) -> tuple[Status, str]:
    """The status for one batch item's failure: a raised GRPCError's own, else the datastore mapping."""
    if isinstance(exc, GRPCError):
        return exc.status, exc.message or ""
    return datastore_error_status(exc)
