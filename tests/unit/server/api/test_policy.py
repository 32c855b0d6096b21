"""The server's authorization table: every served method has an entry, and each role means what SPIRE means."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.common.health_service import HealthService
from spire_py.common.ratelimit import PerAddressLimiter, TokenBucket
from spire_py.common.spiffeid import SpiffeId
from spire_py.server.api import policy
from spire_py.server.api.agent import AgentService
from spire_py.server.api.auth import Caller, authorize
from spire_py.server.api.bundle import BundleService
from spire_py.server.api.entry import EntryService
from spire_py.server.api.health import DebugService
from spire_py.server.api.middleware import request_fields
from spire_py.server.api.svid import SVIDService
from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.proto.spire.api.types import attestation_pb2

ROLES = {policy.ANY, policy.LOCAL, policy.ADMIN, policy.AGENT, policy.DOWNSTREAM}


def _served() -> set[str]:
    services: list[Any] = [AgentService(None), EntryService(None), BundleService(None),  # type: ignore[arg-type]
                           SVIDService(None), DebugService(None, 0, list), HealthService(lambda: True)]  # type: ignore[arg-type]
    methods: set[str] = set()
    for s in services:
        methods |= set(s.__mapping__())
    return methods


def test_every_served_method_has_a_policy_entry() -> None:
    missing = _served() - set(policy.POLICY)
    assert not missing, f"served without an authorization policy: {sorted(missing)}"


def test_policy_uses_only_known_roles_and_names_real_methods() -> None:
    for method, allowed in policy.POLICY.items():
        assert allowed and allowed <= ROLES, method
        assert method.startswith("/") and method.count("/") == 2
    assert policy.JWT_METHODS <= set(policy.POLICY)
    assert policy.SIGNING_METHODS <= set(policy.POLICY) and policy.ATTESTATION_METHODS <= set(policy.POLICY)


def _denied(caller: Caller, method: str) -> bool:
    try:
        authorize(caller, policy.POLICY[method])
    except GRPCError as exc:
        assert exc.status == Status.PERMISSION_DENIED
        return True
    return False


AGENT_ID = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/abc")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/admin")


@pytest.mark.parametrize("method,local,anonymous,agent,admin,downstream", [
    ("/spire.api.server.entry.v1.Entry/ListEntries", True, False, False, True, False),
    ("/spire.api.server.entry.v1.Entry/GetAuthorizedEntries", False, False, True, False, True),
    ("/spire.api.server.agent.v1.Agent/AttestAgent", True, True, True, True, True),
    ("/spire.api.server.agent.v1.Agent/RenewAgent", False, False, True, False, False),
    ("/spire.api.server.svid.v1.SVID/BatchNewX509SVID", False, False, True, False, False),
    ("/spire.api.server.svid.v1.SVID/NewDownstreamX509CA", False, False, False, False, True),
    ("/spire.api.server.bundle.v1.Bundle/GetBundle", True, True, True, True, True),
    ("/spire.api.server.bundle.v1.Bundle/GetFederatedBundle", True, False, True, True, False),
    ("/spire.api.server.debug.v1.Debug/GetInfo", True, False, False, False, False),
    ("/grpc.health.v1.Health/Check", True, False, False, False, False),
])
def test_who_may_call_what(method: str, local: bool, anonymous: bool, agent: bool, admin: bool,
                           downstream: bool) -> None:
    assert _denied(Caller(local=True, uid=0), method) is not local
    assert _denied(Caller(address="127.0.0.1"), method) is not anonymous
    assert _denied(Caller(spiffe_id=AGENT_ID, is_agent=True), method) is not agent
    assert _denied(Caller(spiffe_id=ADMIN_ID, is_admin=True), method) is not admin
    assert _denied(Caller(spiffe_id=ADMIN_ID, is_downstream=True), method) is not downstream


def test_an_unattested_workload_svid_is_no_agent_and_no_admin() -> None:
    nobody = Caller(spiffe_id=SpiffeId.parse("spiffe://example.org/workload"))
    for method in ("/spire.api.server.entry.v1.Entry/ListEntries", "/spire.api.server.svid.v1.SVID/BatchNewX509SVID"):
        assert _denied(nobody, method)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_waits_past_its_burst_and_refuses_what_no_wait_can_serve() -> None:
    clock = Clock()
    bucket = TokenBucket(1, clock)
    assert bucket.reserve(1) == 0
    assert bucket.reserve(1) == pytest.approx(1.0)
    assert bucket.reserve(1) == pytest.approx(2.0)
    clock.now += 10
    assert bucket.reserve(1) == 0
    with pytest.raises(GRPCError) as err:
        bucket.reserve(2)
    assert err.value.status == Status.RESOURCE_EXHAUSTED and err.value.message == "rate (2) exceeds burst size (1)"

    signing = TokenBucket(500, clock)
    assert signing.reserve(500) == 0
    assert signing.reserve(250) == pytest.approx(0.5)


def test_per_address_limiter_keeps_addresses_apart_and_forgets_idle_ones() -> None:
    clock = Clock()
    limiter = PerAddressLimiter(1, clock)
    assert limiter.reserve("10.0.0.1") == 0
    assert limiter.reserve("10.0.0.2") == 0
    assert limiter.reserve("10.0.0.1") > 0
    clock.now += 3600
    limiter.reserve("10.0.0.3")
    assert len(limiter) == 1


def test_audit_fields_leave_secrets_out_and_are_bounded() -> None:
    req = agent_pb2.CreateJoinTokenRequest(ttl=600, token="s3cret-token")
    fields = request_fields(req)
    assert fields == {"ttl": 600, "token": "<redacted>"}
    attest = agent_pb2.AttestAgentRequest(params=agent_pb2.AttestAgentRequest.Params(
        data=attestation_pb2.AttestationData(type="join_token", payload=b"s3cret")))
    assert "s3cret" not in str(request_fields(attest))
    long = request_fields(agent_pb2.CountAgentsRequest()) or {}
    assert long == {}
