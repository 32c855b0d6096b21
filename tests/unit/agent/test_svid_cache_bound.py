"""x509_svid_cache_max_size: subscribed entries keep their SVIDs, the others are bounded (SPIRE's LRU cache)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.agent.cache import WorkloadCache
from spire_py.agent.sync import mint_svids
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain
from spire_py.proto.spire.api.server.svid.v1 import svid_pb2

TD = TrustDomain("example.org")
AGENT = "spiffe://example.org/spire/agent/join_token/t"


class SigningServer:
    """The server's BatchNewX509SVID over a real CA: signs each CSR's key for its entry."""

    def __init__(self, root_name: str = "root") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, root_name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
                     .not_valid_after(now + dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.entries: dict[str, Entry] = {}
        self.signed: list[str] = []
        self.svid = self

    async def BatchNewX509SVID(self, req, timeout=None):
        resp = svid_pb2.BatchNewX509SVIDResponse()
        now = dt.datetime.now(dt.timezone.utc)
        for p in req.params:
            csr = x509.load_der_x509_csr(p.csr)
            leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.root.subject)
                    .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
                    .add_extension(x509.SubjectAlternativeName(
                        [x509.UniformResourceIdentifier(self.entries[p.entry_id].spiffe_id)]), critical=False)
                    .sign(self.key, hashes.SHA256()))
            self.signed.append(p.entry_id)
            resp.results.add().svid.cert_chain.append(leaf.public_bytes(serialization.Encoding.DER))
        return resp


def uid(n: int) -> Selector:
    return Selector("unix", f"uid:{n}")


def setup(count: int, max_size: int) -> tuple[WorkloadCache, SigningServer, dict[str, int]]:
    server = SigningServer()
    cache = WorkloadCache(TD, agent_id=AGENT, x509_svid_max_size=max_size)
    for i in range(count):
        e = Entry(id=f"e{i}", spiffe_id=f"spiffe://example.org/w{i}", parent_id=AGENT, selectors=[uid(1000 + i)])
        cache.entries[e.id] = server.entries[e.id] = e
    return cache, server, {}


async def mint(cache: WorkloadCache, server: SigningServer, revisions: dict[str, int]) -> bool:
    return await mint_svids(server, cache, cache.entries, revisions, [server.root], "ec-p256")  # type: ignore[arg-type]


async def test_without_subscribers_only_max_size_svids_are_signed():
    cache, server, rev = setup(5, 2)
    await mint(cache, server, rev)
    assert len(cache.svids) == 2
    await mint(cache, server, rev)  # nothing new: still full, nothing due
    assert len(cache.svids) == 2 and len(server.signed) == 2


async def test_subscribed_entry_is_signed_past_the_bound_and_kept_while_subscribed():
    cache, server, rev = setup(5, 2)
    await mint(cache, server, rev)
    unsigned = sorted(set(cache.entries) - set(cache.svids))[0]
    with cache.subscribe([uid(1000 + int(unsigned[1:]))]):
        assert cache.svids_wanted().is_set()  # the sync loop signs it now, not at the next tick
        await mint(cache, server, rev)
        assert unsigned in cache.svids and len(cache.svids) == 3  # a soft bound: a subscriber is never denied
        await mint(cache, server, rev)
        assert unsigned in cache.svids
    # Unsubscribed: back to the bound; it was used last, so an idle one goes first.
    await mint(cache, server, rev)
    assert len(cache.svids) == 2 and unsigned in cache.svids


async def test_evicted_svid_is_signed_again_on_demand():
    cache, server, rev = setup(3, 1)
    await mint(cache, server, rev)
    [first] = cache.svids
    other = next(eid for eid in cache.entries if eid != first)
    with cache.subscribe([uid(1000 + int(other[1:]))]):
        await mint(cache, server, rev)
    await mint(cache, server, rev)
    assert list(cache.svids) == [other]  # first was idle the longest: evicted
    cache.svids_wanted().clear()
    with cache.subscribe([uid(1000 + int(first[1:]))]):
        assert cache.svids_wanted().is_set()
        await mint(cache, server, rev)
        assert first in cache.svids
        assert server.signed.count(first) == 2


async def test_another_workloads_subscription_does_not_keep_an_svid():
    cache, server, rev = setup(3, 1)
    with cache.subscribe([uid(1000)]):
        cache.x509_svid_max_size = 3  # everything signed once (as under a larger bound)
        await mint(cache, server, rev)
        cache.x509_svid_max_size = 1
        await mint(cache, server, rev)
        assert list(cache.svids) == ["e0"]  # only the subscriber's entry survives
    # A subscriber with selectors matching no entry keeps nothing and wants nothing.
    cache.svids_wanted().clear()
    with cache.subscribe([uid(4242)]):
        assert not cache.svids_wanted().is_set()
        assert cache.subscribed_entry_ids() == set()


async def test_svids_from_a_root_that_left_the_bundle_are_signed_again():
    cache, server, rev = setup(3, 10)
    old_root = server.root
    await mint(cache, server, rev)
    assert len(server.signed) == 3
    await mint(cache, server, rev)  # still signed by a root of the bundle: nothing to do
    assert len(server.signed) == 3
    # The CA rotates to a root of another name; the old one is still in the bundle: kept.
    new = SigningServer("root 2")
    new.entries = server.entries
    await mint_svids(new, cache, cache.entries, rev, [old_root, new.root], "ec-p256")  # type: ignore[arg-type]
    assert new.signed == []
    # The old root leaves the bundle: every SVID hanging from it is signed by the new CA.
    await mint_svids(new, cache, cache.entries, rev, [new.root], "ec-p256")  # type: ignore[arg-type]
    assert sorted(new.signed) == ["e0", "e1", "e2"]
    assert {s.chain[-1].issuer for s in cache.svids.values()} == {new.root.subject}
    new.signed.clear()
    await mint_svids(new, cache, cache.entries, rev, [new.root], "ec-p256")  # type: ignore[arg-type]
    assert new.signed == []
