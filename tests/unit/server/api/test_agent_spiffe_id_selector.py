"""experimental.agent_spiffe_id_as_selector: an attested agent's node selectors gain
``spiffe_id:<agent ID>``, as SPIRE's AttestAgent adds it, so a node entry can select one agent."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.proto.spire.api.types import attestation_pb2
from tests.unit.helpers.inprocess_server import TD, csr_for, running_server


async def selectors_after_attestation(tmp_path, extra: str) -> tuple[str, list[tuple[str, str]]]:
    async with running_server(tmp_path, extra) as srv:
        await srv.agent_api().CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600, token="tok"))
        req = agent_pb2.AttestAgentRequest(params=agent_pb2.AttestAgentRequest.Params(
            data=attestation_pb2.AttestationData(type="join_token", payload=b"tok"),
            params=agent_pb2.AgentX509SVIDParams(csr=csr_for(ec.generate_private_key(ec.SECP256R1())))))
        async with srv.tcp().AttestAgent.open() as stream:
            await stream.send_message(req, end=True)
            assert (await stream.recv_message()).result.svid.id.path
        agent_id = f"spiffe://{TD}/spire/agent/join_token/tok"
        node = srv.datastore.fetch_attested_node(agent_id, with_selectors=True)
        return agent_id, sorted((s.type, s.value) for s in node.selectors)


async def test_the_agent_id_is_a_node_selector_when_enabled(tmp_path):
    (tmp_path / "on").mkdir()
    agent_id, selectors = await selectors_after_attestation(
        tmp_path / "on", "experimental { agent_spiffe_id_as_selector = true }")
    assert ("spiffe_id", agent_id) in selectors


async def test_by_default_the_agent_id_is_no_selector(tmp_path):
    _, selectors = await selectors_after_attestation(tmp_path, "")
    assert not any(t == "spiffe_id" for t, _ in selectors)
