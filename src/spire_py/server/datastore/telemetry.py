"""SPIRE's ``datastore.<object>.<op>`` call counters around every DataStore method.

The catalog wraps the DataStore once (``instrument``), so API handlers, the CA journal,
pruning, the entry cache and the join_token attestor all count without knowing it. A
failed call counts with the gRPC code its error answers with (``errors.py``). A method
``names.DATASTORE`` does not name is passed through uncounted.
"""

from __future__ import annotations

from typing import cast

from grpclib.const import Status

from ...common.telemetry.counted import CountedProxy
from ...common.telemetry.names import DATASTORE
from .api import DataStore
from .errors import DataStoreError


def _status(exc: BaseException) -> Status:
    return Status(exc.grpc_code) if isinstance(exc, DataStoreError) else Status.UNKNOWN


def instrument(datastore: DataStore) -> DataStore:
    return cast(DataStore, CountedProxy(datastore, DATASTORE, _status))
