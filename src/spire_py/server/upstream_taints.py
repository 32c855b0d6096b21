"""The upstream's taints and revocations reach the nested server's bundle (SPIRE's
bundleUpdater.SyncX509Roots, with JWT keys treated alike).

Run by the maintenance loop after the CA rotation step (which has already replaced a CA that
chains to a newly tainted upstream authority): an authority the upstream bundle lists as
tainted is tainted in our bundle, so our agents and downstream servers re-sign what it signed;
an authority tainted in our bundle that the upstream bundle no longer lists was revoked
upstream and is revoked here (the datastore then keeps it from being appended again).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

from ..common import log
from ..common.x509util import authority_id
from .core import ServerCore

_log = log.get("ca")


async def sync_upstream_authorities(core: ServerCore) -> bool:
    """Apply the upstream bundle's taints and revocations; True when our bundle changed."""
    manager = core.ca.manager
    seen = getattr(manager.upstream, "upstream_taints", None)
    taints: Any = seen() if callable(seen) else None
    if taints is None:
        return False  # no upstream bundle seen yet, or an upstream that has none (disk, AWS ...)
    td = core.trust_domain.id_string()
    b = await core.db(core.datastore.fetch_bundle, td)
    if b is None:
        return False
    manager.remember_revoked(b.revoked_authorities)
    own_kids = {s.kid for s in manager.jwt_slots()}
    changed = False
    tainted_ders = set(b.tainted_x509_authorities)
    for der in list(b.x509_authorities):
        skid = authority_id(x509.load_der_x509_certificate(der))
        if not skid:
            continue
        if skid in taints.tainted_x509 and der not in tainted_ders:
            await core.db(core.datastore.taint_x509_ca, td, skid)
            _log.info("X.509 authority tainted", extra=log.fields(subject_key_id=skid))
            changed = True
        elif der in tainted_ders and skid not in taints.x509:
            await core.db(core.datastore.revoke_x509_ca, td, skid)
            manager.forget_x509_authority(skid)
            _log.info("X.509 authority revoked", extra=log.fields(subject_key_id=skid))
            changed = True
    for key in list(b.jwt_authorities):
        if key.key_id in own_kids:
            continue  # ours: tainted and revoked through our own LocalAuthority API
        if key.key_id in taints.tainted_jwt and not key.tainted:
            await core.db(core.datastore.taint_jwt_key, td, key.key_id)
            _log.info("JWT authority tainted", extra=log.fields(local_authority_id=key.key_id))
            changed = True
        elif key.tainted and key.key_id not in taints.jwt:
            await core.db(core.datastore.revoke_jwt_key, td, key.key_id)
            manager.forget_jwt_key(key.key_id)
            _log.info("JWT authority revoked", extra=log.fields(local_authority_id=key.key_id))
            changed = True
    if changed:
        core.bundle_changed.set()
    return changed
