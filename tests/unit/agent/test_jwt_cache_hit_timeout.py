"""experimental.jwt_svid_cache_hit_timeout: when an unexpired JWT-SVID is cached, the agent waits
that long (not the RPC's 30 s) for the server's new one before serving the cached copy (SPIRE's
RPCTimeoutWithCacheHit); without a usable cached copy the timeout does not apply."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec

from spire_py.agent.agent import SpireAgent
from spire_py.agent.cache import WorkloadCache
from spire_py.agent.config import load_agent_config
from spire_py.agent.jwt_cache import CachedJWT
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain

TD = TrustDomain("example.org")
AGENT_ID = "spiffe://example.org/spire/agent/join_token/t"
KEY = ec.generate_private_key(ec.SECP256R1())
ENTRY = Entry(id=str(uuid.uuid4()), spiffe_id="spiffe://example.org/w", parent_id=AGENT_ID,
              selectors=[Selector("unix", "uid:0")])


def token(issued: float, ttl: int = 300) -> CachedJWT:
    claims = {"sub": ENTRY.spiffe_id, "aud": ["db"], "iat": int(issued), "exp": int(issued) + ttl}
    return CachedJWT(pyjwt.encode(claims, KEY, algorithm="ES256", headers={"kid": "k1"}), ENTRY.spiffe_id,
                     int(issued) + ttl, int(issued))


class SlowServer:
    """NewJWTSVID that answers after ``release`` is set (never, unless a test sets it)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, entry: Entry, audience: list[str]) -> CachedJWT:
        self.calls += 1
        await self.release.wait()
        return token(time.time())


async def test_a_due_cached_token_is_served_once_the_cache_hit_timeout_passes(caplog):
    caplog.set_level(logging.WARNING, logger="spire_py")
    server = SlowServer()
    cache = WorkloadCache(TD, agent_id=AGENT_ID, jwt_minter=server, jwt_cache_hit_timeout=0.05)
    old = token(time.time() - 200)  # past half life: due for renewal, still valid
    cache.jwt_svids.put(ENTRY.spiffe_id, ["db"], old)
    assert await asyncio.wait_for(cache.jwt_svid(ENTRY, ["db"]), 30) is old
    assert server.calls == 1
    warned = [r for r in caplog.records if r.getMessage() == "Unable to renew JWT; returning cached copy"]
    assert warned[0].fields == {"spiffe_id": ENTRY.spiffe_id, "error": "context deadline exceeded"}


async def test_without_a_usable_cached_token_the_server_is_awaited_past_the_timeout():
    server = SlowServer()
    cache = WorkloadCache(TD, agent_id=AGENT_ID, jwt_minter=server, jwt_cache_hit_timeout=0.01)
    cache.jwt_svids.put(ENTRY.spiffe_id, ["db"], token(time.time() - 400))  # expired: no cache hit
    fetch = asyncio.ensure_future(cache.jwt_svid(ENTRY, ["db"]))
    await asyncio.sleep(0.1)  # well past the cache-hit timeout
    assert not fetch.done()
    server.release.set()
    fresh = await asyncio.wait_for(fetch, 30)
    assert fresh.expires_at > time.time()


def test_the_agent_takes_the_timeout_from_its_config(tmp_path):
    conf = tmp_path / "agent.conf"
    plugins = ('plugins {\n NodeAttestor "join_token" { plugin_data {} }\n KeyManager "memory" { plugin_data {} }\n'
               ' WorkloadAttestor "unix" { plugin_data {} }\n}\n')
    for extra, want in (("", None), ('experimental { jwt_svid_cache_hit_timeout = "10s" }', 10)):
        conf.write_text(f'agent {{\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n'
                        f' insecure_bootstrap = true\n data_dir = "{tmp_path}"\n {extra}\n}}\n' + plugins)
        cfg = load_agent_config(str(conf))
        assert SpireAgent(cfg).cache.jwt_cache_hit_timeout == want
        assert any("The use of 'jwt_svid_cache_hit_timeout' is experimental" in w for w in cfg.warnings) == bool(want)
