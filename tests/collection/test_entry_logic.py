"""entry and join_token logic against a fake CLI that keeps entries like the server does."""

import json

import pytest

pytest.importorskip("ansible")

from ansible_collections.spire_py.spire.plugins.module_utils import entry as entries  # noqa: E402
from ansible_collections.spire_py.spire.plugins.module_utils.spire_cli import ServerCLI, SpireCLIError  # noqa: E402


class FakeServer:
    """Answers `spire-server` argv with protojson, as the real CLI does."""

    def __init__(self):
        self.entries = {}
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        words, flags = [], []
        rest = argv[1:]
        while rest and not rest[0].startswith("-"):
            words.append(rest.pop(0))
        while rest:
            name = rest.pop(0).lstrip("-")
            if "=" in name:
                name, value = name.split("=", 1)
            else:
                value = rest.pop(0)
            flags.append((name, value))
        get = dict(flags).get
        multi = lambda n: [v for k, v in flags if k == n]  # noqa: E731
        if words == ["token", "generate"]:
            return 0, json.dumps({"value": "tok-%s" % len(self.calls), "expires_at": "1700000000"}), ""
        if words == ["entry", "show"]:
            found = [e for e in self.entries.values()
                     if (not get("spiffeID") or entries.spiffe_id_text(e["spiffe_id"]) == get("spiffeID"))
                     and (not get("parentID") or entries.spiffe_id_text(e["parent_id"]) == get("parentID"))]
            return 0, json.dumps({"entries": found, "next_page_token": ""}), ""
        if words in (["entry", "create"], ["entry", "update"]):
            entry_id = get("entryID") or "id-%d" % (len(self.entries) + 1)
            td, _, path = get("spiffeID")[len("spiffe://"):].partition("/")
            ptd, _, ppath = get("parentID")[len("spiffe://"):].partition("/")
            e = {"id": entry_id, "spiffe_id": {"trust_domain": td, "path": "/" + path},
                 "parent_id": {"trust_domain": ptd, "path": "/" + ppath},
                 "selectors": [{"type": s.split(":", 1)[0], "value": s.split(":", 1)[1]} for s in multi("selector")],
                 "x509_svid_ttl": int(get("x509SVIDTTL") or 0), "jwt_svid_ttl": int(get("jwtSVIDTTL") or 0),
                 "dns_names": multi("dns"), "federates_with": multi("federatesWith"),
                 "admin": get("admin") == "true", "downstream": get("downstream") == "true",
                 "hint": get("hint") or "", "revision_number": "0",
                 "expires_at": get("entryExpiry") or "0", "store_svid": get("storeSVID") == "true"}
            self.entries[entry_id] = e
            return 0, json.dumps({"results": [{"status": {"code": 0, "message": "OK"}, "entry": e}]}), ""
        if words == ["entry", "delete"]:
            self.entries.pop(get("entryID"))
            return 0, json.dumps({"results": [{"status": {"code": 0, "message": "OK"}, "id": get("entryID")}]}), ""
        return 1, "", "unknown command"


def params(**kw):
    p = dict(spiffe_id="spiffe://example.org/web", parent_id="spiffe://example.org/host/a",
             selectors=["unix:uid:1000"], x509_svid_ttl=None, jwt_svid_ttl=None, dns_names=None,
             admin=None, downstream=None, federates_with=None, hint=None, entry_expiry=None, store_svid=None)
    p.update(kw)
    return p


@pytest.fixture
def server():
    return FakeServer()


def run(server, state="present", check_mode=False, exclusive=False, **kw):
    from ansible_collections.spire_py.spire.plugins.modules.entry import apply

    cli = ServerCLI(server, "/bin/spire-server", "/tmp/s.sock")
    want = entries.desired(params(**kw))
    found = cli.show_entries(want["spiffe_id"], want["parent_id"])
    others = entries.superseded(found, want) if exclusive else []
    return apply(cli, check_mode, state, want, entries.find(found, want), others)


