"""spire-server agent list | show | count | evict | ban | purge."""

from __future__ import annotations

import re
import time
from typing import Any, Callable, cast

from google.protobuf import wrappers_pb2

from ...common.cli import CommandError, Context, FlagSet
from ...common.cliprinter import go_json, go_time, is_json, pluralize, print_proto_json, unix_time
from ...common.registration import MATCH_NUMBERS as MATCH
from ...proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from ...proto.spire.api.types import agent_pb2 as types_agent_pb2
from ...proto.spire.api.types import selector_pb2
from .arguments import duration_seconds, id_string, parse_selector, spiffe_id_proto
from .client import AdminClient, call, socket_flags

LIST_PAGE_SIZE = 1000
EXPIRES_LAYOUT = "2006-01-02 15:04:05 -0700 -07"
_EXPIRES_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4} [+-]\d{2}$")


def print_agents(ctx: Context, agents: Any) -> None:
    for a in agents:
        ctx.out(f"SPIFFE ID         : {id_string(a.id)}")
        ctx.out(f"Attestation type  : {a.attestation_type}")
        ctx.out(f"Expiration time   : {go_time(unix_time(a.x509svid_expires_at, local=True))}")
        # Banned agents have no serial number.
        if a.banned:
            ctx.out("Banned            : true")
        else:
            ctx.out(f"Serial number     : {a.x509svid_serial_number}")
        ctx.out(f"Can re-attest     : {'true' if a.can_reattest else 'false'}")
        if a.agent_version:
            ctx.out(f"Agent version     : {a.agent_version}")
        ctx.out()


# ---------------------------------------------------------------- list / count


def filter_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.list("selector", "A colon-delimited type:value selector. Can be used more than once")
    fs.string("attestationType", "", "Filter by attestation type, like join_token or x509pop.")
    # Three-state filters: "true", "false", anything else means all.
    fs.string("canReattest", "", "Filter based on string received, 'true': agents that can reattest, 'false': agents that can't reattest, other value will return all.")
    fs.string("banned", "", "Filter based on string received, 'true': banned agents, 'false': not banned agents, other value will return all.")
    fs.string("expiresBefore", "", f'Filter by expiration time (format: "{EXPIRES_LAYOUT}")')
    fs.string("matchSelectorsOn", "superset", "The match mode used when filtering by selectors. Options: exact, any, superset and subset")


def _fill_filter(f: dict[str, Any], filt: Any) -> None:
    if f["selector"]:
        if f["matchSelectorsOn"] not in MATCH:
            raise CommandError("unsupported match behavior")
        sels = []
        for s in f["selector"]:
            try:
                sels.append(parse_selector(s))
            except CommandError as exc:
                raise CommandError(f'error parsing selector "{s}": {exc}') from None
        filt.by_selector_match.CopyFrom(selector_pb2.SelectorMatch(
            selectors=sels, match=cast("selector_pb2.SelectorMatch.MatchBehavior", MATCH[f["matchSelectorsOn"]])))
    if f["expiresBefore"]:
        if not _EXPIRES_RE.match(f["expiresBefore"]):
            raise CommandError(f'date is not valid: parsing time "{f["expiresBefore"]}" as "{EXPIRES_LAYOUT}": cannot parse "{f["expiresBefore"]}" as "{EXPIRES_LAYOUT}"')
        filt.by_expires_before = f["expiresBefore"]
    if f["attestationType"]:
        filt.by_attestation_type = f["attestationType"]
    if f["canReattest"] in ("true", "false"):
        filt.by_can_reattest.CopyFrom(wrappers_pb2.BoolValue(value=f["canReattest"] == "true"))
    if f["banned"] in ("true", "false"):
        filt.by_banned.CopyFrom(wrappers_pb2.BoolValue(value=f["banned"] == "true"))


async def list_(ctx: Context) -> int:
    as_json = is_json(ctx)
    req = agent_pb2.ListAgentsRequest(page_size=LIST_PAGE_SIZE)
    _fill_filter(ctx.flags, req.filter)
    resp = agent_pb2.ListAgentsResponse()
    async with AdminClient(ctx.flags["socketPath"]) as c:
        stub = c.stub(agent_grpc.AgentStub)
        while True:
            page = await call(stub.ListAgents(req))
            resp.agents.extend(page.agents)
            if not page.next_page_token:
                break
            req.page_token = page.next_page_token
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    if not resp.agents:
        ctx.out("No attested agents found")
        return 0
    ctx.out(pluralize(f"Found {len(resp.agents)} attested ", "agent", "agents", len(resp.agents)) + ":\n")
    print_agents(ctx, resp.agents)
    return 0


