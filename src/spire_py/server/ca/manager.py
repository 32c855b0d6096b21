"""CA authority management: prepare → activate → retire for the X.509 CA and the JWT key.

Mirrors SPIRE's ca/manager and ca/rotator: two slots per authority kind whose
keys live in the KeyManager as ``x509-CA-A``/``x509-CA-B`` and
``JWT-Signer-A``/``JWT-Signer-B``. A new authority is published to the bundle
as soon as it is prepared, so relying parties trust it before anything is
signed with it; retired authorities stay in the bundle until they expire.
Slot metadata goes to the journal so a restart with a persistent KeyManager
keeps the same CA; with the memory KeyManager the keys are gone and a new CA is
prepared, as in SPIRE.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any, Callable, Optional, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ...common import log, telemetry
from ...common.bundle import Bundle
from ...common.keys import PrivateKey, public_key_der, public_keys_equal, signature_hash_for
from ...common.spiffeid import TrustDomain
from ...common.telemetry.names import (CA_JWT_KEY_ACTIVATE, CA_JWT_KEY_PREPARE, CA_X509_CA_ACTIVATE,
                                      CA_X509_CA_PREPARE)
from ...common.x509util import (
    X509SVIDError, create_ca_certificate, is_ca, new_serial_number, subject_key_id, uri_sans, verify_chain,
)
from . import journal as journal_mod
from .errors import CAError, JournalError
from .slots import ACTIVE, OLD, PREPARED, SLOT_IDS, JWTKeySlot, X509CASlot, other_slot

_log = log.get("ca")

_KID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

SubjectFactory = Callable[[str], x509.Name]


def new_key_id() -> str:
    """A random 32-character JWT key id from SPIRE's alphabet."""
    return "".join(_KID_ALPHABET[b % len(_KID_ALPHABET)] for b in secrets.token_bytes(32))


class JournalStore(Protocol):
    """Where the CA journal is kept (the datastore's ca_journals table).

    As SPIRE, each server's journal is found through its own KeyManager keys: it is stored under
    the authority ID (subject key ID) of the X.509 CA that signs, so servers sharing a datastore
    in HA never read or overwrite each other's journal.
    """

    def load(self, journal_ids: list[str]) -> Optional[tuple[str, bytes]]:
        """The first stored journal among ``journal_ids``, with its ID."""

    def all(self) -> list[tuple[str, bytes]]:
        """Every stored journal (one per server that shares the datastore), with its ID."""

    def save(self, journal_id: str, data: bytes, replaces: Optional[str]) -> None:
        """Store ``data`` under ``journal_id``, dropping the row ``replaces`` when it is another."""