def test_entry_is_created_once_and_then_left_alone(server):
    assert run(server, x509_svid_ttl=600)["changed"]
    assert len(server.entries) == 1
    again = run(server, x509_svid_ttl=600)
    assert not again["changed"] and again["entry"]["x509_svid_ttl"] == 600


def test_selector_order_does_not_matter_but_the_set_does(server):
    run(server, selectors=["unix:uid:1", "unix:gid:2"])
    assert not run(server, selectors=["unix:gid:2", "unix:uid:1"])["changed"]
    assert run(server, selectors=["unix:uid:1"])["changed"]
    assert len(server.entries) == 2


def test_attributes_are_updated_in_place_and_unmanaged_ones_kept(server):
    run(server, x509_svid_ttl=600, dns_names=["a.example"], admin=True)
    result = run(server, x509_svid_ttl=900)
    assert result["changed"] and result["updated"] == {"x509_svid_ttl": {"before": 600, "after": 900}}
    [stored] = server.entries.values()
    assert stored["x509_svid_ttl"] == 900 and stored["dns_names"] == ["a.example"] and stored["admin"]
    assert len(server.entries) == 1
    update = [c for c in server.calls if c[1:3] == ["entry", "update"]][0]
    assert "-entryID" in update


def test_check_mode_reports_and_changes_nothing(server):
    result = run(server, check_mode=True, x509_svid_ttl=60)
    assert result["changed"] and result["entry"]["x509_svid_ttl"] == 60 and not server.entries
    run(server)
    result = run(server, check_mode=True, hint="x")
    assert result["changed"] and [e["hint"] for e in server.entries.values()] == [""]
    result = run(server, state="absent", check_mode=True)
    assert result["changed"] and len(server.entries) == 1


def test_absent_deletes_and_is_idempotent(server):
    run(server)
    assert run(server, state="absent")["changed"] and not server.entries
    assert not run(server, state="absent")["changed"]


def test_bad_input_is_refused():
    with pytest.raises(entries.EntryError, match="type:value"):
        entries.desired(params(selectors=["uid1000"]))
    with pytest.raises(entries.EntryError, match="spiffe_id"):
        entries.desired(params(spiffe_id="example.org/web"))
    with pytest.raises(entries.EntryError, match="empty"):
        entries.desired(params(selectors=[]))


def test_cli_errors_carry_the_server_message():
    cli = ServerCLI(lambda argv: (1, "", "Error: connection refused\n"), "/x", "/s")
    with pytest.raises(SpireCLIError, match="connection refused"):
        cli.show_entries()
    bad = ServerCLI(lambda argv: (0, json.dumps({"results": [{"status": {"code": 6, "message": "similar entry already exists"}}]}), ""), "/x", "/s")
    with pytest.raises(SpireCLIError, match="already exists"):
        bad.create_entry([])


def test_token_generate_uses_spire_flags(server):
    cli = ServerCLI(server, "/bin/spire-server", "/tmp/s.sock")
    doc = cli.generate_token(300, "spiffe://example.org/host/a")
    assert doc["value"].startswith("tok-")
    assert server.calls[-1] == ["/bin/spire-server", "token", "generate", "-socketPath", "/tmp/s.sock", "-ttl", "300",
                                "-spiffeID", "spiffe://example.org/host/a", "-output", "json"]


def test_expiry_and_store_svid_are_managed(server):
    run(server, entry_expiry=1893456000, store_svid=True)
    [stored] = server.entries.values()
    assert stored["expires_at"] == "1893456000" and stored["store_svid"]
    assert not run(server, entry_expiry=1893456000, store_svid=True)["changed"]
    result = run(server, entry_expiry=1900000000)
    assert result["updated"] == {"entry_expiry": {"before": 1893456000, "after": 1900000000}}
    assert [e["store_svid"] for e in server.entries.values()] == [True]


