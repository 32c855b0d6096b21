"""Shared by the Workload API tests: a real PKI, a real cache and a served agent socket
(the ``world`` and ``threaded_world`` fixtures in tests/unit/agent/conftest.py).

Nothing here is faked: certificates and keys come from ``cryptography``, JWTs are
signed with PyJWT, the cache is the agent's WorkloadCache and the server listens
on a real Unix socket with the real unix attestor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.agent.cache import CachedJWT, CachedSVID, WorkloadCache
from spire_py.agent.plugins.workloadattestor.unix import UnixWorkloadAttestor
from spire_py.agent.workloadapi.handler import WorkloadAPIService
from spire_py.agent.workloadapi.server import close_workload_api, serve_workload_api
from spire_py.common.bundle import Bundle
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain

TD = TrustDomain("example.org")
TD_ID = TD.id_string()
AGENT_ID = "spiffe://example.org/spire/agent/join_token/test"
WORKLOAD_ID = "spiffe://example.org/workload"
FEDERATED_TD = "spiffe://partner.test"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class CA:
    name: str
    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cert: Any = None

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=1)).not_valid_after(_now() + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def svid(self, spiffe_id: str, ttl: int = 3600) -> tuple[list[x509.Certificate], Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svid")]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=1)).not_valid_after(_now() + dt.timedelta(seconds=ttl))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return [leaf], key


def make_bundle(td: str, roots: list[x509.Certificate], jwt_keys: Optional[dict[str, Any]] = None) -> Bundle:
    """A common.bundle.Bundle; JWT authorities are kid -> (public key, expires_at)."""
    exp = int(time.time()) + 86400
    return Bundle(
        TrustDomain.parse(td),
        x509_authorities=list(roots),
        jwt_authorities={kid: (k, exp) for kid, k in (jwt_keys or {}).items()},
    )


def uid_selector(uid: Optional[int] = None) -> Selector:
    return Selector("unix", f"uid:{os.getuid() if uid is None else uid}")


@dataclass
class World:
    """Everything one test needs: the CAs, the cache, the served socket."""

    ca: CA
    partner: CA
    jwt_key: Any
    cache: WorkloadCache
    socket_path: str
    service: WorkloadAPIService
    server: Any = None

    def add_entry(self, spiffe_id: str = WORKLOAD_ID, selectors: Optional[list[Selector]] = None,
                  hint: str = "", federates_with: Optional[list[str]] = None, created_at: int = 0) -> Entry:
        entry = Entry(id=str(uuid.uuid4()), spiffe_id=spiffe_id, parent_id=AGENT_ID,
                      selectors=selectors or [uid_selector()], hint=hint,
                      federates_with=federates_with or [], created_at=created_at)
        self.cache.entries[entry.id] = entry
        self.issue(entry)
        return entry

    def issue(self, entry: Entry) -> CachedSVID:
        chain, key = self.ca.svid(entry.spiffe_id)
        svid = CachedSVID(entry.id, entry.spiffe_id, chain, key, entry.hint)
        self.cache.svids[entry.id] = svid
        return svid

    async def mint_jwt(self, entry: Entry, audience: list[str]) -> CachedJWT:
        now = int(time.time())
        claims = {"sub": entry.spiffe_id, "aud": audience if len(audience) > 1 else audience[0],
                  "iat": now, "exp": now + 300}
        token = pyjwt.encode(claims, self.jwt_key, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"})
        return CachedJWT(token, entry.spiffe_id, now + 300, now, entry.hint)


def short_dir() -> str:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    return tempfile.mkdtemp(prefix="wl-", dir="/tmp")


def new_world(base: str) -> World:
    ca, partner = CA("example.org root"), CA("partner root")
    jwt_key = ec.generate_private_key(ec.SECP256R1())
    cache = WorkloadCache(TD, agent_id=AGENT_ID)
    cache.bundles[TD_ID] = make_bundle(TD_ID, [ca.cert], {"k1": jwt_key.public_key()})
    cache.bundles[FEDERATED_TD] = make_bundle(FEDERATED_TD, [partner.cert])
    service = WorkloadAPIService(cache, [UnixWorkloadAttestor()])
    world = World(ca, partner, jwt_key, cache, os.path.join(base, "agent", "public", "api.sock"), service)
    cache.jwt_minter = world.mint_jwt
    return world


class ThreadedWorld:
    """The agent side on its own event loop in a thread, for synchronous clients (the CLI)."""

    def __init__(self) -> None:
        self.base = short_dir()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.world: World = self.run(self._start())

    async def _start(self) -> World:
        w = new_world(self.base)
        w.server = await serve_workload_api(w.socket_path, w.service)
        return w

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.run(close_workload_api(self.world.server, self.world.socket_path))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        shutil.rmtree(self.base, ignore_errors=True)
