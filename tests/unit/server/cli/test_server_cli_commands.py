"""spire-server admin commands end to end against an in-process fake of the server APIs.

The fake answers on a real Unix socket with grpclib, the way the server does, so
these tests pin what each command sends and exactly what it prints, without
needing a running spire-server.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Iterator

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from spire_py.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from spire_py.proto.spire.api.types import agent_pb2 as types_agent_pb2
from spire_py.proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from spire_py.proto.spire.api.types import jointoken_pb2, jwtsvid_pb2, status_pb2, x509svid_pb2
from spire_py.server.cli.main import app

TD = "example.org"


def _status(code: int = 0, msg: str = "OK") -> status_pb2.Status:
    return status_pb2.Status(code=code, message=msg)


def _implemented(cls: type) -> type:
    cls.__abstractmethods__ = frozenset()  # unimplemented RPCs simply never get called
    return cls


class State:
    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake ca")])
        now = dt.datetime.now(dt.timezone.utc)
        self.ca = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.ca_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.jwt_key = ec.generate_private_key(ec.SECP256R1())
        self.entries: list[Any] = []
        self.federated: dict[str, Any] = {}
        self.agents: list[Any] = []
        self.requests: list[Any] = []
        self.next_id = 1
        self.max_ttl = 3600

    def bundle(self) -> Any:
        b = types_bundle_pb2.Bundle(trust_domain=TD, refresh_hint=60, sequence_number=1)
        b.x509_authorities.add(asn1=self.ca.public_bytes(serialization.Encoding.DER))
        b.jwt_authorities.add(key_id="jwtkey", public_key=self.jwt_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        return b


@_implemented
class FakeEntry(entry_grpc.EntryBase):
    def __init__(self, st: State) -> None:
        self.st = st

    async def BatchCreateEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.requests.append(req)
        results = []
        for e in req.entries:
            if e.spiffe_id.trust_domain != TD:
                results.append(entry_pb2.BatchCreateEntryResponse.Result(status=_status(3, (
                    f'failed to convert entry: invalid spiffe ID: "spiffe://{e.spiffe_id.trust_domain}{e.spiffe_id.path}" '
                    f'is not a member of trust domain "{TD}"'))))
                continue
            key = (e.spiffe_id.path, e.parent_id.path, sorted((s.type, s.value) for s in e.selectors))
            if any((x.spiffe_id.path, x.parent_id.path, sorted((s.type, s.value) for s in x.selectors)) == key for x in self.st.entries):
                results.append(entry_pb2.BatchCreateEntryResponse.Result(status=_status(6, "similar entry already exists")))
                continue
            stored = type(e)()
            stored.CopyFrom(e)
            if not stored.id:
                stored.id = f"id-{self.st.next_id}"
                self.st.next_id += 1
            self.st.entries.append(stored)
            results.append(entry_pb2.BatchCreateEntryResponse.Result(status=_status(), entry=stored))
        await stream.send_message(entry_pb2.BatchCreateEntryResponse(results=results))

    async def BatchUpdateEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.requests.append(req)
        results = []
        for e in req.entries:
            found = [i for i, x in enumerate(self.st.entries) if x.id == e.id]
            if not found:
                results.append(entry_pb2.BatchUpdateEntryResponse.Result(status=_status(5, "entry not found")))
                continue
            e2 = type(e)()
            e2.CopyFrom(e)
            e2.revision_number = self.st.entries[found[0]].revision_number + 1
            self.st.entries[found[0]] = e2
            results.append(entry_pb2.BatchUpdateEntryResponse.Result(status=_status(), entry=e2))
        await stream.send_message(entry_pb2.BatchUpdateEntryResponse(results=results))

    async def BatchDeleteEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        results = []
        for i in req.ids:
            if any(e.id == i for e in self.st.entries):
                self.st.entries = [e for e in self.st.entries if e.id != i]
                results.append(entry_pb2.BatchDeleteEntryResponse.Result(status=_status(), id=i))
            else:
                results.append(entry_pb2.BatchDeleteEntryResponse.Result(status=_status(5, "entry not found"), id=i))
        await stream.send_message(entry_pb2.BatchDeleteEntryResponse(results=results))

    async def GetEntry(self, stream: Any) -> None:
        req = await stream.recv_message()
        for e in self.st.entries:
            if e.id == req.id:
                await stream.send_message(e)
                return
        raise GRPCError(Status.NOT_FOUND, "entry not found")

    async def ListEntries(self, stream: Any) -> None:
        # Pages of two whatever the client asks, to prove the CLI follows page tokens.
        req = await stream.recv_message()
        self.st.requests.append(req)
        matching = [e for e in self.st.entries if not req.filter.HasField("by_downstream") or e.downstream == req.filter.by_downstream.value]
        start = int(req.page_token or 0)
        page = matching[start:start + 2]
        token = str(start + 2) if start + 2 < len(matching) else ""
        await stream.send_message(entry_pb2.ListEntriesResponse(entries=page, next_page_token=token))

    async def CountEntries(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.requests.append(req)
        await stream.send_message(entry_pb2.CountEntriesResponse(count=len(self.st.entries)))


@_implemented
class FakeBundle(bundle_grpc.BundleBase):
    def __init__(self, st: State) -> None:
        self.st = st

    async def GetBundle(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(self.st.bundle())

    async def CountBundles(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(bundle_pb2.CountBundlesResponse(count=1 + len(self.st.federated)))

    async def ListFederatedBundles(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(bundle_pb2.ListFederatedBundlesResponse(bundles=list(self.st.federated.values())))

    async def GetFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        td = req.trust_domain.removeprefix("spiffe://")
        if td not in self.st.federated:
            raise GRPCError(Status.NOT_FOUND, "bundle not found")
        await stream.send_message(self.st.federated[td])

    async def BatchSetFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        results = []
        for b in req.bundle:
            td = b.trust_domain.removeprefix("spiffe://")
            if td == TD:
                results.append(bundle_pb2.BatchSetFederatedBundleResponse.Result(
                    status=_status(3, "failed to convert bundle: trust domain is the server's own")))
                continue
            b.trust_domain = td
            self.st.federated[td] = b
            results.append(bundle_pb2.BatchSetFederatedBundleResponse.Result(status=_status(), bundle=b))
        await stream.send_message(bundle_pb2.BatchSetFederatedBundleResponse(results=results))

    async def BatchDeleteFederatedBundle(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.requests.append(req)
        results = []
        for td in req.trust_domains:
            if self.st.federated.pop(td.removeprefix("spiffe://"), None) is None:
                results.append(bundle_pb2.BatchDeleteFederatedBundleResponse.Result(status=_status(5, "no such bundle"), trust_domain=td))
            else:
                results.append(bundle_pb2.BatchDeleteFederatedBundleResponse.Result(status=_status(), trust_domain=td))
        await stream.send_message(bundle_pb2.BatchDeleteFederatedBundleResponse(results=results))


@_implemented
class FakeAgent(agent_grpc.AgentBase):
    def __init__(self, st: State) -> None:
        self.st = st

    async def CreateJoinToken(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.requests.append(req)
        await stream.send_message(jointoken_pb2.JoinToken(value="tok-123", expires_at=int(time.time()) + req.ttl))

    async def ListAgents(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.requests.append(req)
        await stream.send_message(agent_pb2.ListAgentsResponse(agents=self.st.agents))

    async def CountAgents(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.requests.append(req)
        await stream.send_message(agent_pb2.CountAgentsResponse(count=len(self.st.agents)))

    def _find(self, sid: Any) -> Any:
        for a in self.st.agents:
            if a.id == sid:
                return a
        raise GRPCError(Status.NOT_FOUND, "agent not found")

    async def GetAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(self._find(req.id))

    async def DeleteAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.st.agents.remove(self._find(req.id))
        await stream.send_message(empty_pb2.Empty())

    async def BanAgent(self, stream: Any) -> None:
        req = await stream.recv_message()
        self._find(req.id).banned = True
        await stream.send_message(empty_pb2.Empty())


@_implemented
class FakeSVID(svid_grpc.SVIDBase):
    def __init__(self, st: State) -> None:
        self.st = st

    async def MintX509SVID(self, stream: Any) -> None:
        req = await stream.recv_message()
        csr = x509.load_der_x509_csr(req.csr)
        assert csr.is_signature_valid
        ttl = min(req.ttl or self.st.max_ttl, self.st.max_ttl)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.st.ca.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(seconds=ttl))
            .add_extension(san, critical=False).sign(self.st.ca_key, hashes.SHA256())
        )
        svid = x509svid_pb2.X509SVID(cert_chain=[cert.public_bytes(serialization.Encoding.DER)],
                                     expires_at=int(now.timestamp()) + ttl)
        await stream.send_message(svid_pb2.MintX509SVIDResponse(svid=svid))

    async def MintJWTSVID(self, stream: Any) -> None:
        req = await stream.recv_message()
        ttl = min(req.ttl or 300, self.st.max_ttl)
        now = int(time.time())
        sub = f"spiffe://{req.id.trust_domain}{req.id.path}"
        token = pyjwt.encode({"sub": sub, "aud": list(req.audience), "exp": now + ttl, "iat": now},
                             self.st.jwt_key, algorithm="ES256", headers={"kid": "jwtkey", "typ": "JWT"})
        await stream.send_message(svid_pb2.MintJWTSVIDResponse(svid=jwtsvid_pb2.JWTSVID(
            token=token, id=req.id, expires_at=now + ttl, issued_at=now)))


@pytest.fixture
def fake() -> Iterator[tuple[State, str]]:
    st = State()
    d = tempfile.mkdtemp(prefix="spire-cli-", dir="/tmp")
    sock = os.path.join(d, "api.sock")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    server: Any = None

    def serve() -> None:
        # grpclib binds a server to the loop it is created on: build it in its thread.
        nonlocal server
        asyncio.set_event_loop(loop)
        server = Server([FakeEntry(st), FakeBundle(st), FakeAgent(st), FakeSVID(st)])
        loop.run_until_complete(server.start(path=sock))
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    yield st, sock
    loop.call_soon_threadsafe(server.close)
    asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    shutil.rmtree(d, ignore_errors=True)


def cli(sock: str, capsys: Any, *argv: str) -> tuple[int, str, str]:
    words = [a for a in argv[:2] if not a.startswith("-")]
    code = app.main([*words, "-socketPath", sock, *argv[len(words):]])
    out = capsys.readouterr()
    return code, out.out, out.err


WORKLOAD = ["-parentID", "spiffe://example.org/agent", "-spiffeID", "spiffe://example.org/web", "-selector", "unix:uid:1000"]


# ---------------------------------------------------------------- token


def test_token_generate_prints_token_and_warns_without_spiffe_id(fake, capsys):
    st, sock = fake
    assert cli(sock, capsys, "token", "generate") == (0, "Token: tok-123\nWarning: Missing SPIFFE ID.\n", "")
    assert st.requests[-1].ttl == 600 and not st.requests[-1].HasField("agent_id")
    code, out, _ = cli(sock, capsys, "token", "generate", "-spiffeID", "spiffe://example.org/host", "-ttl", "60")
    assert (code, out) == (0, "Token: tok-123\n")
    assert st.requests[-1].agent_id.path == "/host" and st.requests[-1].ttl == 60
    code, out, _ = cli(sock, capsys, "token", "generate", "-output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["value"] == "tok-123" and isinstance(doc["expires_at"], str)


# ---------------------------------------------------------------- entries


def test_entry_create_prints_entry_block(fake, capsys):
    st, sock = fake
    code, out, err = cli(sock, capsys, "entry", "create", *WORKLOAD, "-x509SVIDTTL", "90", "-dns", "web", "-dns", "www", "-hint", "h")
    assert (code, err) == (0, "")
    assert out == (
        "Entry ID                : id-1\n"
        "SPIFFE ID               : spiffe://example.org/web\n"
        "Parent ID               : spiffe://example.org/agent\n"
        "Revision                : 0\n"
        "X509-SVID TTL           : 90\n"
        "JWT-SVID TTL            : default\n"
        "Selector                : unix:uid:1000\n"
        "DNS name                : web\n"
        "DNS name                : www\n"
        "Hint                    : h\n"
        "\n"
    )


def test_entry_json_escapes_html_like_go(fake, capsys):
    # Go's encoding/json writes <, > and & as \u003c, \u003e and \u0026; spire-agent does the same.
    _, sock = fake
    code, out, _ = cli(sock, capsys, "entry", "create", *WORKLOAD, "-hint", "<a&b>", "-output", "json")
    assert code == 0
    assert '"hint":"\\u003ca\\u0026b\\u003e"' in out
    assert not {"<", ">", "&"} & set(out)
    assert json.loads(out)["results"][0]["entry"]["hint"] == "<a&b>"


def test_entry_create_duplicate_reports_per_item_failure_and_exit_1(fake, capsys):
    _, sock = fake
    assert cli(sock, capsys, "entry", "create", *WORKLOAD)[0] == 0
    code, out, err = cli(sock, capsys, "entry", "create", *WORKLOAD)
    assert code == 1 and out == ""
    assert err.startswith('Failed to create the following entry (code: AlreadyExists, msg: "similar entry already exists"):\n'
                          "Entry ID                : (none)\nSPIFFE ID               : spiffe://example.org/web\n")
    assert err.endswith("\nError: failed to create one or more entries\n")
    # JSON output shows the failed request entry and, like SPIRE, exits 0.
    code, out, _ = cli(sock, capsys, "entry", "create", *WORKLOAD, "-output", "json")
    result = json.loads(out)["results"][0]
    assert code == 0 and result["status"] == {"code": 6, "message": "similar entry already exists"}
    assert result["entry"]["spiffe_id"] == {"trust_domain": "example.org", "path": "/web"}


def test_entry_create_node_parent_is_the_server(fake, capsys):
    st, sock = fake
    code, out, _ = cli(sock, capsys, "entry", "create", "-node", "-spiffeID", "spiffe://example.org/nodes", "-selector", "join_token:x")
    assert code == 0 and "Parent ID               : spiffe://example.org/spire/server\n" in out


def test_entry_create_from_data_file_and_stdin(fake, capsys, tmp_path, monkeypatch):
    st, sock = fake
    data = {"entries": [
        {"spiffe_id": "spiffe://example.org/a", "parent_id": "spiffe://example.org/p", "selectors": [{"type": "u", "value": "1"}]},
        {"spiffe_id": "spiffe://example.org/b", "parent_id": "spiffe://example.org/p", "selectors": [{"type": "u", "value": "2"}], "admin": True},
    ]}
    f = tmp_path / "entries.json"
    f.write_text(json.dumps(data))
    code, out, _ = cli(sock, capsys, "entry", "create", "-data", str(f))
    assert code == 0 and out.count("Entry ID") == 2 and "Admin                   : true" in out
    data["entries"] = data["entries"][:1]
    data["entries"][0]["spiffe_id"] = "spiffe://example.org/c"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(data)))
    assert cli(sock, capsys, "entry", "create", "-data", "-")[0] == 0
    assert len(st.entries) == 3
    code, _, err = cli(sock, capsys, "entry", "create", "-data", str(tmp_path / "missing.json"))
    assert code == 1 and err == f"Error: open {tmp_path / 'missing.json'}: no such file or directory\n"


def test_entry_create_other_trust_domain_is_invalid_argument(fake, capsys):
    _, sock = fake
    code, _, err = cli(sock, capsys, "entry", "create", "-parentID", "spiffe://example.org/p", "-spiffeID", "spiffe://other.org/w", "-selector", "a:b")
    assert code == 1
    assert err.startswith('Failed to create the following entry (code: InvalidArgument, msg: "failed to convert entry: invalid spiffe ID: '
                          '\\"spiffe://other.org/w\\" is not a member of trust domain \\"example.org\\""):\n')


def test_entry_show_pages_sorts_and_filters_like_spire(fake, capsys):
    st, sock = fake
    for name in ("c", "a", "b", "d", "e"):
        cli(sock, capsys, "entry", "create", "-parentID", "spiffe://example.org/p", "-spiffeID", f"spiffe://example.org/{name}", "-selector", "u:1")
    code, out, _ = cli(sock, capsys, "entry", "show")
    assert code == 0 and out.startswith("Found 5 entries\nEntry ID")
    ids = [line.split(": ")[1] for line in out.splitlines() if line.startswith("SPIFFE ID")]
    assert ids == [f"spiffe://example.org/{n}" for n in "abcde"]
    req = st.requests[-1]
    assert req.page_size == 500 and req.filter.HasField("by_downstream") and not req.filter.by_downstream.value

    cli(sock, capsys, "entry", "show", "-selector", "u:1", "-selector", "k:v", "-matchSelectorsOn", "any",
        "-federatesWith", "spiffe://other.org", "-hint", "h", "-spiffeID", "spiffe://example.org/a", "-downstream")
    f = st.requests[-1].filter
    assert [(s.type, s.value) for s in f.by_selectors.selectors] == [("u", "1"), ("k", "v")] and f.by_selectors.match == 3
    assert list(f.by_federates_with.trust_domains) == ["spiffe://other.org"] and f.by_federates_with.match == 2
    assert f.by_hint.value == "h" and f.by_spiffe_id.path == "/a" and f.by_downstream.value

    code, out, _ = cli(sock, capsys, "entry", "show", "-entryID", "id-2")
    assert code == 0 and out.startswith("Found 1 entry\nEntry ID                : id-2\n")
    code, _, err = cli(sock, capsys, "entry", "show", "-entryID", "nope")
    assert (code, err) == (1, "Error: error fetching entry ID nope: rpc error: code = NotFound desc = entry not found\n")

    code, out, _ = cli(sock, capsys, "entry", "show", "-output", "json")
    doc = json.loads(out)
    assert code == 0 and list(doc) == ["entries", "next_page_token"] and len(doc["entries"]) == 5
    assert out == json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n"

    assert cli(sock, capsys, "entry", "count") == (0, "5 registration entries\n", "")
    assert cli(sock, capsys, "entry", "count", "-output", "json") == (0, '{"count":5}\n', "")


def test_entry_update_replaces_and_keeps_unnamed_attributes(fake, capsys):
    st, sock = fake
    cli(sock, capsys, "entry", "create", *WORKLOAD, "-entryID", "E", "-jwtSVIDIncludeJTI")
    assert st.entries[0].additional_attributes.jwt_svid_include_jti
    code, out, _ = cli(sock, capsys, "entry", "update", "-entryID", "E", "-parentID", "spiffe://example.org/agent",
                       "-spiffeID", "spiffe://example.org/web2", "-selector", "unix:uid:1", "-disableX509SVIDPrefetch")
    assert code == 0 and "Revision                : 1\n" in out and "spiffe://example.org/web2" in out
    attrs = st.entries[0].additional_attributes
    assert attrs.disable_x509_svid_prefetch and attrs.jwt_svid_include_jti
    code, _, err = cli(sock, capsys, "entry", "update", "-entryID", "missing", "-parentID", "spiffe://example.org/a",
                       "-spiffeID", "spiffe://example.org/b", "-selector", "a:b")
    assert code == 1 and err.startswith('Failed to update the following entry (code: NotFound, msg: "entry not found"):\nEntry ID                : missing\n')
    assert err.endswith("Error: failed to update one or more entries\n")


def test_entry_delete_output(fake, capsys, tmp_path):
    st, sock = fake
    cli(sock, capsys, "entry", "create", *WORKLOAD, "-entryID", "E1")
    assert cli(sock, capsys, "entry", "delete", "-entryID", "E1") == (0, "Deleted entry with ID: E1\n\n\nDeleted 1 entries successfully", "")
    cli(sock, capsys, "entry", "create", *WORKLOAD, "-entryID", "E2")
    f = tmp_path / "ids.json"
    f.write_text(json.dumps({"ids": ["E2", "gone"]}))
    code, out, err = cli(sock, capsys, "entry", "delete", "-file", str(f))
    assert code == 1
    assert out == "Deleted entry with ID: E2\n\n\n\n\nDeleted 1 entries successfully, but failed to delete 1 entries"
    assert err == 'Failed to delete entry with ID gone (code: NotFound, msg: "entry not found")\nError: failed to delete one or more entries\n'
    code, out, _ = cli(sock, capsys, "entry", "delete", "-entryID", "gone", "-output", "json")
    assert code == 0 and json.loads(out) == {"results": [{"status": {"code": 5, "message": "entry not found"}, "id": "gone"}]}


# ---------------------------------------------------------------- bundles


def test_bundle_show_pem_spiffe_and_json(fake, capsys):
    st, sock = fake
    code, out, _ = cli(sock, capsys, "bundle", "show")
    assert code == 0 and out == st.ca.public_bytes(serialization.Encoding.PEM).decode()
    code, out, _ = cli(sock, capsys, "bundle", "show", "-format", "spiffe")
    doc = json.loads(out)
    assert [k["use"] for k in doc["keys"]] == ["x509-svid", "jwt-svid"] and doc["spiffe_refresh_hint"] == 60
    code, out, _ = cli(sock, capsys, "bundle", "show", "-output", "json")
    doc = json.loads(out)
    assert doc["trust_domain"] == TD and doc["refresh_hint"] == "60" and doc["jwt_authorities"][0]["key_id"] == "jwtkey"


def test_bundle_set_list_delete_federated(fake, capsys, tmp_path, monkeypatch):
    st, sock = fake
    pem = tmp_path / "other.pem"
    pem.write_bytes(st.ca.public_bytes(serialization.Encoding.PEM))
    assert cli(sock, capsys, "bundle", "set", "-id", "spiffe://other.org", "-path", str(pem)) == (0, "bundle set.\n", "")
    # SPIFFE format from stdin
    spiffe_doc = cli(sock, capsys, "bundle", "show", "-format", "spiffe")[1]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(spiffe_doc.encode())))
    assert cli(sock, capsys, "bundle", "set", "-id", "spiffe://third.org", "-format", "spiffe") == (0, "bundle set.\n", "")
    assert st.federated["third.org"].jwt_authorities[0].key_id == "jwtkey"

    code, out, _ = cli(sock, capsys, "bundle", "list")
    header = "****************************************\n* {}\n****************************************\n"
    ca_pem = st.ca.public_bytes(serialization.Encoding.PEM).decode()
    assert out == header.format("other.org") + ca_pem + "\n" + header.format("third.org") + ca_pem
    assert cli(sock, capsys, "bundle", "list", "-id", "spiffe://other.org")[1] == ca_pem
    assert cli(sock, capsys, "bundle", "count") == (0, "3 bundles\n", "")

    code, _, err = cli(sock, capsys, "bundle", "set", "-id", "spiffe://example.org", "-path", str(pem))
    assert (code, err) == (1, "Error: failed to set federated bundle: failed to convert bundle: trust domain is the server's own\n")

    assert cli(sock, capsys, "bundle", "delete", "-id", "spiffe://other.org", "-mode", "dissociate") == (0, "bundle deleted.\n", "")
    assert st.requests[-1].mode == 2
    code, _, err = cli(sock, capsys, "bundle", "delete", "-id", "spiffe://other.org")
    assert (code, err) == (1, 'Error: failed to delete federated bundle "spiffe://other.org": no such bundle\n')
    code, _, err = cli(sock, capsys, "bundle", "list", "-id", "spiffe://nope.org")
    assert (code, err) == (1, "Error: rpc error: code = NotFound desc = bundle not found\n")


# ---------------------------------------------------------------- agents


def _agent(path: str, **kw: Any) -> Any:
    a = types_agent_pb2.Agent(attestation_type="join_token", x509svid_serial_number="123", x509svid_expires_at=0, **kw)
    a.id.trust_domain, a.id.path = TD, path
    return a


def test_agent_list_show_count_evict_ban(fake, capsys):
    st, sock = fake
    assert cli(sock, capsys, "agent", "list") == (0, "No attested agents found\n", "")
    assert cli(sock, capsys, "agent", "list", "-output", "json") == (0, '{"agents":[],"next_page_token":""}\n', "")
    st.agents.append(_agent("/spire/agent/join_token/t1", agent_version="1.2.3"))
    code, out, _ = cli(sock, capsys, "agent", "list", "-banned", "false", "-canReattest", "maybe", "-attestationType", "join_token",
                       "-selector", "a:b", "-matchSelectorsOn", "exact", "-expiresBefore", "2030-01-01 00:00:00 +0000 +00")
    f = st.requests[-1].filter
    assert f.HasField("by_banned") and not f.by_banned.value and not f.HasField("by_can_reattest")
    assert f.by_attestation_type == "join_token" and f.by_selector_match.match == 0
    assert f.by_expires_before == "2030-01-01 00:00:00 +0000 +00"
    assert out.startswith("Found 1 attested agent:\n\nSPIFFE ID         : spiffe://example.org/spire/agent/join_token/t1\n"
                          "Attestation type  : join_token\nExpiration time   : 19")
    assert out.endswith("Serial number     : 123\nCan re-attest     : false\nAgent version     : 1.2.3\n\n")
    assert cli(sock, capsys, "agent", "count") == (0, "1 attested agent\n", "")

    aid = "spiffe://example.org/spire/agent/join_token/t1"
    assert cli(sock, capsys, "agent", "ban", "-spiffeID", aid) == (0, "Agent banned successfully\n", "")
    code, out, _ = cli(sock, capsys, "agent", "show", "-spiffeID", aid)
    assert out.startswith("Found an attested agent given its SPIFFE ID\n\nSPIFFE ID         : " + aid)
    assert "Banned            : true\n" in out and "Serial number" not in out
    assert cli(sock, capsys, "agent", "evict", "-spiffeID", aid, "-output", "json") == (0, "{}\n", "")
    code, _, err = cli(sock, capsys, "agent", "evict", "-spiffeID", aid)
    assert (code, err) == (1, "Error: rpc error: code = NotFound desc = agent not found\n")


def test_agent_purge_deletes_expired_reattestable_agents(fake, capsys):
    st, sock = fake
    st.agents.append(_agent("/old", can_reattest=True))
    code, out, _ = cli(sock, capsys, "agent", "purge", "-dryRun")
    assert out == "Found 1 expired agent\n\n\nAgents that can be purged:\nSPIFFE ID         : spiffe://example.org/old\n"
    assert st.requests[-1].filter.by_can_reattest.value
    assert cli(sock, capsys, "agent", "purge", "-output", "json") == (
        0, '{"expired_agents":[{"agent_id":"spiffe://example.org/old","deleted":true}]}\n', "")
    assert cli(sock, capsys, "agent", "purge") == (0, "No agents to purge.\n", "")


# ---------------------------------------------------------------- minting


def test_x509_mint_stdout_chains_to_bundle(fake, capsys):
    st, sock = fake
    code, out, err = cli(sock, capsys, "x509", "mint", "-spiffeID", "spiffe://example.org/w", "-dns", "w.example.org")
    assert (code, err) == (0, "")
    svid_part, rest = out.split("\nPrivate key:\n")
    key_part, roots_part = rest.split("\nRoot CAs:\n")
    assert svid_part.startswith("X509-SVID:\n-----BEGIN CERTIFICATE-----")
    cert = x509.load_pem_x509_certificate(svid_part.removeprefix("X509-SVID:\n").encode())
    cert.verify_directly_issued_by(st.ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/w"]
    assert san.get_values_for_type(x509.DNSName) == ["w.example.org"]
    key = serialization.load_pem_private_key(key_part.encode(), None)
    assert key.public_key() == cert.public_key() and key_part.startswith("-----BEGIN PRIVATE KEY-----")
    assert roots_part == st.ca.public_bytes(serialization.Encoding.PEM).decode() + "\n"


def test_x509_mint_warns_when_ttl_capped_and_writes_files(fake, capsys, tmp_path):
    st, sock = fake
    code, out, err = cli(sock, capsys, "x509", "mint", "-spiffeID", "spiffe://example.org/w", "-ttl", "2h", "-write", str(tmp_path))
    assert code == 0
    assert err.startswith('X509-SVID lifetime was capped shorter than specified ttl; expires "') and err.endswith('Z"\n')
    assert out == (f"X509-SVID written to {tmp_path}/svid.pem\nPrivate key written to {tmp_path}/key.pem\n"
                   f"Root CAs written to {tmp_path}/bundle.pem\n")
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "svid.pem").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "bundle.pem").read_bytes() == st.ca.public_bytes(serialization.Encoding.PEM)
    code, out, _ = cli(sock, capsys, "x509", "mint", "-spiffeID", "spiffe://example.org/w", "-output", "json")
    doc = json.loads(out)
    assert list(doc) == ["x509_svid", "private_key", "root_cas"]
    assert base64.b64decode(doc["root_cas"][0]) == st.ca.public_bytes(serialization.Encoding.DER)


def test_jwt_mint_prints_token_signed_by_bundle_key(fake, capsys, tmp_path):
    st, sock = fake
    code, out, err = cli(sock, capsys, "jwt", "mint", "-spiffeID", "spiffe://example.org/w", "-audience", "a1", "-audience", "a2")
    assert (code, err) == (0, "")
    claims = pyjwt.decode(out.strip(), st.jwt_key.public_key(), algorithms=["ES256"], audience="a2")
    assert claims["sub"] == "spiffe://example.org/w" and claims["aud"] == ["a1", "a2"]
    code, out, _ = cli(sock, capsys, "jwt", "mint", "-spiffeID", "spiffe://example.org/w", "-audience", "a", "-output", "json")
    assert json.loads(out)["svid"]["id"] == {"trust_domain": TD, "path": "/w"}
    path = tmp_path / "token"
    code, out, err = cli(sock, capsys, "jwt", "mint", "-spiffeID", "spiffe://example.org/w", "-audience", "a", "-ttl", "5h", "-write", str(path))
    assert out == f"JWT-SVID written to {path}\n" and "JWT-SVID lifetime was capped shorter than specified ttl" in err
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().count(".") == 2
