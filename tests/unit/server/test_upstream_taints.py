"""A nested server's bundle follows its upstream's taints and revocations (SPIRE's
bundleUpdater.SyncX509Roots): what the upstream taints is tainted here, what it revoked (gone
from its bundle while tainted here) is revoked here, and a revoked root is not appended again,
even after a restart; our own JWT keys and authorities the upstream still lists are left alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives import serialization

from spire_py.common.keys import generate_key
from spire_py.common.spiffeid import TrustDomain
from spire_py.common.x509util import authority_id, create_ca_certificate, x509_ca_subject
from spire_py.server.datastore import Bundle
from spire_py.server.plugins.upstreamauthority.spire import UpstreamTaints
from spire_py.server.upstream_taints import sync_upstream_authorities
from tests.unit.helpers.datastore import jwt_key, open_store

TD = "spiffe://nested.test"


def _root() -> tuple[bytes, str]:
    key = generate_key()
    cert = create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(), ttl=3600, now=time.time())
    return cert.public_bytes(serialization.Encoding.DER), authority_id(cert)


class Manager:
    def __init__(self) -> None:
        self.upstream = SimpleNamespace(upstream_taints=lambda: self.taints)
        self.taints = UpstreamTaints()
        self.forgotten: list[str] = []
        self.revoked: set[str] = set()

    def remember_revoked(self, ids: Any) -> None:
        self.revoked |= set(ids)

    def jwt_slots(self) -> tuple[Any, Any]:
        return SimpleNamespace(kid="own"), SimpleNamespace(kid="")

    def forget_x509_authority(self, skid: str) -> None:
        self.forgotten.append(skid)

    def forget_jwt_key(self, kid: str) -> None:
        self.forgotten.append(kid)


def _core(store: Any, manager: Manager) -> Any:
    async def db(fn: Any, *args: Any) -> Any:
        return fn(*args)
    return SimpleNamespace(datastore=store, db=db, trust_domain=TrustDomain.parse(TD),
                           ca=SimpleNamespace(manager=manager), bundle_changed=asyncio.Event())


async def test_upstream_taints_and_revocations_reach_the_nested_bundle(tmp_path: Path) -> None:
    (old, old_id), (new, new_id), (other, other_id) = _root(), _root(), _root()
    store = open_store("sqlite3", tmp_path)
    exp = int(time.time()) + 3600
    store.create_bundle(Bundle(TD, [old, new, other], [jwt_key("up", exp), jwt_key("own", exp)]))
    m = Manager()
    core = _core(store, m)
    m.taints = UpstreamTaints(x509={old_id, new_id, other_id}, jwt={"up", "own"})
    assert not await sync_upstream_authorities(core)  # nothing tainted upstream: nothing to do

    # The root taints its old CA and a JWT key: both are tainted here, once.
    m.taints.tainted_x509.add(old_id)
    m.taints.tainted_jwt.add("up")
    assert await sync_upstream_authorities(core) and core.bundle_changed.is_set()
    b = store.fetch_bundle(TD)
    assert b.tainted_x509_authorities == [old] and [k.key_id for k in b.jwt_authorities if k.tainted] == ["up"]
    assert not await sync_upstream_authorities(core)

    # Tainted here by hand (upstreamauthority taint) while the upstream still lists it: kept.
    store.taint_x509_ca(TD, other_id)
    store.taint_jwt_key(TD, "own")
    # The root revokes: gone from its bundle, so revoked here; our own JWT key is ours to revoke.
    m.taints = UpstreamTaints(x509={new_id, other_id}, jwt={"own"})
    assert await sync_upstream_authorities(core)
    b = store.fetch_bundle(TD)
    assert b.x509_authorities == [new, other] and [k.key_id for k in b.jwt_authorities] == ["own"]
    assert sorted(m.forgotten) == sorted([old_id, "up"])
    assert not await sync_upstream_authorities(core) and m.revoked == {old_id, "up"}
    store.close()

    # After a restart, an upstream (or a CA journal) that still lists the revoked root does not bring it back.
    store = open_store("sqlite3", tmp_path)
    merged = store.append_bundle(Bundle(TD, [old, new], [jwt_key("up", exp)]))
    assert merged.x509_authorities == [new, other] and [k.key_id for k in merged.jwt_authorities] == ["own"]
    store.close()


async def test_without_an_upstream_bundle_nothing_is_synced(tmp_path: Path) -> None:
    (old, old_id) = _root()
    store = open_store("sqlite3", tmp_path)
    store.create_bundle(Bundle(TD, [old]))
    store.taint_x509_ca(TD, old_id)
    m = Manager()
    m.upstream = SimpleNamespace()  # a disk UpstreamAuthority has no upstream bundle
    assert not await sync_upstream_authorities(_core(store, m))
    assert store.fetch_bundle(TD).x509_authorities == [old]
    store.close()
