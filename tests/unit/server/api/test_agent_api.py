"""spire.api.server.agent.v1.Agent over real gRPC against an in-process server: attestation
and renewal as an agent, the admin methods on attested agents, join tokens; and the agent
ID, selector-filter and CSR checks of server/api/convert.py as these methods answer them.
(Join token values are tested in test_join_token_values.py.)"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import wrappers_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.common.tls import spiffe_id_of
from spire_py.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from spire_py.proto.spire.api.types import attestation_pb2, selector_pb2
from tests.unit.helpers.inprocess_server import TD, Handle, csr_for, spiffe_id


def api(server: Handle) -> agent_grpc.AgentStub:
    return server.agent_api()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def attest_raw(server: Handle, req: agent_pb2.AttestAgentRequest) -> agent_pb2.AttestAgentResponse:
    async with server.tcp().AttestAgent.open() as stream:
        await stream.send_message(req, end=True)
        return await stream.recv_message()


def attest_request(data_type: str = "join_token", payload: bytes = b"t", csr: bytes | None = None,
                   **omit: bool) -> agent_pb2.AttestAgentRequest:
    params = agent_pb2.AttestAgentRequest.Params(
        data=attestation_pb2.AttestationData(type=data_type, payload=payload),
        params=agent_pb2.AgentX509SVIDParams(csr=csr_for(new_key()) if csr is None else csr))
    for field in omit:
        params.ClearField(field)
    return agent_pb2.AttestAgentRequest(params=params)


# --- the agent ID argument (convert.id_from_proto, then "is an agent") ---------------------------

@pytest.mark.parametrize("sid,message", [
    (spiffe_id("", td=""), "invalid agent ID: request must specify SPIFFE ID"),
    (spiffe_id("/spire/agent/join_token/x", "other.org"),
     'invalid agent ID: "spiffe://other.org/spire/agent/join_token/x" is not a member of trust domain "example.org"'),
    (spiffe_id("spire/agent/x"), 'invalid agent ID: SPIFFE ID path "spire/agent/x": path must start with "/"'),
    (spiffe_id("/workload"), f'invalid agent ID: "spiffe://{TD}/workload" is not an agent in trust domain "{TD}"'),
], ids=["missing", "other-td", "bad-path", "not-an-agent"])
async def test_get_delete_ban_refuse_an_invalid_agent_id(server: Handle, sid: object, message: str) -> None:
    for method, Request in (("GetAgent", agent_pb2.GetAgentRequest), ("DeleteAgent", agent_pb2.DeleteAgentRequest),
                            ("BanAgent", agent_pb2.BanAgentRequest)):
        with pytest.raises(GRPCError) as exc:
            await getattr(api(server), method)(Request(id=sid))
        assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, message), method


# --- list filters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flt,message", [
    (agent_pb2.ListAgentsRequest.Filter(by_selector_match=selector_pb2.SelectorMatch(
        selectors=[selector_pb2.Selector(value="x")])), "invalid selectors filter: missing selector type"),
    (agent_pb2.ListAgentsRequest.Filter(by_selector_match=selector_pb2.SelectorMatch(
        selectors=[selector_pb2.Selector(type="a:b", value="x")])), 'invalid selectors filter: selector type contains ":"'),
    (agent_pb2.ListAgentsRequest.Filter(by_expires_before="tomorrow"), "failed to parse by_expires_before filter"),
], ids=["selector-type-missing", "selector-type-colon", "expires-before"])
async def test_list_agents_refuses_an_invalid_filter(server: Handle, flt: object, message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).ListAgents(agent_pb2.ListAgentsRequest(filter=flt))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, message)


async def test_list_agents_refuses_a_negative_page_size(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).ListAgents(agent_pb2.ListAgentsRequest(page_size=-1))
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "page size must not be negative")


# --- AttestAgent: malformed requests (one server each: attestation is rate limited per IP) ----------

@pytest.mark.parametrize("req,status,message", [
    (agent_pb2.AttestAgentRequest(), Status.INVALID_ARGUMENT, "malformed param: missing params"),
    (attest_request(data=True), Status.INVALID_ARGUMENT, "malformed param: missing attestation data"),
    (attest_request(params=True), Status.INVALID_ARGUMENT, "malformed param: missing X509-SVID params"),
    (attest_request(csr=b""), Status.INVALID_ARGUMENT, "malformed param: missing CSR"),
    (attest_request(csr=b"not DER"), Status.INVALID_ARGUMENT, "malformed CSR: "),
    (attest_request("tpm"), Status.FAILED_PRECONDITION,
     'error getting node attestor: could not find node attestor type "tpm"'),
], ids=["no-params", "no-data", "no-svid-params", "no-csr", "bad-csr", "unknown-attestor"])
async def test_attest_agent_refuses_a_malformed_request(server: Handle, req: agent_pb2.AttestAgentRequest,
                                                       status: Status, message: str) -> None:
    with pytest.raises(GRPCError) as exc:
        await attest_raw(server, req)
    assert exc.value.status == status and exc.value.message.startswith(message), exc.value.message


# --- the main path of each RPC ----------------------------------------------------------------

async def test_attest_renew_and_the_admin_methods(server: Handle) -> None:
    token = await api(server).CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600))
    assert token.value and token.expires_at > 0
    resp, key = await server.attest_join_token(token.value.encode())
    chain = [x509.load_der_x509_certificate(der) for der in resp.result.svid.cert_chain]
    agent_id = f"spiffe://{TD}/spire/agent/join_token/{token.value}"
    assert str(spiffe_id_of(chain[0])) == agent_id and not resp.result.reattestable
    agent_sid = spiffe_id(agent_id.removeprefix(f"spiffe://{TD}"))

    as_agent = server.tls_stub(agent_grpc.AgentStub, chain, key)
    with pytest.raises(GRPCError) as exc:
        await as_agent.RenewAgent(agent_pb2.RenewAgentRequest())
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "params cannot be nil")
    renewed = await as_agent.RenewAgent(agent_pb2.RenewAgentRequest(
        params=agent_pb2.AgentX509SVIDParams(csr=csr_for(key))))
    assert renewed.svid.id.path == agent_sid.path

    assert (await api(server).CountAgents(agent_pb2.CountAgentsRequest())).count == 1
    listed = await api(server).ListAgents(agent_pb2.ListAgentsRequest(filter=agent_pb2.ListAgentsRequest.Filter(
        by_attestation_type="join_token", by_banned=wrappers_pb2.BoolValue(value=False))))
    assert [a.id.path for a in listed.agents] == [agent_sid.path]
    got = await api(server).GetAgent(agent_pb2.GetAgentRequest(id=agent_sid))
    assert got.attestation_type == "join_token" and not got.banned and got.x509svid_serial_number

    await api(server).BanAgent(agent_pb2.BanAgentRequest(id=agent_sid))
    assert (await api(server).GetAgent(agent_pb2.GetAgentRequest(id=agent_sid))).banned
    with pytest.raises(GRPCError) as exc:
        await as_agent.RenewAgent(agent_pb2.RenewAgentRequest(params=agent_pb2.AgentX509SVIDParams(csr=csr_for(key))))
    assert exc.value.status == Status.PERMISSION_DENIED

    await api(server).DeleteAgent(agent_pb2.DeleteAgentRequest(id=agent_sid))
    with pytest.raises(GRPCError) as exc:
        await api(server).GetAgent(agent_pb2.GetAgentRequest(id=agent_sid))
    assert (exc.value.status, exc.value.message) == (Status.NOT_FOUND, "agent not found")
    with pytest.raises(GRPCError) as exc:
        await api(server).BanAgent(agent_pb2.BanAgentRequest(id=agent_sid))
    assert (exc.value.status, exc.value.message) == (Status.NOT_FOUND, "agent not found")
    with pytest.raises(GRPCError) as exc:  # `agent evict` of an unknown agent, as SPIRE
        await api(server).DeleteAgent(agent_pb2.DeleteAgentRequest(id=agent_sid))
    assert (exc.value.status, exc.value.message) == (Status.NOT_FOUND, "agent not found")


async def test_create_join_token_checks_ttl_and_alias(server: Handle) -> None:
    with pytest.raises(GRPCError) as exc:
        await api(server).CreateJoinToken(agent_pb2.CreateJoinTokenRequest())
    assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, "ttl is required, you must provide one")
    with pytest.raises(GRPCError) as exc:
        await api(server).CreateJoinToken(agent_pb2.CreateJoinTokenRequest(
            ttl=60, agent_id=spiffe_id("/host", "other.org")))
    assert (exc.value.status, exc.value.message) == (
        Status.INVALID_ARGUMENT, 'invalid agent ID: "spiffe://other.org/host" is not a member of trust domain "example.org"')
    made = await api(server).CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=60, agent_id=spiffe_id("/host")))
    assert server.datastore.fetch_join_token(made.value) is not None


async def test_post_status_is_not_implemented(server: Handle) -> None:
    _, chain, key = await server.attest_agent("api-status")
    with pytest.raises(GRPCError) as exc:
        await server.tls_stub(agent_grpc.AgentStub, chain, key).PostStatus(agent_pb2.PostStatusRequest())
    assert exc.value.status == Status.UNIMPLEMENTED
