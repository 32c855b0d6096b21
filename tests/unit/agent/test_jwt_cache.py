"""The agent's JWT-SVID cache: bounded LRU keyed on SPIFFE ID + audiences, expired tokens pruned."""

from __future__ import annotations

import time
import uuid

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from spire_py.agent.cache import WorkloadCache
from spire_py.agent.jwt_cache import DEFAULT_MAX_SIZE, CachedJWT, JWTSVIDCache, cache_key
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain

TD = TrustDomain("example.org")
AGENT_ID = "spiffe://example.org/spire/agent/join_token/t"
KEY = ec.generate_private_key(ec.SECP256R1())


class Clock:
    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t


def token(spiffe_id: str, audience: list[str], now: float, ttl: int = 300) -> CachedJWT:
    """A real ES256 JWT-SVID, as the server would mint it."""
    claims = {"sub": spiffe_id, "aud": audience, "iat": int(now), "exp": int(now) + ttl}
    signed = pyjwt.encode(claims, KEY, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"})
    return CachedJWT(signed, spiffe_id, int(now) + ttl, int(now))


def entry(spiffe_id: str = "spiffe://example.org/w") -> Entry:
    return Entry(id=str(uuid.uuid4()), spiffe_id=spiffe_id, parent_id=AGENT_ID, selectors=[Selector("unix", "uid:0")])


class Minter:
    """Signs a token per call and counts the calls (a stand-in for the server's NewJWTSVID)."""

    def __init__(self, ttl: int = 300) -> None:
        self.calls = 0
        self.ttl = ttl
        self.fail: Exception | None = None

    async def __call__(self, e: Entry, audience: list[str]) -> CachedJWT:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return token(e.spiffe_id, audience, time.time(), self.ttl)


# --- the bound -----------------------------------------------------------------------------
async def test_200_distinct_audiences_leave_the_cache_at_its_bound():
    minter = Minter()
    cache = WorkloadCache(TD, agent_id=AGENT_ID, jwt_minter=minter, jwt_svids=JWTSVIDCache(50))
    e = entry()
    for i in range(200):
        await cache.jwt_svid(e, [f"audience-{i}-" + "x" * 1024])
    assert minter.calls == 200
    assert len(cache.jwt_svids) == 50


async def test_unset_or_zero_size_is_spires_default_of_1000():
    assert JWTSVIDCache().max_size == JWTSVIDCache(0).max_size == DEFAULT_MAX_SIZE == 1000
    assert JWTSVIDCache(7).max_size == 7


def test_least_recently_used_token_is_evicted_first():
    clock = Clock()
    c = JWTSVIDCache(2, clock=clock)
    a, b, new = (token("spiffe://example.org/w", [aud], clock.t) for aud in ("a", "b", "c"))
    c.put("spiffe://example.org/w", ["a"], a)
    c.put("spiffe://example.org/w", ["b"], b)
    assert c.get("spiffe://example.org/w", ["a"]) is a  # a is now the most recently used
    c.put("spiffe://example.org/w", ["c"], new)
    assert c.get("spiffe://example.org/w", ["b"]) is None
    assert c.get("spiffe://example.org/w", ["a"]) is a
    assert c.get("spiffe://example.org/w", ["c"]) is new


# --- expiry --------------------------------------------------------------------------------
def test_expired_token_is_not_served_and_is_pruned():
    clock = Clock()
    c = JWTSVIDCache(10, clock=clock)
    c.put("spiffe://example.org/w", ["db"], token("spiffe://example.org/w", ["db"], clock.t, ttl=60))
    c.put("spiffe://example.org/w", ["web"], token("spiffe://example.org/w", ["web"], clock.t, ttl=600))
    clock.t += 61
    assert c.get("spiffe://example.org/w", ["db"]) is None
    assert c.prune() == 1
    assert len(c) == 1
    assert c.get("spiffe://example.org/w", ["web"]) is not None


async def test_workload_cache_mints_again_once_the_cached_token_expired():
    minter = Minter()
    clock = Clock()
    cache = WorkloadCache(TD, agent_id=AGENT_ID, jwt_minter=minter, jwt_svids=JWTSVIDCache(10, clock=clock))
    e = entry()
    first = await cache.jwt_svid(e, ["db"])
    assert await cache.jwt_svid(e, ["db"]) is first and minter.calls == 1
    clock.t = first.expires_at + 1
    assert await cache.jwt_svid(e, ["db"]) is not first and minter.calls == 2


async def test_renewal_failure_serves_the_unexpired_cached_copy_but_never_an_expired_one():
    minter = Minter()
    cache = WorkloadCache(TD, agent_id=AGENT_ID, jwt_minter=minter)
    e = entry()
    # Past half its life (due for renewal) but not expired: served when the server is away.
    old = token(e.spiffe_id, ["db"], time.time() - 200, ttl=300)
    cache.jwt_svids.put(e.spiffe_id, ["db"], old)
    minter.fail = ConnectionError("server unreachable")
    assert await cache.jwt_svid(e, ["db"]) is old
    clock = Clock()
    cache.jwt_svids = JWTSVIDCache(10, clock=clock)
    cache.jwt_svids.put(e.spiffe_id, ["db"], token(e.spiffe_id, ["db"], clock.t, ttl=60))
    clock.t += 61
    with pytest.raises(ConnectionError):
        await cache.jwt_svid(e, ["db"])


# --- the key -------------------------------------------------------------------------------
def test_key_is_a_sha256_of_id_and_sorted_audiences():
    assert cache_key("spiffe://example.org/w", ["b", "a"]) == cache_key("spiffe://example.org/w", ["a", "b"])
    assert len(cache_key("spiffe://example.org/w", ["a" * 10_000])) == 32
    # Separated, not concatenated: ("ab", "c") is not ("a", "bc").
    assert cache_key("spiffe://example.org/w", ["ab", "c"]) != cache_key("spiffe://example.org/w", ["a", "bc"])


async def test_token_of_one_spiffe_id_is_never_served_for_another():
    minter = Minter()
    cache = WorkloadCache(TD, agent_id=AGENT_ID, jwt_minter=minter)
    mine, other = entry("spiffe://example.org/mine"), entry("spiffe://example.org/other")
    first = await cache.jwt_svid(mine, ["db"])
    second = await cache.jwt_svid(other, ["db"])
    assert minter.calls == 2
    assert pyjwt.decode(second.token, options={"verify_signature": False})["sub"] == "spiffe://example.org/other"
    assert await cache.jwt_svid(mine, ["db"]) is first  # a hit, for the right ID
    assert await cache.jwt_svid(mine, ["db", "extra"]) is not first  # another audience set: not a hit


# --- configuration -------------------------------------------------------------------------
PLUGINS = """plugins {
    NodeAttestor "join_token" { plugin_data {} }
    KeyManager "memory" { plugin_data {} }
    WorkloadAttestor "unix" { plugin_data {} }
}
"""


def _agent(tmp_path, extra: str):
    from spire_py.agent.agent import SpireAgent
    from spire_py.agent.config import load_agent_config

    conf = tmp_path / "agent.conf"
    conf.write_text(f'agent {{\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n'
                    f' insecure_bootstrap = true\n data_dir = "{tmp_path}"\n {extra}\n}}\n' + PLUGINS)
    return SpireAgent(load_agent_config(str(conf)))


def test_agent_honours_the_configured_cache_sizes(tmp_path):
    agent = _agent(tmp_path, "jwt_svid_cache_max_size = 3\n x509_svid_cache_max_size = 5")
    assert agent.cache.jwt_svids.max_size == 3
    assert agent.cache.x509_svid_max_size == 5
    clock = Clock()
    agent.cache.jwt_svids = JWTSVIDCache(agent.cache.jwt_svids.max_size, clock=clock)
    sid = "spiffe://example.org/w"
    for i in range(10):
        agent.cache.jwt_svids.put(sid, [str(i)], token(sid, [str(i)], clock.t))
    assert len(agent.cache.jwt_svids) == 3


def test_agent_defaults_both_cache_sizes_to_1000(tmp_path):
    agent = _agent(tmp_path, "")
    assert agent.cache.jwt_svids.max_size == agent.cache.x509_svid_max_size == 1000


def test_tokens_of_a_tainted_key_are_dropped_the_others_kept() -> None:
    clock = Clock()
    cache = JWTSVIDCache(clock=clock)
    cache.put("spiffe://example.org/a", ["x"], token("spiffe://example.org/a", ["x"], clock.t))  # kid k1
    other = pyjwt.encode({"sub": "spiffe://example.org/b", "aud": ["x"], "exp": int(clock.t) + 300}, KEY,
                         algorithm="ES256", headers={"kid": "k2"})
    cache.put("spiffe://example.org/b", ["x"], CachedJWT(other, "spiffe://example.org/b", int(clock.t) + 300,
                                                         int(clock.t)))
    assert cache.drop_signed_by(set()) == 0 and len(cache) == 2
    assert cache.drop_signed_by({"k1"}) == 1
    assert cache.get("spiffe://example.org/a", ["x"]) is None
    assert cache.get("spiffe://example.org/b", ["x"]) is not None
