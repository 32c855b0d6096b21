#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
module: join_token
short_description: Generate a single-use join token on a spire_py (or SPIRE) server
version_added: "0.1.0"
description:
  - Runs C(spire-server token generate) on the server host, through the admin socket, and
    returns the token for one agent's C(join_token) node attestation.
  - Tokens are single-use; generate one per agent host, only when that agent has no saved
    identity, with C(delegate_to) the server. Never use C(run_once).
  - Each run creates a new token, so the task always reports a change. In check mode
    nothing is created and RV(token) is empty.
  - The token is a credential. Set C(no_log) on the task.
author:
  - spire_py maintainers (@spire-py)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  spiffe_id:
    description:
      - An additional SPIFFE ID for the agent that uses the token. The server registers it
        as an alias of the agent (a node entry whose parent is the agent's join token ID).
    type: str
  ttl:
    description: Seconds the token stays valid.
    type: int
    default: 600
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
- name: Join token for this agent, made on the first server
  spire_py.spire.join_token:
    spiffe_id: "spiffe://example.org/host/{{ inventory_hostname }}"
    ttl: 600
    socket_path: /run/spire-server/private/api.sock
  delegate_to: "{{ groups['spire_servers'][0] }}"
  no_log: true
  register: agent_token
"""

RETURN = r"""
token:
  description: The join token (empty in check mode).
  returned: always
  type: str
expires_at:
  description: Expiry of the token in seconds since the epoch (0 in check mode).
  returned: always
  type: int
spiffe_id:
  description: The alias SPIFFE ID requested, if any.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.spire_py.spire.plugins.module_utils.spire_cli import (
    DEFAULT_BIN,
    DEFAULT_SOCKET,
    ServerCLI,
    SpireCLIError,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            spiffe_id=dict(type="str"),
            ttl=dict(type="int", default=600),
            server_bin=dict(type="path", default=DEFAULT_BIN),
            socket_path=dict(type="path", default=DEFAULT_SOCKET),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["ttl"] <= 0:
        module.fail_json(msg="ttl must be a positive number of seconds")
    if p["spiffe_id"] and not p["spiffe_id"].startswith("spiffe://"):
        module.fail_json(msg='spiffe_id must be a SPIFFE ID ("spiffe://<trust domain>/<path>")')
    out = dict(changed=True, token="", expires_at=0, spiffe_id=p["spiffe_id"] or "")
    if module.check_mode:
        module.exit_json(**out)
    cli = ServerCLI(module.run_command, p["server_bin"], p["socket_path"])
    try:
        doc = cli.generate_token(p["ttl"], p["spiffe_id"])
    except SpireCLIError as exc:
        module.fail_json(msg=str(exc), rc=exc.rc)
    out.update(token=doc["value"], expires_at=int(doc.get("expires_at") or 0))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
