"""Conversions between the wire types (spire.api.types) and the datastore model.

Input conversions validate as SPIRE does and raise InvalidInput naming the field,
so handlers can answer InvalidArgument with a precise message. Entries go out through
common/registration_proto.py, which the agent shares.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common.errors import SpireError
from ...common.registration import MATCH_BY_NUMBER, MATCH_EXACT, Entry, Selector
from ...common.registration_proto import id_to_proto, selectors_to_proto
from ...common.spiffeid import SpiffeId, SpiffeIdError, TrustDomain
from ...proto.spire.api.types import agent_pb2, bundle_pb2, entry_pb2, selector_pb2, spiffeid_pb2, x509svid_pb2
from ..datastore.models import AttestedNode, Bundle, JWTKey


class InvalidInput(SpireError, ValueError):
    """Bad request data; the message names the field."""


# --- SPIFFE IDs -------------------------------------------------------------------
def id_from_proto(pb: spiffeid_pb2.SPIFFEID, field: str, td: Optional[TrustDomain] = None) -> SpiffeId:
    if pb is None or (not pb.trust_domain and not pb.path):
        raise InvalidInput(f"invalid {field}: request must specify SPIFFE ID")
    try:
        sid = SpiffeId.from_parts(pb.trust_domain, pb.path)
    except SpiffeIdError as exc:
        raise InvalidInput(f"invalid {field}: {exc}") from None
    if td is not None and sid.trust_domain != td:
        raise InvalidInput(f'invalid {field}: "{sid}" is not a member of trust domain "{td}"')
    return sid


def parse_id(value: str, field: str) -> SpiffeId:
    try:
        return SpiffeId.parse(value)
    except SpiffeIdError as exc:
        raise InvalidInput(f"invalid {field}: {exc}") from None


# --- selectors ----------------------------------------------------------------------
def selectors_from_proto(items: Iterable[selector_pb2.Selector], field: str = "selectors") -> list[Selector]:
    out = []
    for s in items:
        if not s.type:
            raise InvalidInput(f"invalid {field}: missing selector type")
        if ":" in s.type:
            raise InvalidInput(f'invalid {field}: selector type contains ":"')
        if not s.value:
            raise InvalidInput(f"invalid {field}: missing selector value")
        out.append(Selector(s.type, s.value))
    return out


def selector_match_from_proto(
    pb: selector_pb2.SelectorMatch, field: str = "selectors filter"
) -> tuple[list[Selector], str]:
    """A list filter's selectors and match mode (an unknown mode number matches exactly)."""
    return selectors_from_proto(pb.selectors, field), MATCH_BY_NUMBER.get(pb.match, MATCH_EXACT)


def federates_with_match_from_proto(pb: Any) -> tuple[list[str], str]:
    """A list filter's trust domains (as IDs, the way entries store them) and match mode."""
    tds = []
    for raw in pb.trust_domains:
        try:
            tds.append(TrustDomain.parse(raw).id_string())
        except SpiffeIdError as exc:
            raise InvalidInput(f"malformed federates with filter: {exc}") from None
    if not tds:
        raise InvalidInput("malformed federates with filter: empty trust domain set")
    return tds, MATCH_BY_NUMBER.get(pb.match, MATCH_EXACT)


# --- entries -------------------------------------------------------------------------
def entry_from_proto(pb: entry_pb2.Entry, td: TrustDomain) -> Entry:
    """Validate an entry as SPIRE's entry API does; errors name the field."""
    parent = id_from_proto(pb.parent_id, "parent ID", td)
    spiffe = id_from_proto(pb.spiffe_id, "spiffe ID", td)
    if not spiffe.path:
        raise InvalidInput("invalid spiffe ID: path is empty")
    if spiffe.path.startswith("/spire/") and not spiffe.path.startswith("/spire/agent/"):
        raise InvalidInput(f'invalid spiffe ID: "{spiffe}" is a reserved ID')
    if not pb.selectors:
        raise InvalidInput("invalid selectors: selector list is empty")
    selectors = selectors_from_proto(pb.selectors)
    if pb.x509_svid_ttl < 0:
        raise InvalidInput("invalid x509_svid_ttl: value cannot be negative")
    if pb.jwt_svid_ttl < 0:
        raise InvalidInput("invalid jwt_svid_ttl: value cannot be negative")
    for name in pb.dns_names:
        _check_dns(name)
    federates = []
    for f in pb.federates_with:
        try:
            federates.append(TrustDomain.parse(f).id_string())
        except SpiffeIdError as exc:
            raise InvalidInput(f"invalid federates_with: {exc}") from None
    return Entry(
        id=pb.id,
        spiffe_id=str(spiffe),
        parent_id=str(parent),
        selectors=selectors,
        x509_svid_ttl=pb.x509_svid_ttl,
        jwt_svid_ttl=pb.jwt_svid_ttl,
        dns_names=list(pb.dns_names),
        admin=pb.admin,
        downstream=pb.downstream,
        federates_with=federates,
        expires_at=pb.expires_at,
        hint=pb.hint,
        store_svid=pb.store_svid,
    )


