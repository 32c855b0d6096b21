"""The agent asks the server for the bundle of every trust domain its entries federate with
(GetFederatedBundle, as SPIRE's agent), and drops bundles no entry names any more."""

from __future__ import annotations

from types import SimpleNamespace
import asyncio
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.agent.cache import WorkloadCache
from spire_py.agent.sync import fetch_federated_bundles
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain
from tests.unit.helpers.federation import bundle_of, make_ca


class _BundleAPI:
    def __init__(self, served: dict[str, Any]) -> None:
        self.served = served
        self.asked: list[str] = []

    async def GetFederatedBundle(self, req: Any, timeout: float = 0) -> Any:
        self.asked.append(req.trust_domain)
        if req.trust_domain not in self.served:
            raise GRPCError(Status.NOT_FOUND, "bundle not found")
        return self.served[req.trust_domain].to_proto()


def _entry(eid: str, *feds: str) -> Entry:
    return Entry(id=eid, spiffe_id=f"spiffe://example.org/{eid}", parent_id="spiffe://example.org/agent",
                 selectors=[Selector("unix", "uid:1")], federates_with=[f"spiffe://{f}" for f in feds])


async def test_federated_bundles_follow_the_entries() -> None:
    a, b = bundle_of("a.test", make_ca("a").cert), bundle_of("b.test", make_ca("b").cert)
    api = _BundleAPI({"a.test": a, "b.test": b})
    client: Any = SimpleNamespace(bundle=api)
    cache = WorkloadCache(TrustDomain.parse("example.org"))
    entries = {"e1": _entry("e1", "a.test"), "e2": _entry("e2", "a.test", "b.test", "gone.test")}

    assert await fetch_federated_bundles(client, cache, entries)
    assert sorted(api.asked) == ["a.test", "b.test", "gone.test"]
    assert set(cache.bundles) == {"spiffe://a.test", "spiffe://b.test"}
    assert cache.federated_bundles_for([entries["e1"]]).keys() == {"spiffe://a.test"}
    assert not await fetch_federated_bundles(client, cache, entries)  # nothing new

    api.served["a.test"] = bundle_of("a.test", make_ca("a2").cert, sequence=2)
    assert await fetch_federated_bundles(client, cache, {"e1": entries["e1"]})
    assert set(cache.bundles) == {"spiffe://a.test"}  # b.test no longer named
    assert cache.bundles["spiffe://a.test"].sequence_number == 2


async def test_other_errors_fail_the_sync() -> None:
    class Failing:
        async def GetFederatedBundle(self, req: Any, timeout: float = 0) -> Any:
            raise GRPCError(Status.PERMISSION_DENIED, "no")

    cache = WorkloadCache(TrustDomain.parse("example.org"))
    with pytest.raises(GRPCError):
        await fetch_federated_bundles(SimpleNamespace(bundle=Failing()), cache, {"e": _entry("e", "a.test")})  # type: ignore[arg-type]


async def test_an_open_x509_svid_stream_gets_the_changed_federated_bundle(world: Any) -> None:
    """The sync stores a new federated bundle and publishes: the workload's stream carries it."""
    from cryptography.hazmat.primitives import serialization
    from grpclib.client import Channel

    from spire_py.proto.workload import workload_grpc, workload_pb2
    from tests.unit.helpers.workload_world import FEDERATED_TD

    world.add_entry(federates_with=[FEDERATED_TD])
    new_root = make_ca("partner second root").cert
    api = _BundleAPI({"partner.test": bundle_of("partner.test", world.partner.cert, new_root, sequence=9)})
    ch = Channel(path=world.socket_path)
    try:
        async with workload_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID.open(
                metadata={"workload.spiffe.io": "true"}) as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            first = await stream.recv_message()
            assert await fetch_federated_bundles(SimpleNamespace(bundle=api), world.cache,  # type: ignore[arg-type]
                                                 world.cache.entries)
            await world.cache.publish()
            second = await asyncio.wait_for(stream.recv_message(), 10)
            await stream.cancel()
    finally:
        ch.close()
    der = new_root.public_bytes(serialization.Encoding.DER)
    assert der not in first.federated_bundles[FEDERATED_TD]
    assert der in second.federated_bundles[FEDERATED_TD]
