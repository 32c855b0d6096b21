"""A mixed set of registration entries, as a deployment has them, for the entry cache's tests:
agents' workloads, nested entries, node aliases, downstream and admin entries, federation,
DNS names, hints, TTLs, expiries (past and future), updated and deleted entries."""

from __future__ import annotations

from spire_py.common.registration import Entry, Selector
from spire_py.server.datastore import Bundle, SQLDataStore
from tests.unit.helpers.datastore import FED, NOW, TD, make_cert

AGENT = TD + "/spire/agent/join_token/a"
OTHER = TD + "/spire/agent/join_token/b"
SERVER = TD + "/spire/server"
NODE_SELECTORS = [Selector("k8s_psat", "cluster:c1"), Selector("k8s_psat", "agent_ns:spire")]


def _e(path: str, parent: str, *sels: str, **kw: object) -> Entry:
    return Entry(spiffe_id=TD + path, parent_id=parent,  # type: ignore[arg-type]
                 selectors=[Selector(*s.split(":", 1)) for s in (sels or ("unix:uid:1000",))], **kw)


def create_mixed_entries(store: SQLDataStore) -> list[Entry]:
    """Creates the entries (and the federated bundle they need); returns those that remain."""
    store.create_bundle(Bundle(FED, x509_authorities=[make_cert(NOW + 86400)]))
    made = [
        _e("/w/plain", AGENT),
        # Selectors in a non-sorted order: the order they were written in is kept.
        _e("/w/many", AGENT, "unix:uid:1000", "unix:gid:0", "unix:path:/usr/bin/w"),
        _e("/w/dns", AGENT, "k8s:ns:default", "k8s:sa:web", dns_names=["web.example.org", "a.example.org"]),
        _e("/w/hint", AGENT, hint="external", x509_svid_ttl=1800, jwt_svid_ttl=300),
        _e("/w/fed", AGENT, federates_with=[FED]),
        _e("/w/downstream", AGENT, downstream=True),
        _e("/w/admin", AGENT, admin=True),
        _e("/w/expired", AGENT, expires_at=NOW - 60),
        _e("/w/expiring", AGENT, expires_at=NOW + 86400 * 365 * 10, store_svid=True),
        _e("/group", AGENT, "unix:uid:2000"),
        _e("/group/child", TD + "/group", "unix:uid:2001"),
        _e("/group/child/grandchild", TD + "/group/child", "docker:label:app:x", dns_names=["x.example.org"]),
        # A node alias matched by the agent's node selectors, and a workload under it.
        _e("/alias/c1", SERVER, "k8s_psat:cluster:c1"),
        _e("/alias/c1/pod", TD + "/alias/c1", "k8s:pod-uid:1234", hint="pod"),
        # An alias needing a selector the agent lacks: not the agent's.
        _e("/alias/c2", SERVER, "k8s_psat:cluster:c1", "k8s_psat:agent_ns:other"),
        _e("/alias/c2/pod", TD + "/alias/c2", "k8s:pod-uid:5678"),
        # Another agent's entries, one of them with the same SPIFFE ID as one of ours.
        _e("/theirs", OTHER, downstream=True, admin=True),
        _e("/w/plain", OTHER, "unix:uid:3000"),
        _e("/to-delete", AGENT),
        _e("/to-update", AGENT),
    ]
    created = [store.create_entry(e) for e in made]
    by_path = {e.spiffe_id.removeprefix(TD) + "@" + e.parent_id: e for e in created}
    store.delete_entry(created[0].id)  # a gap in the ids at the very start
    store.delete_entry(by_path["/to-delete@" + AGENT].id)
    updated = by_path["/to-update@" + AGENT]
    updated.selectors = [Selector("unix", "uid:9"), Selector("unix", "gid:9")]
    updated.hint = "updated"
    store.update_entry(updated, {"selectors", "hint"})
    remaining = store.fetch_entries([e.id for e in created])
    return [remaining[e.id] for e in created if e.id in remaining]
