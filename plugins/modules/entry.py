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
    description: The SPIFFE ID the entry gives to matching workloads (or nodes).
    type: str
    required: true
  parent_id:
    description:
      - The agent (or node alias) the workloads run under. For a node alias entry use
        the server's ID, C(spiffe://<trust domain>/spire/server).
    type: str
    required: true
  selectors:
    description: Selectors as C(type:value), for example C(unix:uid:1000) or C(x509pop:subject:cn:web1).
    type: list
    elements: str
    required: true
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
  server_bin:
    description: The C(spire-server) executable on the server host.
    type: path
    default: /opt/spire/bin/spire-server
  socket_path:
    description: The server's admin API socket.
    type: path
    default: /tmp/spire-server/private/api.sock
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
updated:
  description: Attributes that were (or would be) changed, with their old and new values.
  returned: always
  type: dict
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            spiffe_id=dict(type="str", required=True),
            parent_id=dict(type="str", required=True),
            selectors=dict(type="list", elements="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            x509_svid_ttl=dict(type="int"),
            jwt_svid_ttl=dict(type="int"),
            dns_names=dict(type="list", elements="str"),
            admin=dict(type="bool"),
            downstream=dict(type="bool"),
            federates_with=dict(type="list", elements="str"),
            hint=dict(type="str"),
            server_bin=dict(type="path", default=DEFAULT_BIN),
            socket_path=dict(type="path", default=DEFAULT_SOCKET),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        want = entries.desired(p)
    except entries.EntryError as exc:
        module.fail_json(msg=str(exc))
    if module.check_mode and not os.path.exists(p["server_bin"]):
        # A first check-mode run: the server is not installed yet, so every entry is new.
        module.warn("%s does not exist yet: reporting the entry as to be created" % p["server_bin"])
        planned = dict(entries.merged(entries.view({}), want), id="")
        absent = p["state"] == "absent"
        module.exit_json(changed=not absent, entry={} if absent else planned, updated={})
    cli = ServerCLI(module.run_command, p["server_bin"], p["socket_path"])
    try:
        matches = entries.find(cli.show_entries(want["spiffe_id"], want["parent_id"]), want)
        current = matches[0] if matches else None
        result = apply(cli, module.check_mode, p["state"], want, current, matches)
    except SpireCLIError as exc:
        module.fail_json(msg=str(exc), rc=exc.rc)
    if module._diff:
        result["diff"] = dict(
            before=entries.describe(current), after=entries.describe(result.pop("_after")),
            before_header=want["spiffe_id"], after_header=want["spiffe_id"],
        )
    else:
        result.pop("_after")
    module.exit_json(**result)


def apply(cli, check_mode, state, want, current, matches):
    if state == "absent":
        if not matches:
            return dict(changed=False, entry={}, updated={}, _after=None)
        if not check_mode:
            for match in matches:
                cli.delete_entry(match["id"])
        return dict(changed=True, entry=current, updated={}, _after=None)
    if current is None:
        planned = entries.merged(entries.view({}), want)
        planned["id"] = ""
        if check_mode:
            return dict(changed=True, entry=planned, updated={}, _after=planned)
        created = entries.view(cli.create_entry(entries.cli_flags(planned)))
        return dict(changed=True, entry=created, updated={}, _after=created)
    delta = entries.changes(current, want)
    if not delta:
        return dict(changed=False, entry=current, updated={}, _after=current)
    planned = entries.merged(current, want)
    updated = dict((k, {"before": v[0], "after": v[1]}) for k, v in delta.items())
    if check_mode:
        return dict(changed=True, entry=planned, updated=updated, _after=planned)
    after = entries.view(cli.update_entry(current["id"], entries.cli_flags(planned)))
    return dict(changed=True, entry=after, updated=updated, _after=after)


if __name__ == "__main__":
    main()
