"""The CA manager follows its upstream's taints (SPIRE's processTaintedUpstreamAuthorities):
when the authority our signing CA chains to is tainted upstream, a new CA signed by the
upstream's new authority is prepared and activated at once; other taints change nothing."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from spire_py.common.keys import generate_key, private_key_to_pem
from spire_py.common.x509util import authority_id, create_ca_certificate, verify_x509_svid, x509_ca_subject
from spire_py.server.ca.slots import OLD
from spire_py.server.plugins.upstreamauthority.disk import DiskUpstreamAuthority
from spire_py.server.plugins.upstreamauthority.spire import UpstreamTaints
from tests.unit.server.ca.test_ca_rotation import TD, clock, new_ca  # noqa: F401 (fixture)


class TaintingUpstream:
    """A disk upstream whose root can be rotated, with an upstream bundle that can taint roots."""

    def __init__(self, tmp_path: Path, now: float) -> None:
        self.dir, self.now, self.roots = tmp_path, now, []  # type: ignore[var-annotated]
        self.taints = UpstreamTaints()
        self.rotate_root()

    def rotate_root(self) -> None:
        key = generate_key()
        root = create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(), ttl=30 * 86400, now=self.now)
        n = len(self.roots)
        (self.dir / f"r{n}.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
        (self.dir / f"r{n}.key").write_bytes(private_key_to_pem(key))
        self.inner = DiskUpstreamAuthority(TD, str(self.dir / f"r{n}.crt"), str(self.dir / f"r{n}.key"))
        self.roots.append(root)
        self.taints.x509.add(authority_id(root))

    def mint_x509_ca(self, *args):  # type: ignore[no-untyped-def]
        return self.inner.mint_x509_ca(*args)

    def upstream_bundle(self):  # type: ignore[no-untyped-def]
        return list(self.roots), []

    def upstream_taints(self) -> UpstreamTaints:
        return self.taints


def _svid_verifies_with(ca, root) -> bool:  # type: ignore[no-untyped-def]
    key = generate_key()
    chain = ca.sign_x509_svid(key.public_key(), f"spiffe://{TD}/w")
    try:
        verify_x509_svid(chain, [root])
    except Exception:
        return False
    return True


def test_a_root_tainted_upstream_rotates_the_intermediate_at_once(tmp_path: Path, clock) -> None:  # type: ignore[no-untyped-def]
    up = TaintingUpstream(tmp_path, clock.t)
    ca = new_ca(clock, upstream=up)
    ca.start()
    first = ca.x509_ca
    assert _svid_verifies_with(ca, up.roots[0])
    # The upstream rotates to a new root and taints the old one: our CA is replaced now, not at
    # its half-life, by one the new root signed; the old one is kept as OLD.
    up.rotate_root()
    up.taints.tainted_x509.add(authority_id(up.roots[0]))
    assert ca.rotate_if_needed()
    assert ca.x509_ca != first
    assert _svid_verifies_with(ca, up.roots[1]) and not _svid_verifies_with(ca, up.roots[0])
    current, old = ca.manager.x509_slots()
    assert current.upstream_authority_id == authority_id(up.roots[1])
    assert old.status == OLD and old.upstream_authority_id == authority_id(up.roots[0])
    # A taint is acted on once.
    assert not ca.rotate_if_needed()
    assert current.cert == ca.x509_ca


def test_a_taint_of_an_authority_that_did_not_sign_us_changes_nothing(tmp_path: Path, clock) -> None:  # type: ignore[no-untyped-def]
    up = TaintingUpstream(tmp_path, clock.t)
    ca = new_ca(clock, upstream=up)
    ca.start()
    first = ca.x509_ca
    up.taints.tainted_x509.add("00" * 20)
    assert not ca.rotate_if_needed()
    assert ca.x509_ca == first


def test_authorities_revoked_before_a_restart_are_not_published_again(tmp_path: Path, clock) -> None:  # type: ignore[no-untyped-def]
    up = TaintingUpstream(tmp_path, clock.t)
    up.rotate_root()  # the upstream lists two roots
    ca = new_ca(clock, upstream=up)
    ca.start()
    assert len(ca.bundle().x509_authorities) == 2
    # As after a restart: the datastore's revoked IDs reach the manager, and the upstream that
    # still lists the revoked root does not bring it back into what we publish.
    ca.manager.remember_revoked({authority_id(up.roots[0])})
    ca.rotate_if_needed()
    assert ca.bundle().x509_authorities == [up.roots[1]]
