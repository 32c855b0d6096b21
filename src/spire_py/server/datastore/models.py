"""Plain value objects the DataStore stores and returns (entries and selectors: common/registration.py).

Times are unix seconds; 0 means "not set" (never expires, no new cert...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...common.registration import Selector


@dataclass
class AttestedNode:
    spiffe_id: str
    attestation_type: str = ""
    cert_serial_number: str = ""
    cert_not_after: int = 0
    new_cert_serial_number: str = ""
    new_cert_not_after: int = 0
    can_reattest: bool = False
    selectors: list[Selector] = field(default_factory=list)

    @property
    def banned(self) -> bool:
        # SPIRE bans an agent by clearing its serial numbers.
        return self.cert_serial_number == "" and self.new_cert_serial_number == ""


@dataclass
class JoinToken:
    token: str
    expires_at: int


@dataclass
class JWTKey:
    key_id: str
    public_key: bytes  # DER SubjectPublicKeyInfo
    expires_at: int
    tainted: bool = False


@dataclass
class Bundle:
    trust_domain_id: str  # "spiffe://example.org"
    x509_authorities: list[bytes] = field(default_factory=list)  # DER certificates
    jwt_authorities: list[JWTKey] = field(default_factory=list)
    refresh_hint: int = 0
    sequence_number: int = 0
    # DER of the X.509 authorities tainted through the LocalAuthority API (a subset of x509_authorities).
    tainted_x509_authorities: list[bytes] = field(default_factory=list)
    # Authorities revoked here (X.509 subject key ID in lowercase hex, or JWT key ID) → when they expire:
    # an append that still carries one (an upstream that lists it) does not bring it back; pruned at expiry.
    revoked_authorities: dict[str, int] = field(default_factory=dict)


@dataclass
class FederationRelationship:
    trust_domain: str  # "example.org", no scheme (as SPIRE stores it)
    bundle_endpoint_url: str
    bundle_endpoint_profile: str  # "https_spiffe" or "https_web"
    endpoint_spiffe_id: str = ""  # https_spiffe only
    trust_domain_bundle: Bundle | None = None


# Field names accepted in update masks.
NODE_MASK_FIELDS = frozenset(
    {
        "cert_serial_number",
        "cert_not_after",
        "new_cert_serial_number",
        "new_cert_not_after",
        "can_reattest",
    }
)
BUNDLE_MASK_FIELDS = frozenset(
    {"x509_authorities", "jwt_authorities", "refresh_hint", "sequence_number"}
)
FEDERATION_MASK_FIELDS = frozenset({"bundle_endpoint_url", "bundle_endpoint_profile", "trust_domain_bundle"})
