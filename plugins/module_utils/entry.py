# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Registration entries as desired state: identity (spiffe_id, parent_id, selectors) and attributes.

An entry's identity is its SPIFFE ID, parent ID and set of selectors; everything else
(TTLs, expiry, DNS names, admin, downstream, store_svid, federates_with, hint) is updated in place.
In exclusive mode the SPIFFE ID and parent ID alone name the entry: other selectors are replaced.
"""

# Attribute name -> CLI flag; attributes left unset (None) in the request are not managed.
ATTRIBUTES = (
    ("x509_svid_ttl", "x509SVIDTTL"),
    ("jwt_svid_ttl", "jwtSVIDTTL"),
    ("dns_names", "dns"),
    ("admin", "admin"),
    ("downstream", "downstream"),
    ("federates_with", "federatesWith"),
    ("hint", "hint"),
    ("entry_expiry", "entryExpiry"),
    ("store_svid", "storeSVID"),
)
# Compared as sets; dns_names keep their order (the first is the SVID's CN).
UNORDERED = ("federates_with",)


class EntryError(ValueError):
    pass


def spiffe_id_text(value):
    """A SPIFFE ID from the CLI's JSON ({"trust_domain", "path"}) or a string."""
    if isinstance(value, dict):
        return "spiffe://%s%s" % (value.get("trust_domain", ""), value.get("path", ""))
    return str(value or "")


def selector_text(value):
    if isinstance(value, dict):
        return "%s:%s" % (value.get("type", ""), value.get("value", ""))
    return str(value)


def check_selector(text):
    kind, sep, value = text.partition(":")
    if not sep or not kind or not value:
        raise EntryError('selector "%s" must be "type:value", e.g. "unix:uid:1000"' % text)
    return text


def _int(value):
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def trust_domain_ids(values):
    """Federated trust domains as sorted IDs: the server shows names (as SPIRE), users may write either."""
    return sorted(v if v.startswith("spiffe://") else "spiffe://" + v for v in values)


def view(entry):
    """The comparable form of an entry from `entry show -output json`."""
    return {
        "id": entry.get("id", ""),
        "spiffe_id": spiffe_id_text(entry.get("spiffe_id")),
        "parent_id": spiffe_id_text(entry.get("parent_id")),
        "selectors": sorted(selector_text(s) for s in entry.get("selectors") or []),
        "x509_svid_ttl": _int(entry.get("x509_svid_ttl")),
        "jwt_svid_ttl": _int(entry.get("jwt_svid_ttl")),
        "dns_names": list(entry.get("dns_names") or []),
        "admin": bool(entry.get("admin")),
        "downstream": bool(entry.get("downstream")),
        "federates_with": trust_domain_ids(entry.get("federates_with") or []),
        "hint": entry.get("hint") or "",
        # protojson prints int64 as a string
        "entry_expiry": _int(entry.get("expires_at")),
        "store_svid": bool(entry.get("store_svid")),
    }


def desired(params):
    """Normalize module parameters; attributes not given stay None (unmanaged)."""
    if not params.get("spiffe_id", "").startswith("spiffe://"):
        raise EntryError('spiffe_id must be a SPIFFE ID ("spiffe://<trust domain>/<path>")')
    if not params.get("parent_id", "").startswith("spiffe://"):
        raise EntryError('parent_id must be a SPIFFE ID ("spiffe://<trust domain>/<path>")')
    selectors = [check_selector(s) for s in params.get("selectors") or []]
    if not selectors:
        raise EntryError("selectors must not be empty")
    want = {
        "spiffe_id": params["spiffe_id"],
        "parent_id": params["parent_id"],
        "selectors": sorted(set(selectors)),
    }
    for name, _flag in ATTRIBUTES:
        value = params.get(name)
        if value is not None and name in UNORDERED:
            value = trust_domain_ids(value)
        want[name] = value
    return want


def same_identity(current, want):
    return (current["spiffe_id"] == want["spiffe_id"] and current["parent_id"] == want["parent_id"]
            and current["selectors"] == want["selectors"])


def find(entries, want):
    """Entries (as views) with want's identity; more than one is possible only if created outside."""
    return [v for v in (view(e) for e in entries) if same_identity(v, want)]


def same_name(current, want):
    return current["spiffe_id"] == want["spiffe_id"] and current["parent_id"] == want["parent_id"]


def superseded(entries, want):
    """Entries (as views) with want's SPIFFE ID and parent ID but other selectors (exclusive mode)."""
    return [v for v in (view(e) for e in entries) if same_name(v, want) and not same_identity(v, want)]


# Node entries the roles register (node aliases under the server's ID, join-token aliases):
# purge leaves them alone, the agent role and decommission.yml own them.
def is_node_entry(entry_view):
    parent = entry_view["parent_id"]
    return parent.endswith("/spire/server") or "/spire/agent/join_token/" in parent


def key(entry_view):
    return (entry_view["spiffe_id"], entry_view["parent_id"], tuple(entry_view["selectors"]))


def purgeable(entries, wanted):
    """Entries (as views) on the server that none of the wanted ones names (purge mode).

    With exclusive, an entry is kept when a wanted one has its SPIFFE ID and parent ID: it is
    updated in place rather than deleted and made again.
    """
    keep = set(key(w) for w in wanted)
    names = set((w["spiffe_id"], w["parent_id"]) for w in wanted if w.get("_exclusive"))
    out = []
    for v in (view(e) for e in entries):
        if is_node_entry(v) or key(v) in keep or (v["spiffe_id"], v["parent_id"]) in names:
            continue
        out.append(v)
    return out


def changes(current, want):
    """Managed attributes whose value differs: {name: (current, wanted)}."""
    out = {}
    for name, _flag in ATTRIBUTES:
        if want.get(name) is not None and want[name] != current[name]:
            out[name] = (current[name], want[name])
    return out


def merged(current, want):
    """The full entry an update sends: wanted attributes over the current ones."""
    full = dict(current or {})
    for key, value in want.items():
        if value is not None:
            full[key] = value
    return full


def cli_flags(full):
    """Flags for `entry create` / `entry update` describing the whole entry."""
    flags = [("spiffeID", full["spiffe_id"]), ("parentID", full["parent_id"])]
    flags.extend(("selector", s) for s in full["selectors"])
    if full.get("x509_svid_ttl"):
        flags.append(("x509SVIDTTL", full["x509_svid_ttl"]))
    if full.get("jwt_svid_ttl"):
        flags.append(("jwtSVIDTTL", full["jwt_svid_ttl"]))
    flags.extend(("dns", d) for d in full.get("dns_names") or [])
    flags.extend(("federatesWith", f) for f in full.get("federates_with") or [])
    if full.get("admin"):
        flags.append(("admin", True))
    if full.get("downstream"):
        flags.append(("downstream", True))
    if full.get("hint"):
        flags.append(("hint", full["hint"]))
    if full.get("entry_expiry"):
        flags.append(("entryExpiry", full["entry_expiry"]))
    if full.get("store_svid"):
        flags.append(("storeSVID", True))
    return flags


def describe(entry_view):
    """Text for Ansible's diff."""
    if entry_view is None:
        return "absent\n"
    keys = ["spiffe_id", "parent_id", "selectors"] + [name for name, _flag in ATTRIBUTES]
    return "".join("%s: %s\n" % (k, entry_view.get(k)) for k in keys)
