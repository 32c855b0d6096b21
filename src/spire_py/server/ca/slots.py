"""The two slots (A and B) of the X.509 CA and of the JWT signing key, and SPIRE's thresholds.

A slot holds one authority through its life: PREPARED (published in the bundle,
not yet signing), ACTIVE (signing), OLD (retired; its KeyManager key is reused
by the next preparation). The next authority is prepared when the current one
has lived half its lifetime (at most 30 days before expiry) and activated at
5/6 of it (at most 7 days before expiry), as SPIRE's ca/manager does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from cryptography import x509

from ...common.keys import PrivateKey, PublicKey
from ...common.x509util import authority_id

PREPARATION_DIVISOR = 2
PREPARATION_CAP = 30 * 24 * 3600
ACTIVATION_DIVISOR = 6
ACTIVATION_CAP = 7 * 24 * 3600

PREPARED = "PREPARED"
ACTIVE = "ACTIVE"
OLD = "OLD"
STATUSES = (PREPARED, ACTIVE, OLD)

SLOT_IDS = ("A", "B")


def preparation_threshold(issued_at: float, not_after: float) -> float:
    lifetime = not_after - issued_at
    return not_after - min(lifetime / PREPARATION_DIVISOR, PREPARATION_CAP)


def activation_threshold(issued_at: float, not_after: float) -> float:
    lifetime = not_after - issued_at
    return not_after - min(lifetime / ACTIVATION_DIVISOR, ACTIVATION_CAP)


def max_svid_ttl_for_ca_ttl(ca_ttl: float) -> float:
    """The longest SVID TTL a scheduled rotation never cuts short (SPIRE's MaxSVIDTTLForCATTL)."""
    return min(ca_ttl / ACTIVATION_DIVISOR, ACTIVATION_CAP)


def other_slot(slot_id: str) -> str:
    return "B" if slot_id == "A" else "A"


@dataclass
class X509CASlot:
    id: str
    key: Optional[PrivateKey] = None
    cert: Optional[x509.Certificate] = None
    # As the upstream returned it: [this CA, upstream intermediates...]; empty when self-signed.
    upstream_chain: list[x509.Certificate] = field(default_factory=list)
    upstream_roots: list[x509.Certificate] = field(default_factory=list)
    issued_at: float = 0.0
    status: str = OLD

    @property
    def km_key_id(self) -> str:
        return f"x509-CA-{self.id}"

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp() if self.cert is not None else 0.0

    @property
    def chain(self) -> list[x509.Certificate]:
        """The CA chain SVIDs are issued under: the upstream chain, or just the self-signed CA."""
        if self.upstream_chain:
            return list(self.upstream_chain)
        return [self.cert] if self.cert is not None else []

    @property
    def authority_id(self) -> str:
        return authority_id(self.cert) if self.cert is not None else ""

    @property
    def roots(self) -> list[x509.Certificate]:
        """What this CA adds to the trust bundle: itself when self-signed, else the upstream roots."""
        if self.upstream_chain:
            return list(self.upstream_roots)
        return [self.cert] if self.cert is not None else []

    @property
    def upstream_authority_id(self) -> str:
        """The subject key ID of the upstream CA that signed this one ("" when self-signed), as SPIRE."""
        if not self.upstream_chain or self.cert is None:
            return ""
        try:
            aki = self.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except x509.ExtensionNotFound:
            return ""
        return aki.hex() if aki else ""

    def is_empty(self) -> bool:
        return self.cert is None or self.status == OLD

    def reset(self) -> None:
        self.key = None
        self.cert = None
        self.upstream_chain = []
        self.upstream_roots = []
        self.status = OLD

    def retire(self) -> None:
        """OLD after a rotation: it no longer signs, but it is still known by its authority ID
        (the LocalAuthority API taints and revokes it) until the next preparation reuses the slot."""
        self.key = None
        self.status = OLD

    def should_prepare_next(self, now: float) -> bool:
        return self.cert is not None and now > preparation_threshold(self.issued_at, self.not_after)

    def should_activate_next(self, now: float) -> bool:
        return self.cert is not None and now > activation_threshold(self.issued_at, self.not_after)


@dataclass
class JWTKeySlot:
    id: str
    key: Optional[PrivateKey] = None
    kid: str = ""
    not_after: float = 0.0
    issued_at: float = 0.0
    status: str = OLD

    @property
    def km_key_id(self) -> str:
        return f"JWT-Signer-{self.id}"

    @property
    def public_key(self) -> Optional[PublicKey]:
        return self.key.public_key() if self.key is not None else None

    def is_empty(self) -> bool:
        return self.key is None or self.status == OLD

    def reset(self) -> None:
        self.key = None
        self.kid = ""
        self.not_after = 0.0
        self.status = OLD

    def retire(self) -> None:
        """OLD after a rotation; the key ID stays known until the slot is prepared again (the key is
        kept for the journal's public key; an OLD slot never signs)."""
        self.status = OLD

    def should_prepare_next(self, now: float) -> bool:
        return self.key is None or now > preparation_threshold(self.issued_at, self.not_after)

    def should_activate_next(self, now: float) -> bool:
        return self.key is None or now > activation_threshold(self.issued_at, self.not_after)
