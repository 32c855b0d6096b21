"""DataStore "sql": attested nodes, join tokens, CA journal."""

from __future__ import annotations

import os
import threading
import time

import pytest

from spire_py.common.registration import Entry, Selector
from spire_py.server.datastore import (
    AlreadyExistsError,
    AttestedNode,
    InvalidArgumentError,
    JoinToken,
    NotFoundError,
    SQLDataStore,
)
from tests.unit.helpers.datastore import NOW, TD, open_store, sel


# --- attested nodes ---------------------------------------------------------


def agent(name: str, **kw: object) -> AttestedNode:
    fields: dict[str, object] = dict(attestation_type="x509pop", cert_serial_number="1", cert_not_after=NOW + 3600)
    fields.update(kw)
    return AttestedNode(spiffe_id=f"{TD}/spire/agent/{name}", **fields)  # type: ignore[arg-type]


def test_node_crud(store: SQLDataStore) -> None:
    n = agent("a", new_cert_serial_number="2", new_cert_not_after=NOW + 7200, can_reattest=True)
    assert store.create_attested_node(n) == n
    with pytest.raises(AlreadyExistsError):
        store.create_attested_node(n)
    assert store.fetch_attested_node(n.spiffe_id) == n
    assert store.fetch_attested_node(TD + "/nope") is None
    upd = store.update_attested_node(agent("a", cert_serial_number="3", cert_not_after=1), {"cert_serial_number"})
    assert upd.cert_serial_number == "3" and upd.cert_not_after == NOW + 3600 and upd.new_cert_serial_number == "2"
    banned = store.update_attested_node(agent("a", cert_serial_number="", new_cert_serial_number=""), {"cert_serial_number", "new_cert_serial_number"})
    assert banned.banned
    with pytest.raises(NotFoundError):
        store.update_attested_node(agent("zz"))
    with pytest.raises(InvalidArgumentError):
        store.update_attested_node(n, {"selectors"})
    store.set_node_selectors(n.spiffe_id, sel("x509pop:subject:cn:a"))
    deleted = store.delete_attested_node(n.spiffe_id)
    assert deleted.spiffe_id == n.spiffe_id
    assert store.fetch_attested_node(n.spiffe_id) is None
    assert store.get_node_selectors(n.spiffe_id) == []
    with pytest.raises(NotFoundError):
        store.delete_attested_node(n.spiffe_id)


def test_node_selectors(store: SQLDataStore) -> None:
    store.create_attested_node(agent("a"))
    store.create_attested_node(agent("old", cert_not_after=NOW - 1))
    a, old = agent("a").spiffe_id, agent("old").spiffe_id
    store.set_node_selectors(a, sel("t:1", "t:2", "t:1"))
    assert store.get_node_selectors(a) == sel("t:1", "t:2")
    store.set_node_selectors(a, sel("t:3"))
    store.set_node_selectors(old, sel("t:4"))
    assert store.get_node_selectors(a) == sel("t:3")
    assert store.list_node_selectors() == {a: sel("t:3"), old: sel("t:4")}
    assert store.list_node_selectors(valid_at=NOW) == {a: sel("t:3")}
    assert store.fetch_attested_node(a, with_selectors=True).selectors == sel("t:3")  # type: ignore[union-attr]
    assert store.fetch_attested_nodes([a, TD + "/x"]) == {a: agent("a", selectors=sel("t:3"))}


def test_node_list_filters_and_paging(store: SQLDataStore) -> None:
    store.create_attested_node(agent("a", can_reattest=True))
    store.create_attested_node(agent("b", attestation_type="join_token", cert_not_after=NOW - 5))
    store.create_attested_node(agent("c", cert_serial_number="", new_cert_serial_number=""))
    store.set_node_selectors(agent("a").spiffe_id, sel("s:1", "s:2"))
    store.set_node_selectors(agent("b").spiffe_id, sel("s:1"))

    def names(**kw: object) -> list[str]:
        nodes, _ = store.list_attested_nodes(**kw)  # type: ignore[arg-type]
        return [n.spiffe_id.rsplit("/", 1)[1] for n in nodes]

    assert names() == ["a", "b", "c"]
    assert names(by_attestation_type="join_token") == ["b"]
    assert names(by_banned=True) == ["c"]
    assert names(by_banned=False) == ["a", "b"]
    assert names(by_expires_before=NOW) == ["b"]
    assert names(by_can_reattest=True) == ["a"]
    assert names(by_selector_match=(sel("s:1"), "superset")) == ["a", "b"]
    assert names(by_selector_match=(sel("s:1"), "exact")) == ["b"]
    assert names(by_selector_match=(sel("s:1", "s:2", "s:3"), "subset")) == ["a", "b"]
    assert names(by_selector_match=(sel("s:2", "s:9"), "any")) == ["a"]
    assert store.count_attested_nodes() == 3
    assert store.count_attested_nodes(by_banned=False, by_selector_match=(sel("s:1"), "any")) == 2
    nodes, _ = store.list_attested_nodes(fetch_selectors=True)
    assert nodes[0].selectors == sel("s:1", "s:2") and nodes[2].selectors == []
    assert store.list_attested_nodes()[0][0].selectors == []
    page, token = store.list_attested_nodes(page_size=2)
    rest, token2 = store.list_attested_nodes(page_size=2, page_token=token)
    assert [n.spiffe_id for n in page + rest] == [agent(x).spiffe_id for x in "abc"]
    assert store.list_attested_nodes(page_size=2, page_token=token2) == ([], "")


