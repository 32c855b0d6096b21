"""Registration entries and selectors: what the server stores and hands out, and what the agent caches.

Both sides share these types, so they live here rather than in the server's datastore.
Times are unix seconds; 0 means "not set" (never expires...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# How a requested set of selectors (or federated trust domains) matches a stored one.
MATCH_EXACT = "exact"
MATCH_SUBSET = "subset"
MATCH_SUPERSET = "superset"
MATCH_ANY = "any"
MATCH_BEHAVIOURS = (MATCH_EXACT, MATCH_SUBSET, MATCH_SUPERSET, MATCH_ANY)

# The numbers of spire.api.types' SelectorMatch and FederatesWithMatch enums (the same in both).
MATCH_BY_NUMBER = {0: MATCH_EXACT, 1: MATCH_SUBSET, 2: MATCH_SUPERSET, 3: MATCH_ANY}
MATCH_NUMBERS = {name: number for number, name in MATCH_BY_NUMBER.items()}


# Slotted: a server holds a million entries (and their selectors) in its entry cache.
@dataclass(frozen=True, order=True, slots=True)
class Selector:
    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(slots=True)
class Entry:
    """A registration entry. ``id`` is assigned by the store when empty."""

    id: str = ""
    spiffe_id: str = ""
    parent_id: str = ""
    selectors: list[Selector] = field(default_factory=list)
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    dns_names: list[str] = field(default_factory=list)
    admin: bool = False
    downstream: bool = False
    federates_with: list[str] = field(default_factory=list)
    expires_at: int = 0
    hint: str = ""
    store_svid: bool = False
    created_at: int = 0
    revision_number: int = 0


# Entry fields accepted in update masks.
ENTRY_MASK_FIELDS = frozenset(
    {
        "spiffe_id",
        "parent_id",
        "selectors",
        "x509_svid_ttl",
        "jwt_svid_ttl",
        "dns_names",
        "admin",
        "downstream",
        "federates_with",
        "expires_at",
        "hint",
        "store_svid",
    }
)
