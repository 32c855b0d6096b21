"""The server CA: signs X509-SVIDs, downstream CAs and JWT-SVIDs with the active authorities.

Certificates follow SPIRE's credential templates (see common.x509util); the
authorities themselves are prepared, activated and retired by
:class:`~spire_py.server.ca.manager.CAManager`. All methods are blocking and
thread-safe; the async server runs them in its thread pool.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from ...common import telemetry
from ...common.bundle import Bundle
from ...common.telemetry.names import CA_SIGN_JWT_SVID, CA_SIGN_X509_CA_SVID, CA_SIGN_X509_SVID
from ...common.jwtsvid import JWTSVIDError, sign_jwt_svid
from ...common.keys import EC_P256, KEY_TYPES, PublicKey
from ...common.spiffeid import SpiffeId, SpiffeIdError, TrustDomain, server_id
from ...common.x509util import create_ca_certificate, create_x509_svid, go_name, name_values, x509_ca_subject
from .errors import CARequestError
from .manager import CAManager, JournalStore, SubjectFactory
from .slots import X509CASlot

DEFAULT_CA_TTL = 24 * 3600
DEFAULT_X509_SVID_TTL = 3600
DEFAULT_JWT_SVID_TTL = 300


def ca_subject_factory(ca_subject: Any) -> SubjectFactory:
    """serial → CA subject, from an x509.Name, an object with country/organization/common_name
    (the server config's CASubject), or None (SPIRE's default C=US, O=SPIFFE)."""
    if isinstance(ca_subject, x509.Name):
        values = name_values(ca_subject)

        def from_name(serial: str) -> x509.Name:
            v = dict(values)
            v.setdefault(NameOID.SERIAL_NUMBER, [serial])
            return go_name(v)
        return from_name
    country = list(getattr(ca_subject, "country", None) or [])
    organization = list(getattr(ca_subject, "organization", None) or [])
    common_name = str(getattr(ca_subject, "common_name", None) or "")
    if not (country or organization or common_name):
        country, organization = ["US"], ["SPIFFE"]
    return lambda serial: x509_ca_subject(country, organization, common_name, serial)


def _check_public_key(key: CertificatePublicKeyTypes) -> PublicKey:
    if isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return key
    raise CARequestError(f"unsupported public key type {type(key).__name__}; expected EC or RSA")


class ServerCA:
    def __init__(
        self,
        trust_domain: Union[TrustDomain, str],
        key_manager: Any,
        upstream: Any = None,
        ca_key_type: Optional[str] = EC_P256,
        jwt_key_type: Optional[str] = EC_P256,
        ca_ttl: Optional[float] = DEFAULT_CA_TTL,
        ca_subject: Any = None,
        x509_svid_ttl: Optional[float] = DEFAULT_X509_SVID_TTL,
        jwt_svid_ttl: Optional[float] = DEFAULT_JWT_SVID_TTL,
        jwt_issuer: Optional[str] = None,
        clock: Callable[[], float] = time.time,
        *,
        agent_svid_ttl: Optional[float] = None,
        journal_store: Optional[JournalStore] = None,
        on_bundle_change: Optional[Callable[[Bundle], None]] = None,
    ) -> None:
        self.trust_domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        for what, kt in (("ca_key_type", ca_key_type), ("jwt_key_type", jwt_key_type)):
            if kt is not None and kt not in KEY_TYPES:
                raise CARequestError(f'{what} "{kt}" is not supported; supported: {", ".join(KEY_TYPES)}')
        self.ca_ttl = float(ca_ttl or DEFAULT_CA_TTL)
        self.x509_svid_ttl = float(x509_svid_ttl or DEFAULT_X509_SVID_TTL)
        self.jwt_svid_ttl = float(jwt_svid_ttl or DEFAULT_JWT_SVID_TTL)
        self.agent_svid_ttl = float(agent_svid_ttl or self.x509_svid_ttl)
        self.jwt_issuer = jwt_issuer or None
        self._clock = clock
        self.manager = CAManager(
            self.trust_domain, key_manager, upstream,
            ca_key_type=ca_key_type or EC_P256, jwt_key_type=jwt_key_type or EC_P256, ca_ttl=self.ca_ttl,
            ca_subject=ca_subject_factory(ca_subject), journal_store=journal_store,
            on_bundle_change=on_bundle_change,
        )

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, now: Optional[float] = None) -> None:
        """Load the journal, then prepare and activate whatever is missing."""
        t = self._clock() if now is None else now
        self.manager.load(t)
        self.manager.rotate(t)

    def rotate_if_needed(self, now: Optional[float] = None) -> bool:
        """Run one rotation step (prepare / activate / retire / prune); True when anything changed."""
        return self.manager.rotate(self._clock() if now is None else now)

    # --- state ------------------------------------------------------------------------------
    def current_x509_slot(self) -> X509CASlot:
        """A copy of the signing X.509 CA slot (id, key, cert, upstream chain and roots)."""
        return self.manager.active_x509()

    @property
    def x509_ca(self) -> x509.Certificate:
        cert = self.manager.active_x509().cert
        assert cert is not None
        return cert

    @property
    def x509_ca_chain(self) -> list[x509.Certificate]:
        """The signing CA and the upstream intermediates after it (just the CA when self-signed)."""
        return self.manager.active_x509().chain

    @property
    def jwt_key_id(self) -> str:
        return self.manager.active_jwt().kid

    def bundle(self) -> Bundle:
        """Every unexpired X.509 root (self-signed CAs or upstream roots) and JWT key published so far."""
        return self.manager.bundle(self._clock())

    # --- X.509 ---------------------------------------------------------------------------------
    def _member_id(self, spiffe_id: Union[SpiffeId, str], what: str) -> SpiffeId:
        try:
            sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(str(spiffe_id))
        except SpiffeIdError as exc:
            raise CARequestError(f"invalid {what} ID: {exc}") from None
        if sid.trust_domain != self.trust_domain:
            raise CARequestError(f'invalid {what} ID: "{sid}" is not a member of trust domain "{self.trust_domain}"')
        if not sid.path:
            raise CARequestError(f'invalid {what} ID: "{sid}" is not a member of trust domain "{self.trust_domain}"; path is empty')
        return sid

    @telemetry.counts(CA_SIGN_X509_SVID)
    def sign_x509_svid(
        self,
        public_key: CertificatePublicKeyTypes,
        spiffe_id: Union[SpiffeId, str],
        ttl: Optional[float] = None,
        dns_names: Sequence[str] = (),
        subject: Optional[x509.Name] = None,
    ) -> list[x509.Certificate]:
        """[leaf, CA chain up to but excluding the root]; TTL defaults to x509_svid_ttl and is
        capped at the CA's NotAfter."""
        sid = self._member_id(spiffe_id, "X509-SVID")
        pub = _check_public_key(public_key)
        slot = self.manager.active_x509()
        assert slot.cert is not None and slot.key is not None
        leaf = create_x509_svid(pub, sid, issuer=slot.cert, signer=slot.key,
                                ttl=ttl if ttl and ttl > 0 else self.x509_svid_ttl, now=self._clock(),
                                dns_names=list(dns_names or ()), subject=subject)
        return [leaf] + list(slot.upstream_chain)

    async def sign_x509_svids_pooled(self, pool: Any, items: list[tuple[bytes, str, Optional[float], list[str]]]
                                     ) -> Optional[list[tuple[int, str, list[bytes], int]]]:
        """A batch of (CSR DER, SPIFFE ID, TTL, DNS names) parsed, checked and signed in the
        signing pool's worker processes with the active CA (``signing_pool``), each item with its
        own outcome; None when the batch should be signed in-process instead."""
        slot = self.manager.active_x509()
        assert slot.cert is not None and slot.key is not None
        for _, sid, _, _ in items:
            self._member_id(sid, "X509-SVID")  # entries' IDs: checked when they were created
        ttl_items = [(csr, sid, ttl if ttl and ttl > 0 else self.x509_svid_ttl, dns) for csr, sid, ttl, dns in items]
        signed: Optional[list[tuple[int, str, list[bytes], int]]] = await pool.sign(
            slot.key, slot.cert, slot.upstream_chain, ttl_items, self._clock())
        if signed is not None:
            telemetry.current().incr_counter(CA_SIGN_X509_SVID, float(sum(1 for s in signed if s[0] == 0)))
        return signed

    def sign_server_svid(self, public_key: PublicKey) -> list[x509.Certificate]:
        """The server's own SVID: spiffe://<td>/spire/server, default TTL, no DNS names (as SPIRE)."""
        return self.sign_x509_svid(public_key, server_id(self.trust_domain))

    def sign_agent_svid(self, public_key: CertificatePublicKeyTypes, spiffe_id: Union[SpiffeId, str],
                        ttl: Optional[float] = None) -> list[x509.Certificate]:
        return self.sign_x509_svid(public_key, spiffe_id, ttl if ttl and ttl > 0 else self.agent_svid_ttl)

    @telemetry.counts(CA_SIGN_X509_CA_SVID)
    def sign_downstream_x509_ca(self, public_key: CertificatePublicKeyTypes, ttl: Optional[float] = None) -> list[x509.Certificate]:
        """A CA for a downstream SPIRE server: the parent's subject with OU=DOWNSTREAM-<n>,
        URI SAN spiffe://<td>; returns [downstream CA, upstream chain...]."""
        pub = _check_public_key(public_key)
        slot = self.manager.active_x509()
        assert slot.cert is not None and slot.key is not None
        parent_chain = slot.chain
        values = name_values(parent_chain[0].subject)
        values[NameOID.ORGANIZATIONAL_UNIT_NAME] = [f"DOWNSTREAM-{len(parent_chain)}"]
        cert = create_ca_certificate(pub, slot.key, subject=go_name(values),
                                     ttl=ttl if ttl and ttl > 0 else self.ca_ttl, now=self._clock(),
                                     issuer=slot.cert, uris=[self.trust_domain.id_string()])
        return [cert] + list(slot.upstream_chain)

    # --- JWT -------------------------------------------------------------------------------------
    @telemetry.counts(CA_SIGN_JWT_SVID)
    def sign_jwt_svid(self, spiffe_id: Union[SpiffeId, str], audience: Union[str, Sequence[str]],
                      ttl: Optional[float] = None) -> str:
        """A JWT-SVID signed with the active JWT key; expiry capped at the key's expiry."""
        sid = self._member_id(spiffe_id, "JWT-SVID")
        aud = [a for a in ([audience] if isinstance(audience, str) else list(audience or ())) if a]
        if not aud:
            raise CARequestError("invalid JWT-SVID audience: cannot be empty")
        slot = self.manager.active_jwt()
        assert slot.key is not None
        try:
            return sign_jwt_svid(slot.key, slot.kid, sid, aud, ttl if ttl and ttl > 0 else self.jwt_svid_ttl,
                                 self.jwt_issuer, now=self._clock(), expiration_cap=slot.not_after)
        except JWTSVIDError as exc:
            raise CARequestError(str(exc)) from None


__all__ = ["ServerCA", "ca_subject_factory"]
