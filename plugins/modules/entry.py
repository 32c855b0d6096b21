#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
module: entry
short_description: Manage registration entries on a spire_py (or SPIRE) server
version_added: "0.1.0"
description:
  - Creates, updates and deletes registration entries with the server's own CLI
    (C(spire-server entry show|create|update|delete -output json)) on the server host.
  - An entry is identified by O(spiffe_id), O(parent_id) and the set of O(selectors).
    Other attributes are updated in place, and only those given are managed (an
    attribute left out keeps its current value).
  - With O(exclusive=true) the SPIFFE ID and parent ID alone name the entry, so changing its
    selectors updates that entry in place (keeping its ID) instead of adding a second grant, and
    further entries with that SPIFFE ID and parent ID are deleted.
  - With O(entries) the module manages a whole list in one call; O(purge=true) then deletes every
    entry on the server that the list does not name, except node entries (parent ID
    C(spiffe://<trust domain>/spire/server) or a join-token agent), which the roles own.
  - Reports a diff of the entry; check mode changes nothing. In check mode before the server
    is installed (O(server_bin) missing) the entry is reported as to be created, with a warning.
author:
  - spire_py maintainers (@spire-py)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  spiffe_id:
    description:
      - The SPIFFE ID the entry gives to matching workloads (or nodes).
      - Required unless O(entries) is given (mutually exclusive with it).
    type: str
  parent_id:
    description:
      - The agent (or node alias) the workloads run under. For a node alias entry use
        the server's ID, C(spiffe://<trust domain>/spire/server).
      - Required with O(spiffe_id).
    type: str
  selectors:
    description:
      - Selectors as C(type:value), for example C(unix:uid:1000) or C(x509pop:subject:cn:web1).
      - Required with O(spiffe_id).
    type: list
    elements: str
  entries:
    description:
      - A list of entries to manage in one call, each a dict of this module's entry options
        (O(spiffe_id), O(parent_id), O(selectors), O(state), O(exclusive) and the attributes).
      - O(exclusive) given at the top applies to every item that does not set its own.
    type: list
    elements: dict
  purge:
    description:
      - With O(entries), delete every entry on the server that the list does not name (node
        entries excepted, see the description). Ignored without O(entries).
    type: bool
    default: false
  exclusive:
    description:
      - Name the entry by O(spiffe_id) and O(parent_id) only, so that the selectors given replace
        the current ones (SPIRE's entry update) and other entries with the same pair are deleted.
      - With O(state=absent), every entry with that SPIFFE ID and parent ID is deleted.
    type: bool
    default: false
  state:
    description: Whether the entry exists.
    type: str
    choices: [present, absent]
    default: present
  x509_svid_ttl:
    description: X509-SVID lifetime in seconds (0 means the server default).
    type: int
  jwt_svid_ttl:
    description: JWT-SVID lifetime in seconds (0 means the server default).
    type: int
  dns_names:
    description: DNS names in the SVIDs (the first is the certificate's CN).
    type: list
    elements: str
  admin:
    description: Grant the ID access to the server's admin APIs.
    type: bool
  downstream:
    description: The entry describes a downstream SPIRE server.
    type: bool
  federates_with:
    description: Trust domains (SPIFFE IDs such as C(spiffe://other.org)) whose bundles the workloads get.
    type: list
    elements: str
  hint:
    description: A hint for workloads to tell entries with the same SPIFFE ID apart.
    type: str
  entry_expiry:
    description: When the entry expires and the server prunes it, in seconds since the epoch (0 never).
    type: int
  store_svid:
    description: The SVIDs of this entry are stored through an SVIDStore plugin.
    type: bool
  server_bin:
    description: The C(spire-server) executable on the server host.
    type: path
    default: /opt/spire/bin/spire-server
  socket_path:
    description: The server's admin API socket.
    type: path
    default: /run/spire-server/private/api.sock
"""

EXAMPLES = r"""
- name: Register the web service under its agent
  spire_py.spire.entry:
    spiffe_id: spiffe://example.org/web
    parent_id: spiffe://example.org/host/web1
    selectors:
      - unix:uid:1000
      - unix:gid:1000
    x509_svid_ttl: 3600
    dns_names: [web.example.org]
    socket_path: /run/spire-server/private/api.sock
  delegate_to: "{{ groups['spire_servers'][0] }}"

- name: Remove it
  spire_py.spire.entry:
    spiffe_id: spiffe://example.org/web
    parent_id: spiffe://example.org/host/web1
    selectors: [unix:uid:1000, unix:gid:1000]
    state: absent

- name: The inventory's entries are the server's (others deleted; changed selectors replace the old grant)
  spire_py.spire.entry:
    entries:
      - spiffe_id: spiffe://example.org/web
        parent_id: spiffe://example.org/host/web1
        selectors: [unix:uid:1001]
        store_svid: false
        entry_expiry: 1893456000
    exclusive: true
    purge: true
"""

RETURN = r"""
entry:
  description: The entry after the task (before, when it was deleted; the request, in check mode before creation).
  returned: always
  type: dict
  contains:
    id:
      description: Entry ID (empty when not created yet).
      type: str
    spiffe_id:
      description: SPIFFE ID.
      type: str
    parent_id:
      description: Parent ID.
      type: str
    selectors:
      description: Selectors, sorted, as C(type:value).
      type: list
      elements: str
    x509_svid_ttl:
      description: X509-SVID TTL in seconds.
      type: int
    jwt_svid_ttl:
      description: JWT-SVID TTL in seconds.
      type: int
    dns_names:
      description: DNS names.
      type: list
      elements: str
    admin:
      description: Admin flag.
      type: bool
    downstream:
      description: Downstream flag.
      type: bool
    federates_with:
      description: Federated trust domains.
      type: list
      elements: str
    hint:
      description: Hint.
      type: str
    entry_expiry:
      description: Expiry in seconds since the epoch (0 never).
      type: int
    store_svid:
      description: Stored through an SVIDStore plugin.
      type: bool
updated:
  description: Attributes that were (or would be) changed, with their old and new values.
  returned: always
  type: dict
deleted:
  description: Entries deleted (or to be deleted, in check mode) by O(state=absent), O(exclusive) or O(purge).
  returned: always
  type: list
  elements: dict
results:
  description: With O(entries), one result per item (C(entry), C(updated), C(changed)).
  returned: when O(entries) is given
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.spire_py.spire.plugins.module_utils import entry as entries
from ansible_collections.spire_py.spire.plugins.module_utils.spire_cli import (
    DEFAULT_BIN,
    DEFAULT_SOCKET,
    ServerCLI,
    SpireCLIError,
)

ENTRY_OPTIONS = dict(
    spiffe_id=dict(type="str"),
    parent_id=dict(type="str"),
    selectors=dict(type="list", elements="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    exclusive=dict(type="bool", default=False),
    x509_svid_ttl=dict(type="int"),
    jwt_svid_ttl=dict(type="int"),
    dns_names=dict(type="list", elements="str"),
    admin=dict(type="bool"),
    downstream=dict(type="bool"),
    federates_with=dict(type="list", elements="str"),
    hint=dict(type="str"),
    entry_expiry=dict(type="int"),
    store_svid=dict(type="bool"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ENTRY_OPTIONS,
            entries=dict(type="list", elements="dict"),
            purge=dict(type="bool", default=False),
            server_bin=dict(type="path", default=DEFAULT_BIN),
            socket_path=dict(type="path", default=DEFAULT_SOCKET),
        ),
        required_one_of=[("spiffe_id", "entries")],
        mutually_exclusive=[("spiffe_id", "entries")],
        required_by={"spiffe_id": ("parent_id", "selectors")},
        supports_check_mode=True,
    )
    p = module.params
    items = p["entries"] if p["entries"] is not None else [p]
    wants = []
    for index, item in enumerate(items):
        unknown = sorted(set(item) - set(ENTRY_OPTIONS)) if p["entries"] is not None else []
        if unknown:
            module.fail_json(msg="entries[%d]: unknown options %s" % (index, ", ".join(unknown)))
        params = dict((name, item.get(name)) for name in ENTRY_OPTIONS)
        params["state"] = params["state"] or "present"
        if params["state"] not in ("present", "absent"):
            module.fail_json(msg="entries[%d]: state must be present or absent" % index)
        params["exclusive"] = p["exclusive"] if params["exclusive"] is None else bool(params["exclusive"])
        try:
            want = entries.desired(params)
        except entries.EntryError as exc:
            module.fail_json(msg=str(exc) if p["entries"] is None else "entries[%d]: %s" % (index, exc))
        want["_state"], want["_exclusive"] = params["state"], params["exclusive"]
        wants.append(want)

    if module.check_mode and not os.path.exists(p["server_bin"]):
        # A first check-mode run: the server is not installed yet, so every entry is new.
        module.warn("%s does not exist yet: reporting the entries as to be created" % p["server_bin"])
        results = []
        for want in wants:
            absent = want["_state"] == "absent"
            planned = dict(entries.merged(entries.view({}), public(want)), id="")
            results.append(dict(changed=not absent, entry={} if absent else planned, updated={}))
        finish(module, p, results, [], [])

    cli = ServerCLI(module.run_command, p["server_bin"], p["socket_path"])
    results, deleted, diffs = [], [], []
    try:
        # One listing for a list of entries; a filtered one for a single entry.
        listing = cli.show_entries() if p["entries"] is not None else None
        for want in wants:
            found = listing if listing is not None else cli.show_entries(want["spiffe_id"], want["parent_id"])
            matches = entries.find(found, want)
            others = entries.superseded(found, want) if want["_exclusive"] else []
            result = apply(cli, module.check_mode, want["_state"], public(want), matches, others)
            deleted.extend(result.pop("_deleted"))
            diffs.append((want["spiffe_id"], result.pop("_before"), result.pop("_after")))
            results.append(result)
        if p["entries"] is not None and p["purge"]:
            gone = set(d["id"] for d in deleted)
            for stale in entries.purgeable(cli.show_entries() if not module.check_mode else listing,
                                           [w for w in wants if w["_state"] == "present"]):
                if stale["id"] in gone:
                    continue
                if not module.check_mode:
                    cli.delete_entry(stale["id"])
                deleted.append(stale)
                diffs.append((stale["spiffe_id"], stale, None))
    except SpireCLIError as exc:
        module.fail_json(msg=str(exc), rc=exc.rc)
    finish(module, p, results, deleted, diffs)


def public(want):
    return dict((k, v) for k, v in want.items() if not k.startswith("_"))


def finish(module, p, results, deleted, diffs):
    changed = bool(deleted) or any(r["changed"] for r in results)
    out = dict(changed=changed, deleted=deleted)
    if p["entries"] is None:
        out.update(entry=results[0]["entry"], updated=results[0]["updated"])
    else:
        out["results"] = results
    if module._diff and diffs:
        changed_diffs = [d for d in diffs if entries.describe(d[1]) != entries.describe(d[2])] or diffs[:1]
        out["diff"] = [dict(before=entries.describe(before), after=entries.describe(after),
                            before_header=name, after_header=name) for name, before, after in changed_diffs]
        if p["entries"] is None:
            out["diff"] = out["diff"][0]
    module.exit_json(**out)


def apply(cli, check_mode, state, want, matches, others):
    """Bring one entry to its state; others are the entries exclusive mode replaces."""
    current = matches[0] if matches else None
    if state == "absent":
        doomed = matches + others
        if not check_mode:
            for match in doomed:
                cli.delete_entry(match["id"])
        before = current or (others[0] if others else None)
        return dict(changed=bool(doomed), entry=before or {}, updated={}, _deleted=doomed,
                    _before=before, _after=None)
    replaced = None
    if current is None and others:
        # Exclusive: the first entry with this SPIFFE ID and parent takes the new selectors.
        replaced, others = others[0], others[1:]
    if not check_mode:
        for other in others:
            cli.delete_entry(other["id"])
    base = current or replaced
    if base is None:
        planned = entries.merged(entries.view({}), want)
        planned["id"] = ""
        if check_mode:
            return dict(changed=True, entry=planned, updated={}, _deleted=others, _before=None, _after=planned)
        created = entries.view(cli.create_entry(entries.cli_flags(planned)))
        return dict(changed=True, entry=created, updated={}, _deleted=others, _before=None, _after=created)
    delta = entries.changes(base, want)
    if replaced is not None:
        delta["selectors"] = (replaced["selectors"], want["selectors"])
    if not delta:
        return dict(changed=bool(others), entry=base, updated={}, _deleted=others, _before=base, _after=base)
    planned = entries.merged(base, want)
    updated = dict((k, {"before": v[0], "after": v[1]}) for k, v in delta.items())
    if check_mode:
        return dict(changed=True, entry=planned, updated=updated, _deleted=others, _before=base, _after=planned)
    after = entries.view(cli.update_entry(base["id"], entries.cli_flags(planned)))
    return dict(changed=True, entry=after, updated=updated, _deleted=others, _before=base, _after=after)


if __name__ == "__main__":
    main()
