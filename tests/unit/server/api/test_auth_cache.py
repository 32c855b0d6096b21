"""The middleware's remembered agent state over real gRPC: a connection's certificate is parsed
once and an agent's node is read once, yet a ban, an eviction, a renewal, new selectors or a
bundle change made on this server take effect on the agent's very next call, and another
server's changes once its node events (or the bundle's second) are due."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import SpiffeId
from spire_py.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from spire_py.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from spire_py.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from spire_py.proto.spire.api.types import selector_pb2
from spire_py.proto.spire.api.types import entry_pb2 as types_entry_pb2
from spire_py.server.api import auth
from spire_py.server.datastore import cached
from spire_py.server.datastore.models import AttestedNode
from tests.unit.helpers.inprocess_server import TD, Handle, csr_for, spiffe_id


async def _agent(server: Handle) -> tuple[str, entry_grpc.EntryStub, Any, Any]:
    agent_id, chain, key = await server.attest_agent("cache-agent")
    stub = server.tls_stub(entry_grpc.EntryStub, chain, key)
    for _ in range(2):  # the second call is served from what the first remembered
        await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    return agent_id, stub, chain, key


def _agent_pb(agent_id: str) -> Any:
    return spiffe_id(agent_id.removeprefix(f"spiffe://{TD}"))


async def _refused(stub: entry_grpc.EntryStub) -> str:
    with pytest.raises(GRPCError) as exc:
        await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert exc.value.status == Status.PERMISSION_DENIED
    return str(exc.value.message)


async def test_a_banned_agent_is_refused_on_its_very_next_call(server: Handle) -> None:
    agent_id, stub, _, _ = await _agent(server)
    await server.agent_api().BanAgent(agent_pb2.BanAgentRequest(id=_agent_pb(agent_id)))
    assert await _refused(stub) == "agent is banned"


async def test_an_evicted_agent_is_refused_on_its_very_next_call(server: Handle) -> None:
    agent_id, stub, _, _ = await _agent(server)
    await server.agent_api().DeleteAgent(agent_pb2.DeleteAgentRequest(id=_agent_pb(agent_id)))
    assert await _refused(stub) == "agent is not attested"


async def test_the_old_svid_is_refused_once_the_renewed_one_was_used(server: Handle) -> None:
    agent_id, stub, chain, key = await _agent(server)
    as_agent = server.tls_stub(agent_grpc.AgentStub, chain, key)
    renewed = await as_agent.RenewAgent(agent_pb2.RenewAgentRequest(params=agent_pb2.AgentX509SVIDParams(csr=csr_for(key))))
    new_chain = [x509.load_der_x509_certificate(d) for d in renewed.svid.cert_chain]
    await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())  # the old one still works...
    fresh = server.tls_stub(entry_grpc.EntryStub, new_chain, key)
    await fresh.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())  # ...until the new one is used
    assert await _refused(stub) == "agent SVID does not match expected serial number"


async def test_new_node_selectors_decide_the_next_sync(server: Handle) -> None:
    agent_id, stub, _, _ = await _agent(server)
    alias = types_entry_pb2.Entry(spiffe_id=spiffe_id("/node-alias"), parent_id=spiffe_id("/spire/server"),
                                  selectors=[selector_pb2.Selector(type="tag", value="blue")])
    await server.admin_stub(entry_grpc.EntryStub).BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=[alias]))
    got = await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert "/node-alias" not in {e.spiffe_id.path for e in got.entries}
    # As a re-attestation does: the node's selectors are replaced through the server's datastore.
    core = server.server.core
    assert core is not None
    await core.db(core.datastore.set_node_selectors, agent_id, [Selector("tag", "blue")])
    got = await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert "/node-alias" in {e.spiffe_id.path for e in got.entries}


async def test_another_servers_ban_is_seen_once_node_events_are_due(server: Handle, monkeypatch: Any) -> None:
    agent_id, stub, _, _ = await _agent(server)
    core = server.server.core
    assert core is not None
    # Another server sharing the database bans the agent: written past this server's cache.
    core.cached.store.update_attested_node(AttestedNode(agent_id), {"cert_serial_number", "new_cert_serial_number"})
    monkeypatch.setattr(cached, "NODE_EVENTS_POLL", 0.0)
    core.cached._next_poll = 0.0  # the poll is due now
    assert await _refused(stub) == "agent is banned"


async def test_an_agent_svid_that_expired_on_an_open_connection_is_refused(server: Handle) -> None:
    agent_id, _, chain, _ = await _agent(server)
    core = server.server.core
    assert core is not None
    peer = auth._Peer(SpiffeId.parse(agent_id), chain[0], str(chain[0].serial_number), time.time() - 1)
    with pytest.raises(GRPCError) as exc:
        await auth._check_agent(core, peer.spiffe_id, peer)
    assert (exc.value.status, exc.value.message) == (Status.PERMISSION_DENIED, f'agent "{agent_id}" SVID is expired')


async def test_a_connections_certificate_is_parsed_once(server: Handle) -> None:
    _, stub, chain, _ = await _agent(server)
    der = chain[0].public_bytes(serialization.Encoding.DER)
    peer = auth._peers[der]
    await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert auth._peers[der] is peer


async def test_a_bundle_change_is_served_at_once_and_a_peers_within_a_second(server: Handle, monkeypatch: Any) -> None:
    _, _, chain, key = await _agent(server)
    as_agent = server.tls_stub(bundle_grpc.BundleStub, chain, key)
    before = await as_agent.GetBundle(bundle_pb2.GetBundleRequest())
    core = server.server.core
    assert core is not None
    extra = (await server.downstream_svid())[0][0].public_bytes(serialization.Encoding.DER)
    await server.admin_stub(bundle_grpc.BundleStub).AppendBundle(bundle_pb2.AppendBundleRequest(
        x509_authorities=[{"asn1": extra}]))
    after = await as_agent.GetBundle(bundle_pb2.GetBundleRequest())
    assert len(after.x509_authorities) == len(before.x509_authorities) + 1
    # Another server's write (past this server's cache) shows once the second has passed.
    b = core.cached.store.fetch_bundle(f"spiffe://{TD}")
    b.x509_authorities = b.x509_authorities[:1]
    core.cached.store.set_bundle(b)
    monkeypatch.setattr(cached, "BUNDLE_TTL", 0.0)
    assert len((await as_agent.GetBundle(bundle_pb2.GetBundleRequest())).x509_authorities) == 1


async def test_another_servers_entry_reaches_the_next_sync_once_entry_events_are_due(
        server: Handle, monkeypatch: Any) -> None:
    agent_id, stub, _, _ = await _agent(server)
    core = server.server.core
    assert core is not None
    # Written by another server sharing the database: past this server's datastore.
    core.cached.store.create_entry(Entry(spiffe_id=f"spiffe://{TD}/from-peer", parent_id=agent_id,
                                         selectors=[Selector("unix", "uid:1")]))
    monkeypatch.setattr(cached, "ENTRY_EVENTS_POLL", 0.0)
    got = await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert "/from-peer" in {e.spiffe_id.path for e in got.entries}
