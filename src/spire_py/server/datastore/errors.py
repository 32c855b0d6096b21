"""DataStore errors, one per gRPC status the API layer maps them to.

DataStoreError -> Internal/Unknown, NotFoundError -> NotFound,
AlreadyExistsError -> AlreadyExists, InvalidArgumentError -> InvalidArgument,
ConflictError -> FailedPrecondition (e.g. deleting a bundle still federated with entries).
"""

from __future__ import annotations

from typing import Any

from ...common.errors import SpireError


class DataStoreError(SpireError):
    """A datastore operation failed; the message says what and on which input."""

    # The gRPC status code (numeric, as on the wire) the API layer answers with.
    grpc_code = 13  # Internal


class NotFoundError(DataStoreError):
    """The record the operation needs does not exist."""

    grpc_code = 5  # NotFound


class AlreadyExistsError(DataStoreError):
    """A record with the same identity exists; ``existing`` carries it when known."""

    grpc_code = 6  # AlreadyExists

    def __init__(self, message: str, existing: Any = None) -> None:
        super().__init__(message)
        self.existing = existing


class InvalidArgumentError(DataStoreError):
    """The request is malformed (missing field, bad token, value too long...)."""

    grpc_code = 3  # InvalidArgument


class ConflictError(DataStoreError):
    """The current state forbids the operation (SPIRE's FailedPrecondition)."""

    grpc_code = 9  # FailedPrecondition


class RetryableError(DataStoreError):
    """The database gave up on the transaction (deadlock, serialization failure,
    lock wait timeout); running it again from the start may well succeed."""