def _check_dns(name: str) -> None:
    label_ok = all(
        0 < len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) and not label.startswith("-")
        for label in name.removeprefix("*.").split(".")
    )
    if not name or len(name) > 253 or not label_ok:
        raise InvalidInput(f'invalid DNS name "{name}"')


# --- agents --------------------------------------------------------------------------
def agent_to_proto(n: AttestedNode, mask: Optional[agent_pb2.AgentMask] = None) -> agent_pb2.Agent:
    def want(name: str) -> bool:
        return mask is None or getattr(mask, name)

    pb = agent_pb2.Agent(id=id_to_proto(n.spiffe_id))
    if want("attestation_type"):
        pb.attestation_type = n.attestation_type
    if want("x509svid_serial_number"):
        pb.x509svid_serial_number = n.cert_serial_number
    if want("x509svid_expires_at"):
        pb.x509svid_expires_at = n.cert_not_after
    if want("selectors"):
        pb.selectors.extend(selectors_to_proto(n.selectors or []))
    if want("banned"):
        pb.banned = n.banned
    if want("can_reattest"):
        pb.can_reattest = n.can_reattest
    return pb


# --- bundles -------------------------------------------------------------------------
def bundle_to_proto(b: Bundle, mask: Optional[bundle_pb2.BundleMask] = None) -> bundle_pb2.Bundle:
    def want(name: str) -> bool:
        return mask is None or getattr(mask, name)

    pb = bundle_pb2.Bundle(trust_domain=TrustDomain.parse(b.trust_domain_id).name)
    if want("x509_authorities"):
        tainted = set(b.tainted_x509_authorities)
        pb.x509_authorities.extend(bundle_pb2.X509Certificate(asn1=der, tainted=der in tainted)
                                   for der in b.x509_authorities)
    if want("jwt_authorities"):
        pb.jwt_authorities.extend(
            bundle_pb2.JWTKey(public_key=k.public_key, key_id=k.key_id, expires_at=k.expires_at, tainted=k.tainted)
            for k in b.jwt_authorities
        )
    if want("refresh_hint"):
        pb.refresh_hint = b.refresh_hint
    if want("sequence_number"):
        pb.sequence_number = b.sequence_number
    return pb


def bundle_from_proto(pb: bundle_pb2.Bundle) -> Bundle:
    try:
        td = TrustDomain.parse(pb.trust_domain)
    except SpiffeIdError as exc:
        raise InvalidInput(f"invalid trust domain: {exc}") from None
    x509s = []
    for c in pb.x509_authorities:
        try:
            x509.load_der_x509_certificate(c.asn1)
        except ValueError as exc:
            raise InvalidInput(f"invalid X.509 authority: {exc}") from None
        x509s.append(bytes(c.asn1))
    jwts = []
    for k in pb.jwt_authorities:
        if not k.key_id:
            raise InvalidInput("invalid JWT authority: missing key ID")
        try:
            serialization.load_der_public_key(k.public_key)
        except ValueError as exc:
            raise InvalidInput(f"invalid JWT authority: {exc}") from None
        jwts.append(JWTKey(key_id=k.key_id, public_key=bytes(k.public_key), expires_at=k.expires_at))
    return Bundle(
        trust_domain_id=td.id_string(),
        x509_authorities=x509s,
        jwt_authorities=jwts,
        refresh_hint=pb.refresh_hint,
        sequence_number=pb.sequence_number,
    )


# --- X.509-SVIDs ---------------------------------------------------------------------
def parse_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A signed CSR, or GRPCError INVALID_ARGUMENT (batch handlers turn it into the item's status)."""
    if not der:
        raise GRPCError(Status.INVALID_ARGUMENT, "malformed param: missing CSR")
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, f"malformed CSR: {exc}") from None
    if not csr.is_signature_valid:
        raise GRPCError(Status.INVALID_ARGUMENT, "malformed CSR: invalid signature")
    return csr


def svid_to_proto(sid: str, chain: list[x509.Certificate]) -> x509svid_pb2.X509SVID:
    return x509svid_pb2.X509SVID(
        id=id_to_proto(sid),
        cert_chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
        expires_at=int(chain[0].not_valid_after_utc.timestamp()),
    )