class CAManager:
    """State of both authority kinds; every method is safe to call from several threads."""

    def __init__(
        self,
        trust_domain: TrustDomain,
        key_manager: Any,
        upstream: Any = None,
        *,
        ca_key_type: str,
        jwt_key_type: str,
        ca_ttl: float,
        ca_subject: SubjectFactory,
        journal_store: Optional[JournalStore] = None,
        on_bundle_change: Optional[Callable[[Bundle], None]] = None,
    ) -> None:
        self.trust_domain = trust_domain
        self.key_manager = key_manager
        self.upstream = upstream
        self.ca_key_type = ca_key_type
        self.jwt_key_type = jwt_key_type
        self.ca_ttl = float(ca_ttl)
        self.ca_subject = ca_subject
        self._journal_store = journal_store
        self._journal_id: Optional[str] = None  # the row this server's journal is stored under
        self._on_bundle_change = on_bundle_change
        self._lock = threading.RLock()
        self.x509 = {sid: X509CASlot(sid) for sid in SLOT_IDS}
        self.jwt = {sid: JWTKeySlot(sid) for sid in SLOT_IDS}
        self.current_x509_id = "A"
        self.current_jwt_id = "A"
        self.published = Bundle(trust_domain)
        self._bundle_dirty = False
        # Authorities revoked here: an upstream bundle that still lists one does not bring it back.
        self._revoked: set[str] = set()
        # Upstream authorities whose taint was acted on (SPIRE's processedTaintedAuthorities).
        self._processed_tainted: set[str] = set()

    @property
    def journal_id(self) -> Optional[str]:
        """The ID this server's journal is stored under (None before the first save)."""
        return self._journal_id

    # --- slot access -------------------------------------------------------------------------
    @property
    def current_x509(self) -> X509CASlot:
        return self.x509[self.current_x509_id]

    @property
    def next_x509(self) -> X509CASlot:
        return self.x509[other_slot(self.current_x509_id)]

    @property
    def current_jwt(self) -> JWTKeySlot:
        return self.jwt[self.current_jwt_id]

    @property
    def next_jwt(self) -> JWTKeySlot:
        return self.jwt[other_slot(self.current_jwt_id)]

    def active_x509(self) -> X509CASlot:
        """A copy of the signing X.509 CA slot."""
        with self._lock:
            slot = self.current_x509
            if slot.status != ACTIVE or slot.cert is None or slot.key is None:
                raise CAError("X509 CA is not available for signing")
            return X509CASlot(slot.id, slot.key, slot.cert, list(slot.upstream_chain),
                              list(slot.upstream_roots), slot.issued_at, slot.status)

    def active_jwt(self) -> JWTKeySlot:
        """A copy of the signing JWT key slot."""
        with self._lock:
            slot = self.current_jwt
            if slot.status != ACTIVE or slot.key is None:
                raise CAError("JWT key is not available for signing")
            return JWTKeySlot(slot.id, slot.key, slot.kid, slot.not_after, slot.issued_at, slot.status)

    def bundle(self, now: float) -> Bundle:
        """The published authorities that have not expired at ``now``."""
        with self._lock:
            b = Bundle(self.trust_domain, list(self.published.x509_authorities), dict(self.published.jwt_authorities))
        b.prune(now)
        return b

    # --- journal ----------------------------------------------------------------------------
    def load(self, now: float) -> None:
        """Pick the slots up from the journal when their KeyManager keys are still there."""
        found = self._find_journal()
        if found is None:
            return
        self._journal_id, data = found
        try:
            published = Bundle.from_record({"trust_domain_id": self.trust_domain.id_string(),
                                            "x509_authorities": data.x509_authorities,
                                            "jwt_authorities": data.jwt_authorities})
        except ValueError as exc:
            _log.error("Unable to load CA journal; starting with a new CA", extra=log.fields(error=str(exc)))
            return
        with self._lock:
            self.published = published
            self.current_x509_id, self.current_jwt_id = data.current_x509, data.current_jwt
            for sid, x in data.x509_cas.items():
                slot = self._restore_x509(x, now)
                if slot is not None:
                    self.x509[sid] = slot
            for sid, j in data.jwt_keys.items():
                jslot = self._restore_jwt(j, now)
                if jslot is not None:
                    self.jwt[sid] = jslot
            # An unusable current authority gives way to a usable prepared one.
            if self.current_x509.is_empty() and not self.next_x509.is_empty():
                self.current_x509_id = self.next_x509.id
            if self.current_jwt.is_empty() and not self.next_jwt.is_empty():
                self.current_jwt_id = self.next_jwt.id
            # As SPIRE: a loaded current authority signs again unless the next one is due.
            for cur in (self.current_x509, self.current_jwt):
                if not cur.is_empty() and not cur.should_activate_next(now):
                    cur.status = ACTIVE
            self._save()

    def _find_journal(self) -> Optional[tuple[str, journal_mod.JournalData]]:
        """This server's journal: the one whose X.509 CAs were made with its KeyManager's keys.

        Looked up by authority ID first (the row of the CA that signed when it was written), then
        among every stored journal by any CA's key: that finds it when only the prepared slot's key
        is left, and journals written under the single ID of earlier releases.
        """
        if self._journal_store is None:
            return None
        ours = set()
        for sid in SLOT_IDS:
            key = self._km_key(self.x509[sid].km_key_id)
            if key is not None:
                ours.add(subject_key_id(key).hex())
        if not ours:
            _log.info("No X509 CA key in the key manager; starting with a new CA")
            return None
        found = self._journal_store.load(sorted(ours))
        rows = [found] if found else self._journal_store.all()
        for journal_id, raw in rows:
            try:
                data = journal_mod.decode(raw)
            except JournalError as exc:
                if found:
                    _log.error("Unable to load CA journal; starting with a new CA",
                               extra=log.fields(journal=journal_id, error=str(exc)))
                    self._journal_id = journal_id  # ours, unreadable: the new CA's journal replaces it
                    return None
                continue  # somebody else's unreadable journal
            keys = {subject_key_id(e.chain[0].public_key()).hex()  # type: ignore[arg-type]
                    for e in data.x509_cas.values() if e.chain}
            if found or keys & ours:
                return journal_id, data
        _log.info("No CA journal matches this server's key manager keys; starting with a new CA")
        return None

    def _km_key(self, key_id: str) -> Optional[PrivateKey]:
        key: Optional[PrivateKey] = self.key_manager.get_key(key_id)
        return key

    def _restore_x509(self, e: journal_mod.X509CAEntry, now: float) -> Optional[X509CASlot]:
        slot = X509CASlot(e.slot_id)
        cert = e.chain[0]
        key = self._km_key(slot.km_key_id)
        why = ""
        if e.status == OLD:
            return self._restore_old_x509(slot, e, now)
        if key is None:
            why = "no key manager key"
        elif not public_keys_equal(key, cert.public_key()):  # type: ignore[arg-type]
            why = "public key does not match key manager key"
        elif uri_sans(cert) != [self.trust_domain.id_string()]:
            why = "CA certificate is for another trust domain"
        elif cert.not_valid_after_utc.timestamp() <= now:
            why = "CA certificate has expired"
        if why:
            _log.warning("X509 CA slot unusable", extra=log.fields(slot=e.slot_id, reason=why))
            return None
        slot.key, slot.cert, slot.issued_at, slot.status = key, cert, e.issued_at, e.status
        if e.upstream:
            slot.upstream_chain, slot.upstream_roots = list(e.chain), list(e.upstream_roots)
        return slot

    def _restore_old_x509(self, slot: X509CASlot, e: journal_mod.X509CAEntry, now: float) -> Optional[X509CASlot]:
        """A retired CA comes back as OLD (never signing) so it can still be tainted and revoked,
        as SPIRE's journal keeps it; an expired one or another trust domain's is dropped."""
        cert = e.chain[0]
        if uri_sans(cert) != [self.trust_domain.id_string()] or cert.not_valid_after_utc.timestamp() <= now:
            return None
        slot.cert, slot.issued_at, slot.status = cert, e.issued_at, OLD
        if e.upstream:
            slot.upstream_chain, slot.upstream_roots = list(e.chain), list(e.upstream_roots)
        return slot

    def _restore_jwt(self, e: journal_mod.JWTKeyEntry, now: float) -> Optional[JWTKeySlot]:
        slot = JWTKeySlot(e.slot_id)
        if e.status == OLD:
            # Kept as OLD (see _restore_old_x509) while its key is still the key manager's.
            old_key = self._km_key(slot.km_key_id)
            if e.not_after <= now or old_key is None or public_key_der(old_key) != e.public_key:
                return None
            slot.key, slot.kid, slot.not_after, slot.issued_at, slot.status = old_key, e.kid, e.not_after, e.issued_at, OLD
            return slot
        key = self._km_key(slot.km_key_id)
        why = ""
        if key is None:
            why = "no key manager key"
        elif public_key_der(key) != e.public_key:
            why = "public key does not match key manager key"
        elif e.not_after <= now:
            why = "JWT key has expired"
        if why:
            _log.warning("JWT key slot unusable", extra=log.fields(slot=e.slot_id, reason=why))
            return None
        slot.key, slot.kid, slot.not_after, slot.issued_at, slot.status = key, e.kid, e.not_after, e.issued_at, e.status
        return slot

    def _save(self) -> None:
        if self._journal_store is None:
            return
        cert = self.current_x509.cert
        journal_id = self._journal_id
        if cert is not None:
            journal_id = subject_key_id(cert.public_key()).hex()  # type: ignore[arg-type]
        if not journal_id:
            return  # nothing worth keeping before the first CA exists
        rec = self.published.to_record()
        data = journal_mod.encode(self.current_x509_id, self.x509, self.current_jwt_id, self.jwt,
                                  rec["x509_authorities"], rec["jwt_authorities"])
        try:
            self._journal_store.save(journal_id, data, self._journal_id)
        except Exception as exc:  # as SPIRE: the CA keeps working, the next change retries
            _log.error("Unable to save CA journal", extra=log.fields(error=str(exc)))
            return
        self._journal_id = journal_id

    # --- rotation (SPIRE's rotator.rotate) ---------------------------------------------------
    def rotate(self, now: float) -> bool:
        """Prepare, activate and retire as due at ``now``; prune expired authorities.

        Returns True when the signing authorities or the bundle changed.
        """
        errors: list[Exception] = []
        with self._lock:
            changed = False
            try:
                changed = self._rotate_x509(now)
                changed = self._rotate_for_upstream_taints(now) or changed
            except Exception as exc:
                # As SPIRE's rotator: without a usable X.509 CA give up, else still rotate the JWT key.
                if self.current_x509.is_empty():
                    raise
                _log.error("Unable to rotate X509 CA", extra=log.fields(error=str(exc)))
                errors.append(exc)
            try:
                changed = self._rotate_jwt(now) or changed
            except Exception as exc:
                _log.error("Unable to rotate JWT key", extra=log.fields(error=str(exc)))
                errors.append(exc)
            if self._merge_upstream_bundle():
                self._bundle_dirty = changed = True
                self._save()
            if self.published.prune(now):
                self._bundle_dirty = changed = True
                self._save()
            bundle = self.bundle(now) if self._bundle_dirty else None
        if bundle is not None and self._on_bundle_change is not None:
            self._on_bundle_change(bundle)
        with self._lock:
            if bundle is not None:
                self._bundle_dirty = False
        if errors:
            raise errors[0]
        return changed

    def _rotate_x509(self, now: float) -> bool:
        changed = False
        if self.current_x509.is_empty():
            self._prepare_x509(now)
            self._activate_x509()
            changed = True
        if self.next_x509.is_empty() and self.current_x509.should_prepare_next(now):
            self._prepare_x509(now)
            changed = True
        if self.current_x509.should_activate_next(now) and not self.next_x509.is_empty():
            old = self.current_x509
            self.current_x509_id = other_slot(self.current_x509_id)
            _log.info("X509 CA retired", extra=log.fields(slot=old.id, local_authority_id=old.authority_id))
            old.retire()
            self._activate_x509()
            changed = True
        return changed

    def _rotate_jwt(self, now: float) -> bool:
        changed = False
        if self.current_jwt.is_empty():
            self._prepare_jwt(now)
            self._activate_jwt()
            changed = True
        if self.next_jwt.is_empty() and self.current_jwt.should_prepare_next(now):
            self._prepare_jwt(now)
            changed = True
        if self.current_jwt.should_activate_next(now) and not self.next_jwt.is_empty():
            old = self.current_jwt
            self.current_jwt_id = other_slot(self.current_jwt_id)
            _log.info("JWT key retired", extra=log.fields(slot=old.id, local_authority_id=old.kid))
            old.retire()
            self._activate_jwt()
            changed = True
        return changed

    # --- the upstream's own bundle (SPIRE's SubscribeToLocalBundle) -------------------------------
    def _merge_upstream_bundle(self) -> bool:
        """Add the upstream roots and JWT keys the UpstreamAuthority has seen since; True when any."""
        seen = getattr(self.upstream, "upstream_bundle", None)
        latest = seen() if callable(seen) else None
        if not latest:
            return False
        roots, jwt_keys = latest
        added = False
        for root in roots:
            if _ski(root) not in self._revoked:
                added = self.published.add_x509_authority(root) or added
        for kid, key, expires_at in jwt_keys:
            if kid not in self.published.jwt_authorities and kid not in self._revoked:
                self.published.add_jwt_authority(kid, key, expires_at)
                added = True
        if added:
            _log.info("Upstream bundle updated", extra=log.fields(
                x509_authorities=len(roots), jwt_authorities=len(jwt_keys)))
        return added

    def _rotate_for_upstream_taints(self, now: float) -> bool:
        """SPIRE's processTaintedUpstreamAuthorities: when the upstream taints the authority our
        signing CA chains to, a new CA (signed by what the upstream signs with now) is prepared and
        activated at once, before the taint reaches our bundle and our agents re-sign. A failure
        leaves the taint unprocessed, so the next rotation step tries again."""
        seen = getattr(self.upstream, "upstream_taints", None)
        taints = seen() if callable(seen) else None
        if taints is None:
            return False
        new = set(taints.tainted_x509) - self._processed_tainted
        if not new:
            return False
        changed = False
        if _chains_to(self.current_x509, new):
            _log.info("Current root CA is signed by a tainted upstream authority, preparing rotation",
                      extra=log.fields(subject_key_id=",".join(sorted(new))))
            nxt = self.next_x509
            if nxt.status != PREPARED or _chains_to(nxt, set(taints.tainted_x509)):
                self._prepare_x509(now)
            self.activate_x509_now()
            changed = True
        self._processed_tainted |= new
        return changed

    def _publish_jwt_upstream(self, slot: JWTKeySlot) -> None:
        """Publish a new JWT key to an UpstreamAuthority that takes it (the spire one); its answer, the
        upstream's JWT keys, joins our bundle. Upstreams that do not publish are skipped, as SPIRE's
        Unimplemented."""
        publish = getattr(self.upstream, "publish_jwt_key", None)
        if publish is None or slot.key is None:
            return
        try:
            upstream_keys = publish(slot.kid, slot.key.public_key(), int(slot.not_after))
        except NotImplementedError:
            return
        for kid, key, expires_at in upstream_keys or ():
            if kid not in self.published.jwt_authorities:
                self.published.add_jwt_authority(kid, key, expires_at)
        _log.info("JWT key published upstream", extra=log.fields(local_authority_id=slot.kid))

    # --- X.509 CA ---------------------------------------------------------------------------------
    @telemetry.calls(CA_X509_CA_PREPARE)
    def _prepare_x509(self, now: float) -> None:
        slot = self.current_x509 if self.current_x509.is_empty() else self.next_x509
        slot.reset()
        key: PrivateKey = self.key_manager.generate_key(slot.km_key_id, self.ca_key_type)
        if self.upstream is not None:
            chain, roots = self._upstream_sign(key, now)
            slot.cert, slot.upstream_chain, slot.upstream_roots = chain[0], chain, roots
        else:
            slot.cert = create_ca_certificate(
                key.public_key(), key, subject=self.ca_subject(str(new_serial_number())),
                ttl=self.ca_ttl, now=now, uris=[self.trust_domain.id_string()])
        slot.key, slot.issued_at, slot.status = key, now, PREPARED
        for root in slot.roots:
            self.published.add_x509_authority(root)
        self._bundle_dirty = True
        self._save()
        _log.info("X509 CA prepared", extra=log.fields(
            slot=slot.id, issued_at=now, expiration=slot.not_after, self_signed=self.upstream is None,
            local_authority_id=slot.authority_id))

    def _upstream_sign(self, key: PrivateKey, now: float) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        """Have the UpstreamAuthority mint our intermediate and check it as SPIRE's X509CAValidator."""
        td_id = self.trust_domain.id_string()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(self.ca_subject(str(new_serial_number())))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(td_id)]), critical=False)
               .sign(key, signature_hash_for(key)))  # type: ignore[arg-type]
        minted, upstream_roots = self.upstream.mint_x509_ca(csr.public_bytes(serialization.Encoding.DER),
                                                            self.trust_domain, self.ca_ttl)
        chain: list[x509.Certificate] = list(minted)
        roots: list[x509.Certificate] = list(upstream_roots)
        if not chain:
            raise CAError("upstream authority returned an empty X.509 CA chain")
        if not roots:
            raise CAError("upstream authority returned no upstream X.509 roots")
        ca = chain[0]
        if not public_keys_equal(ca.public_key(), key):  # type: ignore[arg-type]
            raise CAError("upstream-signed X509 CA does not have the requested public key")
        if not is_ca(ca):
            raise CAError("upstream-signed X509 CA is not a CA certificate")
        if uri_sans(ca) != [td_id]:
            raise CAError(f'upstream-signed X509 CA must have the trust domain ID "{td_id}" as its only URI SAN')
        try:
            verify_chain(ca, chain[1:], roots, now)
        except X509SVIDError as exc:
            raise CAError(f"upstream-signed X509 CA does not chain to the upstream roots: {exc}") from None
        return chain, roots

    @telemetry.counts(CA_X509_CA_ACTIVATE)
    def _activate_x509(self) -> None:
        slot = self.current_x509
        slot.status = ACTIVE
        self._save()
        _log.info("X509 CA activated", extra=log.fields(
            slot=slot.id, issued_at=slot.issued_at, expiration=slot.not_after,
            local_authority_id=slot.authority_id))

    # --- JWT key ----------------------------------------------------------------------------------
    @telemetry.calls(CA_JWT_KEY_PREPARE)
    def _prepare_jwt(self, now: float) -> None:
        slot = self.current_jwt if self.current_jwt.is_empty() else self.next_jwt
        slot.reset()
        key: PrivateKey = self.key_manager.generate_key(slot.km_key_id, self.jwt_key_type)
        slot.key, slot.kid, slot.not_after = key, new_key_id(), now + self.ca_ttl
        slot.issued_at, slot.status = now, PREPARED
        self.published.add_jwt_authority(slot.kid, key.public_key(), int(slot.not_after))
        self._publish_jwt_upstream(slot)
        self._bundle_dirty = True
        self._save()
        _log.info("JWT key prepared", extra=log.fields(
            slot=slot.id, issued_at=now, expiration=slot.not_after, local_authority_id=slot.kid))

    @telemetry.counts(CA_JWT_KEY_ACTIVATE)
    def _activate_jwt(self) -> None:
        slot = self.current_jwt
        slot.status = ACTIVE
        self._save()
        _log.info("JWT key activated", extra=log.fields(
            slot=slot.id, issued_at=slot.issued_at, expiration=slot.not_after, local_authority_id=slot.kid))

    # --- forced rotation (the LocalAuthority API; SPIRE's PrepareX509CA / RotateX509CA ...) --------
    def x509_slots(self) -> tuple[X509CASlot, X509CASlot]:
        """Copies of (current, next) X.509 CA slots."""
        with self._lock:
            return tuple(X509CASlot(s.id, None, s.cert, list(s.upstream_chain), list(s.upstream_roots),  # type: ignore[return-value]
                                    s.issued_at, s.status) for s in (self.current_x509, self.next_x509))

    def jwt_slots(self) -> tuple[JWTKeySlot, JWTKeySlot]:
        """Copies of (current, next) JWT key slots (without their private keys)."""
        with self._lock:
            return tuple(JWTKeySlot(s.id, None, s.kid, s.not_after, s.issued_at, s.status)  # type: ignore[return-value]
                         for s in (self.current_jwt, self.next_jwt))

    def prepare_x509_now(self, now: float) -> None:
        """Prepare the next X.509 CA whatever the thresholds say (replacing a prepared or old one)."""
        with self._lock:
            self._prepare_x509(now)

    def activate_x509_now(self) -> None:
        """The prepared X.509 CA signs from now on; the current one becomes OLD."""
        with self._lock:
            old = self.current_x509
            self.current_x509_id = other_slot(self.current_x509_id)
            old.retire()
            _log.info("X509 CA retired", extra=log.fields(slot=old.id, local_authority_id=old.authority_id))
            self._activate_x509()

    def prepare_jwt_now(self, now: float) -> None:
        with self._lock:
            self._prepare_jwt(now)

    def activate_jwt_now(self) -> None:
        with self._lock:
            old = self.current_jwt
            self.current_jwt_id = other_slot(self.current_jwt_id)
            old.retire()
            _log.info("JWT key retired", extra=log.fields(slot=old.id, local_authority_id=old.kid))
            self._activate_jwt()

    def forget_x509_authority(self, authority_id: str) -> None:
        """A revoked X.509 authority leaves what we publish, so it is not appended to the bundle again."""
        with self._lock:
            self._revoked.add(authority_id)
            self.published.x509_authorities = [c for c in self.published.x509_authorities
                                               if subject_key_id(c.public_key()).hex() != authority_id  # type: ignore[arg-type]
                                               and _ski(c) != authority_id]
            self._save()

    def remember_revoked(self, authority_ids: Any) -> None:
        """Authorities revoked earlier (the datastore keeps their IDs): after a restart, an upstream
        bundle that still lists one does not put it back in what we publish."""
        with self._lock:
            new = set(authority_ids) - self._revoked
            if not new:
                return
            self._revoked |= new
            x509_before, jwt_before = len(self.published.x509_authorities), len(self.published.jwt_authorities)
            self.published.x509_authorities = [c for c in self.published.x509_authorities if _ski(c) not in new]
            for kid in new:
                self.published.jwt_authorities.pop(kid, None)
            if (x509_before, jwt_before) != (len(self.published.x509_authorities),
                                             len(self.published.jwt_authorities)):
                self._save()

    def forget_jwt_key(self, key_id: str) -> None:
        with self._lock:
            self._revoked.add(key_id)
            self.published.jwt_authorities.pop(key_id, None)
            self._save()


def _chains_to(slot: X509CASlot, authority_ids: set[str]) -> bool:
    """Whether an upstream-signed CA's chain was issued by one of ``authority_ids`` (SKIDs)."""
    if slot.cert is None or not slot.upstream_chain:
        return False
    for cert in slot.upstream_chain:
        if _ski(cert) in authority_ids:
            return True
        try:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except x509.ExtensionNotFound:
            continue
        if aki is not None and aki.hex() in authority_ids:
            return True
    return False


def _ski(cert: x509.Certificate) -> str:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return ""
