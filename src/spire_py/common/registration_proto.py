"""Registration entries on the wire (spire.api.types) and back.

Decoding here trusts its input: the agent decodes what its server sent, the server decodes
what it encoded itself. Requests from callers are validated by the server's api/convert.py.
"""

from __future__ import annotations

from typing import Iterable, Optional

from ..proto.spire.api.types import entry_pb2, selector_pb2, spiffeid_pb2
from .registration import Entry, Selector
from .spiffeid import SpiffeId, unchecked_id_string


def id_to_proto(sid: SpiffeId | str) -> spiffeid_pb2.SPIFFEID:
    if isinstance(sid, str):
        sid = SpiffeId.parse(sid)
    return spiffeid_pb2.SPIFFEID(trust_domain=sid.trust_domain.name, path=sid.path)


def id_string(pb: spiffeid_pb2.SPIFFEID) -> str:
    """The ID as sent, unchecked."""
    return unchecked_id_string(pb.trust_domain, pb.path)


def selectors_to_proto(items: Iterable[Selector]) -> list[selector_pb2.Selector]:
    return [selector_pb2.Selector(type=s.type, value=s.value) for s in items]


def entry_to_proto(e: Entry, mask: Optional[entry_pb2.EntryMask] = None) -> entry_pb2.Entry:
    def want(name: str) -> bool:
        return mask is None or getattr(mask, name)

    pb = entry_pb2.Entry(id=e.id)
    if want("spiffe_id"):
        pb.spiffe_id.CopyFrom(id_to_proto(e.spiffe_id))
    if want("parent_id"):
        pb.parent_id.CopyFrom(id_to_proto(e.parent_id))
    if want("selectors"):
        pb.selectors.extend(selectors_to_proto(e.selectors))
    if want("x509_svid_ttl"):
        pb.x509_svid_ttl = e.x509_svid_ttl
    if want("jwt_svid_ttl"):
        pb.jwt_svid_ttl = e.jwt_svid_ttl
    if want("federates_with"):
        # Stored as trust domain IDs; SPIRE's API (and so its CLI) speaks trust domain names.
        pb.federates_with.extend(f.removeprefix("spiffe://") for f in e.federates_with)
    if want("admin"):
        pb.admin = e.admin
    if want("downstream"):
        pb.downstream = e.downstream
    if want("expires_at"):
        pb.expires_at = e.expires_at
    if want("dns_names"):
        pb.dns_names.extend(e.dns_names)
    if want("revision_number"):
        pb.revision_number = e.revision_number
    if want("store_svid"):
        pb.store_svid = e.store_svid
    if want("hint"):
        pb.hint = e.hint
    if want("created_at"):
        pb.created_at = e.created_at
    return pb


def entry_from_proto(pb: entry_pb2.Entry) -> Entry:
    """Every field as sent, unchecked; ``federates_with`` too, whether names or IDs."""
    return Entry(
        id=pb.id,
        spiffe_id=id_string(pb.spiffe_id),
        parent_id=id_string(pb.parent_id),
        selectors=[Selector(s.type, s.value) for s in pb.selectors],
        x509_svid_ttl=pb.x509_svid_ttl,
        jwt_svid_ttl=pb.jwt_svid_ttl,
        dns_names=list(pb.dns_names),
        admin=pb.admin,
        downstream=pb.downstream,
        federates_with=list(pb.federates_with),
        expires_at=pb.expires_at,
        hint=pb.hint,
        store_svid=pb.store_svid,
        created_at=pb.created_at,
        revision_number=pb.revision_number,
    )
