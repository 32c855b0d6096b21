"""A root server's taint reaches a nested server over the real wire: the root (in process)
prepares, activates and taints through its LocalAuthority API; the nested server's
UpstreamAuthority "spire" sees the taint in GetBundle, its CA manager replaces the intermediate
the tainted root signed, and the taint is stored in the nested bundle its agents read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509

from spire_py.common.spiffeid import TrustDomain
from spire_py.common.x509util import authority_id
from spire_py.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from spire_py.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as pb
from spire_py.server.ca.ca import ServerCA
from spire_py.server.datastore import Bundle, JWTKey
from spire_py.server.plugins.keymanager.memory import MemoryKeyManager
from spire_py.server.plugins.upstreamauthority.spire import SpireUpstreamAuthority
from spire_py.server.upstream_taints import sync_upstream_authorities
from tests.unit.helpers.datastore import open_store
from tests.unit.helpers.inprocess_server import TD
from tests.unit.server.ca.test_ca_rotation import Journal
from tests.unit.server.plugins.upstreamauthority.test_spire_upstream import _serve_svid, upstream  # noqa: F401


async def _until(cond: Any, what: str) -> None:
    for _ in range(400):
        if cond():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_root_taint_rotates_the_nested_intermediate_and_is_flagged_in_the_nested_bundle(
        upstream: Any, tmp_path: Path) -> None:  # noqa: F811
    h, wl, sock = upstream
    await _serve_svid(h, wl, "/nested")
    plugin = SpireUpstreamAuthority(TD, "127.0.0.1", h.port, sock, poll_interval=0.1, backoff_initial=0.05)
    nested = ServerCA(TD, MemoryKeyManager(), upstream=plugin, ca_ttl=3600, x509_svid_ttl=600,
                      clock=time.time, journal_store=Journal())
    store = open_store("sqlite3", tmp_path)
    td = f"spiffe://{TD}"
    try:
        plugin.start_polling()
        await asyncio.to_thread(nested.start)
        old_root = nested.manager.x509_slots()[0].upstream_authority_id
        la = h.admin_stub(localauthority_grpc.LocalAuthorityStub)
        assert (await la.GetX509AuthorityState(pb.GetX509AuthorityStateRequest())).active.authority_id == old_root

        def publish() -> None:  # what the nested server's maintenance stores
            rec = nested.bundle().to_record()
            store.append_bundle(Bundle(td, list(rec["x509_authorities"]),
                                       [JWTKey(k, der, exp) for k, der, exp in rec["jwt_authorities"]]))
        publish()

        prepared = (await la.PrepareX509Authority(pb.PrepareX509AuthorityRequest())).prepared_authority
        await la.ActivateX509Authority(pb.ActivateX509AuthorityRequest(authority_id=prepared.authority_id))
        await la.TaintX509Authority(pb.TaintX509AuthorityRequest(authority_id=old_root))
        await _until(lambda: old_root in (plugin.upstream_taints() or SimpleNamespace(tainted_x509=())).tainted_x509,
                     "the root's taint in the polled bundle")

        assert await asyncio.to_thread(nested.rotate_if_needed)
        current, old = nested.manager.x509_slots()
        assert current.upstream_authority_id == prepared.authority_id and old.upstream_authority_id == old_root

        await asyncio.to_thread(publish)
        core = SimpleNamespace(datastore=store, db=lambda fn, *a: asyncio.to_thread(fn, *a),
                               trust_domain=TrustDomain.parse(TD), ca=nested, bundle_changed=asyncio.Event())
        assert await sync_upstream_authorities(core)  # type: ignore[arg-type]
        b = store.fetch_bundle(td)
        assert [authority_id(x509.load_der_x509_certificate(d)) for d in b.tainted_x509_authorities] == [old_root]
    finally:
        store.close()
        await plugin.close()