async def count(ctx: Context) -> int:
    as_json = is_json(ctx)
    req = agent_pb2.CountAgentsRequest()
    _fill_filter(ctx.flags, req.filter)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(agent_grpc.AgentStub).CountAgents(req))
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    ctx.out(pluralize(f"{resp.count} attested ", "agent", "agents", resp.count))
    return 0


# ---------------------------------------------------------------- show / evict / ban


def id_flags(verb: str) -> Callable[[FlagSet], None]:
    def setup(fs: FlagSet) -> None:
        socket_flags(fs)
        fs.string("spiffeID", "", f"The SPIFFE ID of the agent to {verb} (agent identity)")

    return setup


def _agent_id(ctx: Context) -> Any:
    if not ctx.flags["spiffeID"]:
        raise CommandError("a SPIFFE ID is required")
    return spiffe_id_proto(ctx.flags["spiffeID"])


async def show(ctx: Context) -> int:
    as_json = is_json(ctx)
    agent_id = _agent_id(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        agent = await call(c.stub(agent_grpc.AgentStub).GetAgent(agent_pb2.GetAgentRequest(id=agent_id)))
    if as_json:
        print_proto_json(ctx, agent)
        return 0
    ctx.out("Found an attested agent given its SPIFFE ID\n")
    print_agents(ctx, [agent])
    for s in agent.selectors:
        ctx.out(f"Selectors         : {s.type}:{s.value}")
    return 0


async def evict(ctx: Context) -> int:
    as_json = is_json(ctx)
    agent_id = _agent_id(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(agent_grpc.AgentStub).DeleteAgent(agent_pb2.DeleteAgentRequest(id=agent_id)))
    if as_json:
        print_proto_json(ctx, resp)
    else:
        ctx.out("Agent evicted successfully")
    return 0


async def ban(ctx: Context) -> int:
    as_json = is_json(ctx)
    agent_id = _agent_id(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(agent_grpc.AgentStub).BanAgent(agent_pb2.BanAgentRequest(id=agent_id)))
    if as_json:
        print_proto_json(ctx, resp)
    else:
        ctx.out("Agent banned successfully")
    return 0


# ---------------------------------------------------------------- purge

THIRTY_DAYS = 30 * 24 * 3600


def purge_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.duration("expiredFor", THIRTY_DAYS, "Amount of time that has passed since the agent's SVID has expired. It is used to determine which agents to purge.")
    fs.bool("dryRun", False, "Indicates that the command will not perform any action, but will print the agents that would be purged.")


async def purge(ctx: Context) -> int:
    as_json = is_json(ctx)
    expired_for = duration_seconds(ctx.flags["expiredFor"])
    results: list[dict[str, Any]] = []
    async with AdminClient(ctx.flags["socketPath"]) as c:
        stub = c.stub(agent_grpc.AgentStub)
        req = agent_pb2.ListAgentsRequest(output_mask=types_agent_pb2.AgentMask(x509svid_expires_at=True))
        req.filter.by_can_reattest.CopyFrom(wrappers_pb2.BoolValue(value=True))
        resp = await call(stub.ListAgents(req), "failed to list agents: ")
        now = time.time()
        for a in resp.agents:
            if now - a.x509svid_expires_at <= expired_for:
                continue
            result: dict[str, Any] = {"agent_id": id_string(a.id), "deleted": False}
            if not ctx.flags["dryRun"]:
                try:
                    await call(stub.DeleteAgent(agent_pb2.DeleteAgentRequest(id=a.id)))
                    result["deleted"] = True
                except CommandError as exc:
                    result["error"] = str(exc)
            results.append(result)
    if as_json:
        ctx.out(go_json({"expired_agents": results}, sort_keys=False))
        return 0
    if not results:
        ctx.out("No agents to purge.")
        return 0
    ctx.out(pluralize(f"Found {len(results)} expired ", "agent", "agents", len(results)) + "\n")
    if ctx.flags["dryRun"]:
        ctx.out("\nAgents that can be purged:")
        for r in results:
            ctx.out(f"SPIFFE ID         : {r['agent_id']}")
        return 0
    purged = [r for r in results if r["deleted"]]
    kept = [r for r in results if not r["deleted"]]
    if purged:
        ctx.out("Agents purged:")
        for r in purged:
            ctx.out(f"SPIFFE ID         : {r['agent_id']}")
    if kept:
        ctx.out("Agents not purged:")
        for r in kept:
            ctx.out(f"SPIFFE ID         : {r['agent_id']}")
            ctx.out(f"Error             : {r['error']}")
    return 0
