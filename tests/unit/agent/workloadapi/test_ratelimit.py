"""experimental.ratelimit: per selector set, per method, checked after attestation; over the
limit is UNAVAILABLE "rate limit exceeded for <full method>"; the agent's own calls pass."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.workloadapi.ratelimit import METHODS, UNATTESTED, WorkloadRateLimiter, selector_set_key
from spire_py.agent.workloadapi.sds import SDSNames, SecretDiscoveryService
from spire_py.agent.workloadapi.server import close_workload_api, serve_workload_api
from spire_py.common.registration import Selector
from spire_py.proto.workload import workload_grpc, workload_pb2 as pb

from tests.unit.helpers.workload_world import new_world, short_dir

A = [Selector("unix", "uid:1000"), Selector("k8s", "ns:web")]
B = [Selector("unix", "uid:1001")]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_key_is_the_whole_selector_set_in_any_order():
    assert selector_set_key(A) == selector_set_key(list(reversed(A)))
    assert selector_set_key(A) != selector_set_key(A[:1])
    assert selector_set_key([Selector("a", "b\0c")]) != selector_set_key([Selector("a\0b", "c")])
    assert selector_set_key([]) == UNATTESTED


def test_a_selector_set_over_its_limit_is_unavailable_until_the_bucket_refills():
    clock = Clock()
    limiter = WorkloadRateLimiter({"fetch_jwt_svid": 2}, clock)
    limiter.check("FetchJWTSVID", A)
    limiter.check("FetchJWTSVID", list(reversed(A)))  # the same set
    with pytest.raises(GRPCError) as err:
        limiter.check("FetchJWTSVID", A)
    assert (err.value.status, err.value.message) == (
        Status.UNAVAILABLE, "rate limit exceeded for /SpiffeWorkloadAPI/FetchJWTSVID")
    limiter.check("FetchJWTSVID", B)  # another set, another bucket
    limiter.check("FetchX509SVID", A)  # a method without a limit
    clock.now += 0.5  # one call's worth back at 2/s
    limiter.check("FetchJWTSVID", A)
    with pytest.raises(GRPCError):
        limiter.check("FetchJWTSVID", A)


def test_each_configured_method_is_limited_and_zero_is_off():
    limiter = WorkloadRateLimiter({**{k: 1 for k in METHODS}, "fetch_secrets": 0}, Clock())
    for key, method in METHODS.items():
        limiter.check(method, A)
        if key == "fetch_secrets":
            limiter.check(method, A)
            continue
        with pytest.raises(GRPCError, match="rate limit exceeded for " + method):
            limiter.check(method.rsplit("/", 1)[1], A)
    assert not WorkloadRateLimiter({k: 0 for k in METHODS})


# Another process (the agent never limits its own calls): each call's status, in order.
CLIENT = """
import asyncio, json, sys
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from envoy.service.discovery.v3 import discovery_pb2
from spire_py.agent.workloadapi.sds_grpc import SecretDiscoveryServiceStub
from spire_py.proto.workload import workload_grpc, workload_pb2 as pb

H = {"workload.spiffe.io": "true"}

async def main():
    ch = Channel(path=sys.argv[1])
    wl, sds = workload_grpc.SpiffeWorkloadAPIStub(ch), SecretDiscoveryServiceStub(ch)
    out = []
    async def call(name, coro):
        try:
            await coro
            out.append([name, "OK", ""])
        except GRPCError as exc:
            out.append([name, exc.status.name, exc.message])
    async def x509_open():
        async with wl.FetchX509SVID.open(metadata=H) as s:
            await s.send_message(pb.X509SVIDRequest(), end=True)
            await s.recv_message()
            await s.cancel()
    for _ in range(2):
        await call("FetchJWTSVID", wl.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]), metadata=H))
        await call("FetchX509SVID", x509_open())
        await call("FetchSecrets", sds.FetchSecrets(discovery_pb2.DiscoveryRequest(
            resource_names=["ROOTCA"], type_url="type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret")))
    ch.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture
async def limited_world():
    base = short_dir()
    w = new_world(base)
    w.service.rate_limiter = WorkloadRateLimiter(
        {"fetch_jwt_svid": 1, "fetch_x509_svid": 1, "fetch_secrets": 1}, Clock())  # never refills
    w.server = await serve_workload_api(w.socket_path, w.service,
                                        extra_services=[SecretDiscoveryService(w.service, SDSNames())])
    try:
        yield w
    finally:
        await close_workload_api(w.server, w.socket_path)
        shutil.rmtree(base, ignore_errors=True)


def run_client(socket_path: str) -> list[list[str]]:
    proc = subprocess.run([sys.executable, "-c", CLIENT, socket_path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_a_workload_over_its_limits_is_refused_per_method(limited_world):
    limited_world.add_entry()
    got = await asyncio.to_thread(run_client, limited_world.socket_path)
    assert got[:3] == [["FetchJWTSVID", "OK", ""], ["FetchX509SVID", "OK", ""], ["FetchSecrets", "OK", ""]]
    assert got[3:] == [
        ["FetchJWTSVID", "UNAVAILABLE", "rate limit exceeded for /SpiffeWorkloadAPI/FetchJWTSVID"],
        ["FetchX509SVID", "UNAVAILABLE", "rate limit exceeded for /SpiffeWorkloadAPI/FetchX509SVID"],
        ["FetchSecrets", "UNAVAILABLE",
         "rate limit exceeded for /envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets"]]


async def test_the_agents_own_calls_are_never_limited(limited_world):
    from grpclib.client import Channel

    limited_world.add_entry()
    ch = Channel(path=limited_world.socket_path)
    try:
        stub = workload_grpc.SpiffeWorkloadAPIStub(ch)
        for _ in range(3):
            resp = await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]),
                                           metadata={"workload.spiffe.io": "true"})
            assert resp.svids
    finally:
        ch.close()