def test_exclusive_selectors_change_replaces_the_grant_in_place(server):
    run(server, selectors=["unix:uid:1000"], x509_svid_ttl=600)
    [old_id] = server.entries
    result = run(server, exclusive=True, selectors=["unix:uid:1001"])
    assert result["changed"] and result["updated"]["selectors"] == {"before": ["unix:uid:1000"], "after": ["unix:uid:1001"]}
    [(entry_id, stored)] = server.entries.items()
    assert entry_id == old_id and [s["value"] for s in stored["selectors"]] == ["uid:1001"]
    assert stored["x509_svid_ttl"] == 600
    assert not run(server, exclusive=True, selectors=["unix:uid:1001"])["changed"]


def test_without_exclusive_a_selectors_change_adds_a_second_grant(server):
    run(server, selectors=["unix:uid:1000"])
    run(server, selectors=["unix:uid:1001"])
    assert len(server.entries) == 2


def test_exclusive_deletes_duplicates_and_absent_deletes_every_selector_set(server):
    run(server, selectors=["unix:uid:1"])
    run(server, selectors=["unix:uid:2"])
    run(server, selectors=["unix:uid:3"])
    result = run(server, exclusive=True, selectors=["unix:uid:3"])
    assert result["changed"] and len(result["_deleted"]) == 2 and len(server.entries) == 1
    run(server, selectors=["unix:uid:4"])
    result = run(server, state="absent", exclusive=True, selectors=["unix:uid:9"])
    assert result["changed"] and not server.entries


def test_purge_keeps_wanted_and_node_entries_only(server):
    td = "spiffe://example.org"
    run(server, selectors=["unix:uid:1"])
    run(server, spiffe_id=td + "/old", selectors=["unix:uid:2"])
    run(server, spiffe_id=td + "/host/a", parent_id=td + "/spire/server", selectors=["x509pop:subject:cn:a"])
    run(server, spiffe_id=td + "/host/b", parent_id=td + "/spire/agent/join_token/abc", selectors=["x:y"])
    cli = ServerCLI(server, "/bin/spire-server", "/tmp/s.sock")
    wanted = [entries.desired(params(selectors=["unix:uid:1"]))]
    stale = entries.purgeable(cli.show_entries(), wanted)
    assert [v["spiffe_id"] for v in stale] == [td + "/old"]
    # Exclusive wanted entries keep their (spiffe_id, parent_id) entry for an in-place update.
    moved = dict(entries.desired(params(selectors=["unix:uid:7"])), _exclusive=True)
    assert [v["spiffe_id"] for v in entries.purgeable(cli.show_entries(), [moved])] == [td + "/old"]
    plain = entries.desired(params(selectors=["unix:uid:7"]))
    assert sorted(v["spiffe_id"] for v in entries.purgeable(cli.show_entries(), [plain])) == [td + "/old", td + "/web"]


def test_module_list_mode_with_purge(server, module_runner, monkeypatch, tmp_path):
    from ansible.module_utils import basic

    from ansible_collections.spire_py.spire.plugins.modules import entry as module

    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kw: server(argv))
    td = "spiffe://example.org"
    run(server, spiffe_id=td + "/gone", selectors=["unix:uid:5"])
    run(server, spiffe_id=td + "/web", selectors=["unix:uid:1"])
    args = {"entries": [{"spiffe_id": td + "/web", "parent_id": td + "/host/a", "selectors": ["unix:uid:2"]},
                        {"spiffe_id": td + "/db", "parent_id": td + "/host/a", "selectors": ["unix:uid:3"],
                         "store_svid": True}],
            "exclusive": True, "purge": True, "server_bin": "/bin/true", "socket_path": "/tmp/s.sock"}
    checked = module_runner(module, args, check_mode=True, diff=True)
    assert checked["changed"] and [d["spiffe_id"] for d in checked["deleted"]] == [td + "/gone"]
    assert len(server.entries) == 2
    result = module_runner(module, args)
    assert result["changed"], result
    assert sorted(entries.spiffe_id_text(e["spiffe_id"]) for e in server.entries.values()) == [td + "/db", td + "/web"]
    assert not module_runner(module, args)["changed"]
    bad = module_runner(module, dict(args, entries=[{"spiffe_id": td + "/x", "parent_id": td + "/y",
                                                      "selectors": ["a:b"], "colour": "red"}]))
    assert bad["failed"] and "colour" in bad["msg"]
