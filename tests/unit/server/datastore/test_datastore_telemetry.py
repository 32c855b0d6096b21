"""Every DataStore call is counted under SPIRE's ``datastore.<object>.<op>`` key, with the
gRPC status the API would answer with; uncounted attributes pass through."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from spire_py.common.telemetry import metrics
from spire_py.common.telemetry.names import DATASTORE
from spire_py.server.datastore import SQLDataStore
from spire_py.server.datastore.api import DataStore
from spire_py.server.datastore.errors import NotFoundError
from spire_py.server.datastore.models import JoinToken
from spire_py.server.datastore.telemetry import instrument
from tests.unit.helpers.datastore import entry, open_store

NOW = 2_000_000_000


@pytest.fixture
def recorded() -> Iterator[metrics.Metrics]:
    m = metrics.Metrics("spire_server")
    metrics.set_current(m)
    yield m
    metrics.set_current(metrics.NULL)


@pytest.fixture
def sql(tmp_path: os.PathLike[str]) -> Iterator[SQLDataStore]:
    s = open_store("sqlite3", tmp_path)
    yield s
    s.close()


def values(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(".".join(s.name), s.labels): (s.value if s.kind == metrics.COUNTER else s.count) for s in m.series()}


def test_calls_are_counted_with_their_status(recorded: metrics.Metrics, sql: SQLDataStore) -> None:
    ds = instrument(sql)
    created = ds.create_entry(entry())
    assert ds.fetch_entry(created.id) == created
    with pytest.raises(NotFoundError):
        ds.delete_entry("no-such-entry")
    ds.create_join_token(JoinToken("t", NOW))
    assert ds.take_join_token("t") is not None
    got = values(recorded)
    ok, not_found = (("status", "OK"),), (("status", "NotFound"),)
    assert got[("spire_server.datastore.registration_entry.create", ok)] == 1
    assert got[("spire_server.datastore.registration_entry.fetch", ok)] == 1
    assert got[("spire_server.datastore.registration_entry.delete", not_found)] == 1
    assert got[("spire_server.datastore.join_token.fetch", ok)] == 1
    assert got[("spire_server.datastore.registration_entry.create.elapsed_time", ok)] == 1


def test_telemetry_off_records_nothing_and_uncounted_attributes_pass_through(sql: SQLDataStore) -> None:
    ds = instrument(sql)
    ds.create_entry(entry())
    assert metrics.current().series() == []
    assert ds.close == sql.close  # not in the table: the store's own method


def test_every_protocol_method_but_close_has_a_key() -> None:
    # The last event IDs and the entry cache's load are read once at start (SPIRE has no call
    # counter for them).
    methods = {n for n in vars(DataStore) if not n.startswith("_")} - {"close", "last_entry_event_id",
                                                                        "last_node_event_id",
                                                                        "list_entries_in_batches"}
    assert methods - set(DATASTORE) == set()