def test_node_prune_expired_keeps_banned_and_non_reattestable(store: SQLDataStore) -> None:
    store.create_attested_node(agent("fresh", can_reattest=True))
    store.create_attested_node(agent("expired", cert_not_after=NOW - 10, can_reattest=True))
    store.create_attested_node(agent("expired_jt", cert_not_after=NOW - 10))
    store.create_attested_node(agent("banned", cert_not_after=NOW - 10, cert_serial_number="", can_reattest=True))
    store.set_node_selectors(agent("expired").spiffe_id, sel("s:1"))
    assert store.prune_attested_expired_nodes(NOW) == 1
    assert store.get_node_selectors(agent("expired").spiffe_id) == []
    assert store.prune_attested_expired_nodes(NOW, include_non_reattestable=True) == 1
    left = {n.spiffe_id for n in store.list_attested_nodes()[0]}
    assert left == {agent("fresh").spiffe_id, agent("banned").spiffe_id}


def test_node_events(store: SQLDataStore) -> None:
    n = agent("a")
    store.create_attested_node(n)
    store.set_node_selectors(n.spiffe_id, sel("s:1"))
    store.update_attested_node(n)
    store.delete_attested_node(n.spiffe_id)
    events = store.list_node_events()
    assert [e[1] for e in events] == [n.spiffe_id] * 4
    assert store.list_node_events(greater_than_id=events[1][0], limit=1) == [events[2]]
    assert store.prune_node_events(-10) == 4


def test_deleting_join_token_agent_deletes_its_alias_entry(store: SQLDataStore) -> None:
    n = agent("jt", attestation_type="join_token")
    store.create_attested_node(n)
    alias = store.create_entry(Entry(spiffe_id=TD + "/host", parent_id=n.spiffe_id, selectors=[Selector("spiffe_id", n.spiffe_id)]))
    workload = store.create_entry(Entry(spiffe_id=TD + "/w", parent_id=n.spiffe_id, selectors=sel("unix:uid:0")))
    store.delete_attested_node(n.spiffe_id)
    assert store.fetch_entry(alias.id) is None
    assert store.fetch_entry(workload.id) == workload
    assert store.list_entry_events()[-1][1] == alias.id


# --- join tokens and CA journal --------------------------------------------


def test_join_token_crud_and_prune(store: SQLDataStore) -> None:
    store.create_join_token(JoinToken("t1", NOW + 60))
    store.create_join_token(JoinToken("t2", NOW - 60))
    with pytest.raises(AlreadyExistsError):
        store.create_join_token(JoinToken("t1", NOW))
    with pytest.raises(InvalidArgumentError):
        store.create_join_token(JoinToken("", NOW))
    assert store.fetch_join_token("t1") == JoinToken("t1", NOW + 60)
    assert store.prune_join_tokens(NOW) == 1
    assert store.fetch_join_token("t2") is None
    store.delete_join_token("t1")
    with pytest.raises(NotFoundError):
        store.delete_join_token("t1")


def test_join_token_is_single_use(store: SQLDataStore) -> None:
    store.create_join_token(JoinToken("once", NOW + 60))
    assert store.take_join_token("once") == JoinToken("once", NOW + 60)
    assert store.take_join_token("once") is None
    assert store.fetch_join_token("once") is None


def test_join_token_taken_once_under_race(backend: str, tmp_path: os.PathLike[str]) -> None:
    stores = [open_store(backend, tmp_path), open_store(backend, tmp_path)]
    tokens = [f"tok-{i}" for i in range(40)]
    for t in tokens:
        stores[0].create_join_token(JoinToken(t, NOW + 60))
    wins: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(s: SQLDataStore) -> None:
        try:
            barrier.wait()
            for t in tokens:
                if s.take_join_token(t) is not None:
                    with lock:
                        wins.append(t)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(stores[i % 2],)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in stores:
        s.close()
    assert errors == []
    assert sorted(wins) == sorted(tokens)  # every token exactly once


def test_ca_journal_set_and_fetch(store: SQLDataStore) -> None:
    assert store.fetch_ca_journal("x") is None
    store.set_ca_journal("x", b"\x00one")
    store.set_ca_journal("x", b"\x00two")
    store.set_ca_journal("y", b"")
    assert store.fetch_ca_journal("x") == b"\x00two"
    assert store.fetch_ca_journal("y") == b""


def test_ca_journal_find_replace_list_and_prune(store: SQLDataStore) -> None:
    store.set_ca_journal("a" * 40, b"one")
    store.set_ca_journal("b" * 40, b"two")
    assert store.find_ca_journal([]) is None
    assert store.find_ca_journal(["c" * 40]) is None
    assert store.find_ca_journal(["c" * 40, "b" * 40, "a" * 40]) == ("b" * 40, b"two")  # the order asked
    # Rotation: the journal moves to the new authority's ID in one transaction.
    store.set_ca_journal("c" * 40, b"three", replaces="a" * 40)
    assert store.list_ca_journals() == [("b" * 40, b"two"), ("c" * 40, b"three")]
    store.set_ca_journal("c" * 40, b"four", replaces="c" * 40)  # same ID: kept, not deleted
    assert store.fetch_ca_journal("c" * 40) == b"four"
    # Pruning by last write keeps the caller's own journal.
    future = int(time.time()) + 10
    assert store.prune_ca_journals(future, keep="c" * 40) == 1
    assert store.list_ca_journals() == [("c" * 40, b"four")]
    assert store.prune_ca_journals(int(time.time()) - 3600) == 0
