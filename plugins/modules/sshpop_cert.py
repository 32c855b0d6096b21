#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
module: sshpop_cert
short_description: Sign SSH host certificates for the sshpop attestor
version_added: "0.1.0"
description:
  - Signs an OpenSSH host certificate for a host public key with an SSH certificate
    authority key, as the agent's C(NodeAttestor "sshpop") presents it (C(host_cert_path))
    and the server's C(NodeAttestor "sshpop") checks it (C(cert_authorities)).
  - The CA key is created when absent (OpenSSH format, mode C(0600)), with its public key
    in C(<ca_key_path>.pub); RV(ca_public_key) returns it for the server configuration.
    An existing file that is not a readable key is never replaced.
  - Run it where the CA key lives (the roles use the first server, with C(delegate_to)).
  - Without O(public_key) only the CA key is ensured (and RV(ca_public_key) returned).
  - Idempotent. A certificate is kept while it is a host certificate for O(public_key),
    signed by the CA, with exactly O(principals) and O(key_id), valid for longer than
    O(renew_before).
author:
  - spire_py maintainers (@spire-py)
requirements:
  - cryptography >= 40.0
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
  ca_key_path:
    description: Path of the SSH CA private key.
    type: path
    required: true
  ca_key_type:
    description: Algorithm of a CA key created by the module.
    type: str
    choices: [ed25519, ecdsa, rsa]
    default: ed25519
  public_key:
    description: The host's SSH public key, as in C(/etc/ssh/ssh_host_ed25519_key.pub). Required with O(cert_path).
    type: str
  cert_path:
    description: Where to write the certificate (on the host the module runs on).
    type: path
  principals:
    description: Principals of the certificate, usually the host's names from the inventory. Required with O(cert_path).
    type: list
    elements: str
  key_id:
    description: Key id of the certificate. Defaults to the first principal.
    type: str
  validity:
    description: Lifetime of a new certificate (duration such as V(8760h), or seconds).
    type: str
    default: 8760h
  renew_before:
    description: Re-sign when the certificate expires within this duration.
    type: str
    default: 720h
  force:
    description: Re-sign even when the certificate is valid.
    type: bool
    default: false
  owner:
    description: Owner of the files written.
    type: str
  group:
    description: Group of the files written.
    type: str
"""

EXAMPLES = r"""
- name: Read the agent host's SSH public key
  ansible.builtin.slurp:
    src: /etc/ssh/ssh_host_ed25519_key.pub
  register: host_key

- name: Sign it on the first server
  spire_py.spire.sshpop_cert:
    ca_key_path: /opt/spire/data/sshpop/ca_key
    public_key: "{{ host_key.content | b64decode }}"
    cert_path: "/opt/spire/data/sshpop/nodes/{{ inventory_hostname }}-cert.pub"
    principals:
      - "{{ inventory_hostname }}"
  delegate_to: "{{ groups['spire_servers'][0] }}"
  register: host_cert
"""

RETURN = r"""
certificate:
  description: The OpenSSH certificate, one line.
  returned: when O(cert_path) is set
  type: str
  sample: "ssh-ed25519-cert-v01@openssh.com AAAA..."
ca_public_key:
  description: The CA's public key in authorized_keys form, for the server's C(cert_authorities).
  returned: always
  type: str
ca_created:
  description: Whether the CA key was (or, in check mode, would be) created.
  returned: always
  type: bool
info:
  description: Facts about the certificate (type, key_id, principals, serial, valid_before, public_key, signed_by).
  returned: when O(cert_path) is set
  type: dict
reasons:
  description: Why the certificate was (or would be) signed; empty when it was kept.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.spire_py.spire.plugins.module_utils import files, sshpop
from ansible_collections.spire_py.spire.plugins.module_utils.duration import parse_duration
from ansible_collections.spire_py.spire.plugins.module_utils.pki import PKIError


def _describe(info):
    if info is None:
        return "absent\n"
    return "".join("%s: %s\n" % (k, info[k]) for k in sorted(info))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ca_key_path=dict(type="path", required=True, no_log=False),
            ca_key_type=dict(type="str", choices=["ed25519", "ecdsa", "rsa"], default="ed25519", no_log=False),
            public_key=dict(type="str", no_log=False),
            cert_path=dict(type="path"),
            principals=dict(type="list", elements="str"),
            key_id=dict(type="str", no_log=False),
            validity=dict(type="str", default="8760h"),
            renew_before=dict(type="str", default="720h"),
            force=dict(type="bool", default=False),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        required_together=[["public_key", "cert_path"]],
        required_by={"cert_path": ["principals"]},
        supports_check_mode=True,
    )
    if not sshpop.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=sshpop.CRYPTOGRAPHY_IMPORT_ERROR)

    p = module.params
    try:
        request = sshpop.HostCertRequest(
            p["ca_key_path"], p["cert_path"], p["public_key"], p["principals"], p["key_id"], p["ca_key_type"],
            parse_duration(p["validity"]), parse_duration(p["renew_before"]), p["force"],
        )
        dirs_changed = files.ensure_directories(module, [p["ca_key_path"], p["cert_path"]], p["owner"], p["group"])
        result = sshpop.ensure_host_cert(request, module.check_mode)
    except (PKIError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot write the SSH files: %s" % exc)

    changed = result["changed"] or dirs_changed
    for path, mode in ((p["ca_key_path"], "0600"), (p["ca_key_path"] + ".pub", "0644"), (p["cert_path"], "0644")):
        if path:
            changed = files.apply_attributes(module, path, mode, p["owner"], p["group"], changed)
    out = dict(changed=changed, ca_public_key=result["ca_public_key"], ca_created=result["ca_created"],
               reasons=result["reasons"])
    if p["cert_path"]:
        out.update(certificate=result["certificate"], info=result["after"])
    if module._diff and p["cert_path"]:
        out["diff"] = files.diff_of(p["cert_path"], _describe(result["before"]), _describe(result["after"]))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
