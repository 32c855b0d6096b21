"""Concurrent writers: aborted transactions are retried, parallel work all lands,
and reads marked tolerate_stale go to ro_connection_string."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from spire_py.server.datastore import AttestedNode, JoinToken, SQLDataStore
from spire_py.server.datastore.errors import RetryableError
from spire_py.server.datastore.store import retry_aborted
from spire_py.server.datastore.transactions import is_retryable

from tests.unit.helpers.datastore import TD, entry, sel


def test_a_real_deadlock_is_classified_retryable(store: SQLDataStore) -> None:  # noqa: F811
    if store.database_type == "sqlite3":
        pytest.skip("sqlite3 takes the write lock up front: writers wait, they do not deadlock")
    for t in ("t1", "t2"):
        store.create_join_token(JoinToken(t, 10))
    upd = text("UPDATE join_tokens SET expiry = expiry + 1 WHERE token = :t")
    errors: list[BaseException] = []
    with store.engine.connect() as c1, store.engine.connect() as c2:
        c1.begin()
        c2.begin()
        c1.execute(upd, {"t": "t1"})
        c2.execute(upd, {"t": "t2"})
        locked = threading.Event()

        def cross() -> None:
            try:
                locked.set()
                c1.execute(upd, {"t": "t2"})  # waits for c2
            except Exception as exc:  # noqa: BLE001 - inspected below
                errors.append(exc)

        th = threading.Thread(target=cross)
        th.start()
        locked.wait()
        try:
            c2.execute(upd, {"t": "t1"})  # waits for c1: a cycle; the database breaks it
        except Exception as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)
            c2.rollback()
        th.join(30)
    assert len(errors) == 1, errors
    assert is_retryable(getattr(errors[0], "orig", None)), repr(errors[0])


def test_aborted_transactions_are_run_again() -> None:
    calls: list[int] = []

    @retry_aborted
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableError("deadlock")
        return "done"

    assert flaky() == "done" and len(calls) == 3

    @retry_aborted
    def hopeless() -> None:
        raise RetryableError("deadlock")

    with pytest.raises(RetryableError):
        hopeless()


def test_parallel_attestations_and_entry_writes_all_land(store: SQLDataStore) -> None:  # noqa: F811
    """What several servers' threads do at once when many agents attest."""
    def attest(i: int) -> None:
        agent = f"{TD}/spire/agent/x/{i}"
        store.create_join_token(JoinToken(f"tok-{i}", 2_000_000_000))
        assert store.take_join_token(f"tok-{i}") is not None
        store.create_attested_node(AttestedNode(agent, "join_token", str(i), 2_000_000_000))
        store.set_node_selectors(agent, sel(f"join_token:tok-{i}", "pool:a"))
        store.set_node_selectors(agent, sel(f"join_token:tok-{i}", "pool:b"))
        e = store.create_entry(entry(spiffe=f"/w{i}", parent=f"/spire/agent/x/{i}"))
        store.update_entry(e, {"hint"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(attest, range(40)))
    assert store.count_attested_nodes() == 40 and store.count_entries() == 40
    assert len(store.list_node_selectors()) == 40
    assert all(s[1].value == "b" for s in store.list_node_selectors().values())


def test_tolerate_stale_reads_use_the_read_only_connection(tmp_path: Any) -> None:
    replica = os.path.join(tmp_path, "replica.sqlite3")
    SQLDataStore("sqlite3", replica).close()  # a migrated copy that lags behind
    s = SQLDataStore("sqlite3", os.path.join(tmp_path, "primary.sqlite3"), ro_connection_string=replica)
    try:
        e = s.create_entry(entry())
        assert s.list_entries()[0] == [e]
        assert s.list_entries(tolerate_stale=True)[0] == []
        assert s.count_entries(tolerate_stale=True) == 0
        assert s.list_entry_events(tolerate_stale=True) == [] and len(s.list_entry_events()) == 1
    finally:
        s.close()
