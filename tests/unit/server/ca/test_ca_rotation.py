"""CA rotation with a fake clock (prepare → activate → retire → prune) and the journal across restarts."""

from __future__ import annotations

import time
from typing import Optional

import pytest

from spire_py.common.jwtsvid import validate_jwt_svid
from spire_py.common.keys import generate_key, private_key_to_der, public_keys_equal
from spire_py.common.spiffeid import TrustDomain
from spire_py.common.x509util import X509SVIDError, verify_x509_svid
from spire_py.server.ca.ca import ServerCA
from spire_py.server.ca.slots import (
    ACTIVE, PREPARED, activation_threshold, max_svid_ttl_for_ca_ttl, preparation_threshold,
)
from spire_py.server.plugins.keymanager.disk import DiskKeyManager
from spire_py.server.plugins.keymanager.memory import MemoryKeyManager
from spire_py.server.plugins.upstreamauthority.disk import DiskUpstreamAuthority

TD = TrustDomain("example.org")
WID = "spiffe://example.org/workload"
TTL = 6000  # prepare at +3000, activate at +5000, expire at +6000


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Journal:
    """A datastore's ca_journals table in a dict (rows keyed by journal ID)."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}
        self.saves = 0
        self.asked: list[list[str]] = []

    def load(self, journal_ids: list[str]) -> Optional[tuple[str, bytes]]:
        self.asked.append(list(journal_ids))
        return next(((j, self.rows[j]) for j in journal_ids if j in self.rows), None)

    def all(self) -> list[tuple[str, bytes]]:
        return sorted(self.rows.items())

    def save(self, journal_id: str, data: bytes, replaces: Optional[str]) -> None:
        self.rows[journal_id] = data
        if replaces and replaces != journal_id:
            self.rows.pop(replaces, None)
        self.saves += 1

    @property
    def data(self) -> Optional[bytes]:
        """The one journal of a single-server test."""
        assert len(self.rows) <= 1, sorted(self.rows)
        return next(iter(self.rows.values()), None)

    @data.setter
    def data(self, value: bytes) -> None:
        self.rows = {"server-ca": value}


def new_ca(clock, km=None, journal=None, upstream=None, **kw) -> ServerCA:
    journal = journal or Journal()
    return ServerCA(TD, km or MemoryKeyManager(), upstream=upstream, ca_ttl=TTL, x509_svid_ttl=600,
                    clock=clock, journal_store=journal, **kw)


@pytest.fixture
def clock() -> Clock:
    return Clock(float(int(time.time())))


def test_thresholds_follow_spire():
    assert preparation_threshold(0, 6000) == 3000
    assert activation_threshold(0, 6000) == 5000
    year = 365 * 86400  # caps: prepare 30 days and activate 7 days before expiry
    assert preparation_threshold(0, year) == year - 30 * 86400
    assert activation_threshold(0, year) == year - 7 * 86400
    assert max_svid_ttl_for_ca_ttl(86400) == 14400


def test_prepare_activate_retire_prune(clock):
    changes = []
    ca = new_ca(clock, on_bundle_change=changes.append)
    t0 = clock.t
    ca.start()
    a_root, a_kid = ca.x509_ca, ca.jwt_key_id
    assert ca.manager.current_x509_id == "A" and ca.manager.next_x509.is_empty()

    clock.t = t0 + 2999
    assert not ca.rotate_if_needed()

    # Half-life: B is prepared and published, A still signs.
    clock.t = t0 + 3001
    assert ca.rotate_if_needed()
    b_root = ca.manager.next_x509.cert
    assert ca.manager.next_x509.status == PREPARED and ca.manager.next_jwt.status == PREPARED
    assert ca.bundle().x509_authorities == [a_root, b_root]
    assert len(ca.bundle().jwt_authorities) == 2
    assert changes[-1].x509_authorities == [a_root, b_root]
    assert ca.x509_ca == a_root and ca.jwt_key_id == a_kid

    # A leaf and a token issued by A before activation.
    clock.t = t0 + 4000
    old_leaf = ca.sign_x509_svid(generate_key().public_key(), WID, ttl=3000)
    old_token = ca.sign_jwt_svid(WID, ["svc"], ttl=1500)
    assert old_leaf[0].issuer == a_root.subject

    # 5/6 of the lifetime: B activates; A stays trusted.
    clock.t = t0 + 5001
    assert ca.rotate_if_needed()
    assert ca.manager.current_x509_id == "B" and ca.x509_ca == b_root
    assert ca.manager.current_x509.status == ACTIVE and ca.manager.next_x509.is_empty()
    assert ca.jwt_key_id != a_kid
    new_leaf = ca.sign_x509_svid(generate_key().public_key(), WID)
    bundle = ca.bundle()
    assert bundle.x509_authorities == [a_root, b_root]
    for chain in (old_leaf, new_leaf):  # overlap: both generations verify against one bundle
        verify_x509_svid(chain, bundle.x509_authorities, at_time=clock.t)
    validate_jwt_svid(old_token, "svc", {TD: bundle.jwt_keys()}, now=clock.t)
    validate_jwt_svid(ca.sign_jwt_svid(WID, ["svc"]), "svc", {TD: bundle.jwt_keys()}, now=clock.t)
    assert old_leaf[0].not_valid_after_utc == a_root.not_valid_after_utc  # capped at A's lifetime

    # A expires: pruned from the bundle; B (issued at +3001) is now past half-life, so slot A
    # is prepared anew.
    clock.t = t0 + 6002
    assert ca.rotate_if_needed()
    bundle = ca.bundle()
    assert a_root not in bundle.x509_authorities and a_kid not in bundle.jwt_authorities
    new_a = ca.manager.next_x509.cert
    assert ca.manager.next_x509.id == "A" and new_a is not None and new_a != a_root
    assert bundle.x509_authorities == [b_root, new_a]
    with pytest.raises(X509SVIDError):
        verify_x509_svid(old_leaf, bundle.x509_authorities, at_time=clock.t)
    assert changes[-1].x509_authorities == [b_root, new_a]


def test_expired_current_ca_is_replaced_in_one_step(clock):
    ca = new_ca(clock)
    ca.start()
    first = ca.x509_ca
    clock.t += 10 * TTL  # the server was stopped long past the CA's lifetime
    assert ca.rotate_if_needed()
    assert ca.x509_ca != first and ca.bundle().x509_authorities == [ca.x509_ca]
    verify_x509_svid(ca.sign_x509_svid(generate_key().public_key(), WID), ca.bundle().x509_authorities,
                     at_time=clock.t)


def test_bundle_callback_failure_is_retried(clock):
    calls = []

    def flaky(bundle):
        calls.append(bundle)
        if len(calls) == 1:
            raise RuntimeError("datastore down")

    ca = new_ca(clock, on_bundle_change=flaky)
    with pytest.raises(RuntimeError):
        ca.start()
    ca.rotate_if_needed()
    assert len(calls) == 2 and calls[1].x509_authorities == [ca.x509_ca]
    ca.rotate_if_needed()
    assert len(calls) == 2


# --- journal and restarts ------------------------------------------------------------------------
def test_disk_keymanager_restart_keeps_the_ca(tmp_path, clock):
    journal = Journal()
    keys = str(tmp_path / "keys.json")
    ca = new_ca(clock, DiskKeyManager(keys), journal)
    ca.start()
    root, kid = ca.x509_ca, ca.jwt_key_id
    token = ca.sign_jwt_svid(WID, ["svc"])
    keys_before = (tmp_path / "keys.json").read_bytes()

    clock.t += 60
    again = new_ca(clock, DiskKeyManager(keys), journal)
    again.start()
    assert again.x509_ca == root and again.jwt_key_id == kid
    assert (tmp_path / "keys.json").read_bytes() == keys_before  # no key was regenerated
    validate_jwt_svid(token, "svc", {TD: again.bundle().jwt_keys()}, now=clock.t)
    verify_x509_svid(again.sign_x509_svid(generate_key().public_key(), WID), [root], at_time=clock.t)


def test_restart_picks_up_prepared_next_slot(tmp_path, clock):
    journal, keys = Journal(), str(tmp_path / "keys.json")
    t0 = clock.t
    ca = new_ca(clock, DiskKeyManager(keys), journal)
    ca.start()
    clock.t = t0 + 3001
    ca.rotate_if_needed()
    prepared = ca.manager.next_x509.cert

    clock.t = t0 + 4000
    again = new_ca(clock, DiskKeyManager(keys), journal)
    again.start()
    assert again.manager.next_x509.cert == prepared and again.manager.next_x509.status == PREPARED
    clock.t = t0 + 5001
    assert again.rotate_if_needed()
    assert again.x509_ca == prepared


def test_memory_keymanager_restart_creates_new_ca_but_keeps_trusting_old(clock):
    journal = Journal()
    ca = new_ca(clock, MemoryKeyManager(), journal)
    ca.start()
    old_root = ca.x509_ca
    old_leaf = ca.sign_x509_svid(generate_key().public_key(), WID)

    again = new_ca(clock, MemoryKeyManager(), journal)  # keys are gone, as with SPIRE
    again.start()
    assert again.x509_ca != old_root
    # No journal matches the new keys; the old root stays trusted through the datastore's bundle,
    # which the server appends to (tests/integration: memory KeyManager restart).
    assert again.bundle().x509_authorities == [again.x509_ca]
    assert len(journal.rows) == 2
    verify_x509_svid(old_leaf, [old_root, again.x509_ca], at_time=clock.t)


def test_mismatched_keymanager_key_is_not_used(clock):
    journal, km = Journal(), MemoryKeyManager()
    ca = new_ca(clock, km, journal)
    ca.start()
    old_root = ca.x509_ca
    km.generate_key("x509-CA-A", "ec-p256")  # someone replaced the key behind the journal's back
    again = new_ca(clock, km, journal)
    again.start()
    assert again.x509_ca != old_root
    assert public_keys_equal(again.x509_ca.public_key(), again.manager.current_x509.key)  # type: ignore[arg-type]


def test_corrupt_journal_starts_a_new_ca(tmp_path, clock):
    journal, keys = Journal(), str(tmp_path / "keys.json")
    new_ca(clock, DiskKeyManager(keys), journal).start()
    (jid,) = journal.rows
    journal.rows[jid] = b"{not json"
    ca = new_ca(clock, DiskKeyManager(keys), journal)
    ca.start()
    assert ca.x509_ca is not None and journal.data is not None and journal.data.startswith(b"{")


def test_servers_sharing_a_datastore_each_resume_their_own_ca(tmp_path, clock):
    """HA: two servers write their journals into one table and each restarts with its own CA."""
    journal = Journal()
    keys = {n: str(tmp_path / f"{n}.json") for n in ("s1", "s2")}
    first = {n: new_ca(clock, DiskKeyManager(k), journal) for n, k in keys.items()}
    for ca in first.values():
        ca.start()
    roots = {n: ca.x509_ca for n, ca in first.items()}
    kids = {n: ca.jwt_key_id for n, ca in first.items()}
    assert roots["s1"] != roots["s2"] and len(journal.rows) == 2
    for n in ("s2", "s1"):  # restart in the other order
        clock.t += 10
        again = new_ca(clock, DiskKeyManager(keys[n]), journal)
        again.start()
        assert again.x509_ca == roots[n] and again.jwt_key_id == kids[n], n
    assert len(journal.rows) == 2


def test_journal_follows_the_active_authority_across_rotation(tmp_path, clock):
    from spire_py.common.x509util import subject_key_id

    journal, keys = Journal(), str(tmp_path / "keys.json")
    t0 = clock.t
    ca = new_ca(clock, DiskKeyManager(keys), journal)
    ca.start()
    assert list(journal.rows) == [subject_key_id(ca.x509_ca.public_key()).hex()]
    clock.t = t0 + 5001
    ca.rotate_if_needed()
    ca.rotate_if_needed()
    b_root = ca.x509_ca
    assert list(journal.rows) == [subject_key_id(b_root.public_key()).hex()]  # A's row replaced
    clock.t = t0 + 5100
    again = new_ca(clock, DiskKeyManager(keys), journal)
    again.start()
    assert again.x509_ca == b_root


def test_legacy_journal_row_is_taken_over_only_by_its_own_server(tmp_path, clock):
    journal, keys = Journal(), str(tmp_path / "keys.json")
    ca = new_ca(clock, DiskKeyManager(keys), journal)
    ca.start()
    root = ca.x509_ca
    journal.data = journal.data  # as written before journals were keyed: one "server-ca" row
    other = new_ca(clock, DiskKeyManager(str(tmp_path / "other.json")), journal)
    other.start()
    assert other.x509_ca != root and "server-ca" in journal.rows  # not its keys: left alone
    again = new_ca(clock, DiskKeyManager(keys), journal)
    again.start()
    assert again.x509_ca == root and "server-ca" not in journal.rows and len(journal.rows) == 2


def test_journal_holds_no_private_key(tmp_path, clock):
    journal, km = Journal(), DiskKeyManager(str(tmp_path / "keys.json"))
    new_ca(clock, km, journal).start()
    assert journal.data is not None and b"PRIVATE" not in journal.data
    for info in km.list_keys():
        der = private_key_to_der(km.get_key(info.key_id))  # type: ignore[arg-type]
        import base64

        assert base64.b64encode(der) not in journal.data


def test_upstream_rotation_keeps_upstream_root_only(tmp_path, clock):
    from spire_py.common.keys import private_key_to_pem
    from spire_py.common.x509util import create_ca_certificate, x509_ca_subject
    from cryptography.hazmat.primitives import serialization

    key = generate_key("rsa-2048")
    root = create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(common_name="upstream"),
                                 ttl=30 * 86400, now=clock.t - 60)
    (tmp_path / "root.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.key").write_bytes(private_key_to_pem(key))
    ua = DiskUpstreamAuthority(TD, str(tmp_path / "root.crt"), str(tmp_path / "root.key"))
    journal, keys = Journal(), str(tmp_path / "keys.json")
    t0 = clock.t
    ca = new_ca(clock, DiskKeyManager(keys), journal, upstream=ua)
    ca.start()
    first = ca.x509_ca
    clock.t = t0 + 3001
    ca.rotate_if_needed()
    clock.t = t0 + 5001
    ca.rotate_if_needed()
    assert ca.x509_ca != first and ca.x509_ca.issuer == root.subject
    assert ca.bundle().x509_authorities == [root]
    chain = ca.sign_x509_svid(generate_key().public_key(), WID)
    assert chain[1:] == [ca.x509_ca]
    verify_x509_svid(chain, [root], at_time=clock.t)
    # Restart: the upstream-signed intermediate comes back from the journal with its chain.
    again = new_ca(clock, DiskKeyManager(keys), journal, upstream=ua)
    again.start()
    assert again.x509_ca == ca.x509_ca and again.x509_ca_chain == [ca.x509_ca]
    assert again.bundle().x509_authorities == [root]


class FlakyUpstream:
    """Wraps an UpstreamAuthority; fails while ``down`` is set."""

    def __init__(self, inner) -> None:
        self.inner, self.down = inner, False

    def mint_x509_ca(self, *args):
        if self.down:
            raise ConnectionError("upstream unreachable")
        return self.inner.mint_x509_ca(*args)


def test_upstream_outage_keeps_current_ca_and_still_rotates_jwt(tmp_path, clock):
    from spire_py.common.keys import private_key_to_pem
    from spire_py.common.x509util import create_ca_certificate, x509_ca_subject
    from cryptography.hazmat.primitives import serialization

    key = generate_key()
    root = create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(), ttl=30 * 86400, now=clock.t)
    (tmp_path / "r.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "r.key").write_bytes(private_key_to_pem(key))
    up = FlakyUpstream(DiskUpstreamAuthority(TD, str(tmp_path / "r.crt"), str(tmp_path / "r.key")))
    t0 = clock.t
    ca = new_ca(clock, upstream=up)
    ca.start()
    first, kid = ca.x509_ca, ca.jwt_key_id
    up.down = True
    clock.t = t0 + 3001
    with pytest.raises(ConnectionError):
        ca.rotate_if_needed()
    assert ca.x509_ca == first and ca.manager.next_x509.is_empty()
    assert ca.manager.next_jwt.status == PREPARED  # the JWT key is not held back by the upstream
    ca.sign_x509_svid(generate_key().public_key(), WID)
    up.down = False
    clock.t = t0 + 3100
    assert ca.rotate_if_needed()
    assert ca.manager.next_x509.status == PREPARED
    clock.t = t0 + 5001
    ca.rotate_if_needed()
    assert ca.x509_ca != first and ca.jwt_key_id != kid


def test_usable_next_slot_is_promoted_when_current_is_lost(tmp_path, clock):
    journal, km = Journal(), MemoryKeyManager()
    t0 = clock.t
    ca = new_ca(clock, km, journal)
    ca.start()
    clock.t = t0 + 3001
    ca.rotate_if_needed()
    prepared = ca.manager.next_x509.cert
    km.generate_key("x509-CA-A", "ec-p256")  # the current CA's key is lost
    again = new_ca(clock, km, journal)
    again.start()
    assert again.x509_ca == prepared and again.manager.current_x509_id == "B"


class PublishingUpstream(FlakyUpstream):
    """An upstream that takes JWT keys and has a bundle of its own (as UpstreamAuthority "spire")."""

    def __init__(self, inner, roots) -> None:
        super().__init__(inner)
        self.published: list[str] = []
        self.roots = list(roots)
        self.upstream_key = generate_key().public_key()

    def publish_jwt_key(self, kid, public_key, expires_at):
        self.published.append(kid)
        return [("upstream-kid", self.upstream_key, int(expires_at)), (kid, public_key, int(expires_at))]

    def upstream_bundle(self):
        return list(self.roots), [("upstream-kid", self.upstream_key, 0)]


def test_jwt_keys_are_published_upstream_and_upstream_bundle_updates_are_merged(tmp_path, clock):
    from cryptography.hazmat.primitives import serialization

    from spire_py.common.keys import private_key_to_pem
    from spire_py.common.x509util import create_ca_certificate, x509_ca_subject

    key = generate_key()
    root = create_ca_certificate(key.public_key(), key, subject=x509_ca_subject(), ttl=30 * 86400, now=clock.t)
    (tmp_path / "r.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "r.key").write_bytes(private_key_to_pem(key))
    up = PublishingUpstream(DiskUpstreamAuthority(TD, str(tmp_path / "r.crt"), str(tmp_path / "r.key")), [root])
    ca = new_ca(clock, upstream=up)
    ca.start()
    assert up.published == [ca.jwt_key_id]
    assert set(ca.bundle().jwt_authorities) == {ca.jwt_key_id, "upstream-kid"}
    # The upstream rotates its root: the next rotation step merges it into our bundle.
    other = generate_key()
    new_root = create_ca_certificate(other.public_key(), other, subject=x509_ca_subject(), ttl=30 * 86400,
                                     now=clock.t)
    up.roots.append(new_root)
    assert ca.rotate_if_needed()
    assert ca.bundle().x509_authorities == [root, new_root]
    assert not ca.rotate_if_needed()  # nothing new: no change
    # Revoked here (upstreamauthority revoke): the upstream still listing it does not bring it back.
    from spire_py.common.x509util import authority_id

    ca.manager.forget_x509_authority(authority_id(root))
    ca.manager.forget_jwt_key("upstream-kid")
    assert not ca.rotate_if_needed()
    assert ca.bundle().x509_authorities == [new_root] and "upstream-kid" not in ca.bundle().jwt_authorities


def test_a_retired_authority_is_still_known_as_old_after_a_restart(tmp_path, clock):
    # As SPIRE's journal: activate by hand, restart, and the old CA and JWT key can still be tainted.
    keys, journal = str(tmp_path / "keys.json"), Journal()
    ca = new_ca(clock, DiskKeyManager(keys), journal)
    ca.start()
    m = ca.manager
    first_x509, first_jwt = m.current_x509.authority_id, m.current_jwt.kid
    m.prepare_x509_now(clock.t)
    m.activate_x509_now()
    m.prepare_jwt_now(clock.t)
    m.activate_jwt_now()
    again = new_ca(clock, DiskKeyManager(keys), journal)
    again.start()
    (cur, old), (jcur, jold) = again.manager.x509_slots(), again.manager.jwt_slots()
    assert (old.authority_id, old.status) == (first_x509, "OLD") and cur.status == ACTIVE
    assert (jold.kid, jold.status) == (first_jwt, "OLD") and jcur.status == ACTIVE
    assert again.x509_ca == ca.x509_ca  # the activated one signs, never the old one
