#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
module: x509pop_cert
short_description: Issue x509pop node certificates from a provisioning CA
version_added: "0.1.0"
description:
  - Keeps a provisioning CA (created when absent) whose certificate the SPIRE server's
    C(NodeAttestor "x509pop") trusts (C(ca_bundle_path)), and issues one node's key and
    client certificate for the agent's C(NodeAttestor "x509pop")
    (C(private_key_path), C(certificate_path)).
  - Run it where the CA lives (the roles use the first server, with C(delegate_to)), once
    per agent host with that host's O(common_name) and its own O(key_path)/O(cert_path).
  - Idempotent per host. A node certificate is kept while it chains to the current CA,
    matches its key, has the requested common name and DNS names, and is valid for longer
    than O(renew_before). A key that is still good is kept when only the certificate is
    reissued.
  - Without O(cert_path) only the CA is ensured.
  - With O(csr) the node's key stays on the agent, and the module signs the agent's certificate
    signing request (its signature proves possession of the key; the names come from
    O(common_name) and O(dns_names), not from the request) and returns RV(certificate_pem);
    the agent's current O(certificate) is returned unchanged while it still fits.
author:
  - spire_py maintainers (@spire-py)
requirements:
  - cryptography >= 3.4
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
    description: Path of the provisioning CA private key (PEM, mode C(0600)).
    type: path
    required: true
  ca_cert_path:
    description: Path of the provisioning CA certificate (PEM); give this file to the server as C(ca_bundle_path).
    type: path
    required: true
  ca_subject:
    description: Subject of the CA certificate, with the fields of M(spire_py.spire.root_ca)'s O(spire_py.spire.root_ca#module:subject).
    type: dict
    default: {common_name: SPIRE x509pop provisioning CA}
  ca_key_type:
    description: CA key algorithm.
    type: str
    choices: [ec, rsa]
    default: ec
  ca_key_size:
    description: CA key size (RSA bits or EC curve bits).
    type: int
  ca_validity:
    description: Lifetime of a new CA certificate (duration such as V(87600h), or seconds).
    type: str
    default: 87600h
  ca_renew_before:
    description: Replace the CA when it expires within this duration (every node certificate is then reissued).
    type: str
    default: 8760h
  key_path:
    description: Path of the node's private key. Required with O(cert_path).
    type: path
  csr:
    description:
      - A PEM certificate signing request made on the agent with its own key (mutually exclusive with
        O(key_path) and O(cert_path)). Requires O(common_name).
    type: str
  certificate:
    description: With O(csr), the agent's current certificate (PEM), kept when it still fits.
    type: str
  cert_path:
    description: Path of the node's certificate.
    type: path
  common_name:
    description: Common name of the node certificate, usually the inventory hostname. Required with O(cert_path).
    type: str
  dns_names:
    description: DNS subject alternative names of the node certificate.
    type: list
    elements: str
    default: []
  key_type:
    description: Node key algorithm.
    type: str
    choices: [ec, rsa]
    default: ec
  key_size:
    description: Node key size (RSA bits or EC curve bits).
    type: int
  validity:
    description: Lifetime of a new node certificate (capped at the CA's expiry).
    type: str
    default: 8760h
  renew_before:
    description: Reissue the node certificate when it expires within this duration.
    type: str
    default: 720h
  return_content:
    description:
      - Return the node's PEM key and certificate (RV(private_key_pem), RV(certificate_pem)),
        so a play can copy them to the agent host. Use C(no_log) on the task.
    type: bool
    default: false
  ca_regenerate:
    description:
      - What to do with a CA pair on disk that does not match the request, as
        M(spire_py.spire.root_ca)'s O(spire_py.spire.root_ca#module:regenerate) (absent files are always created).
    type: str
    choices: [never, fail, partial_idempotence, full_idempotence, always]
    default: fail
  ca_backup:
    description: Copy the CA key and certificate aside before replacing them.
    type: bool
    default: false
  force:
    description: Reissue the node key and certificate (not the CA) even when they are valid.
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
- name: Issue this agent's x509pop certificate on the first server
  spire_py.spire.x509pop_cert:
    ca_key_path: /opt/spire/data/x509pop/ca.key
    ca_cert_path: /opt/spire/data/x509pop/ca.crt
    key_path: "/opt/spire/data/x509pop/nodes/{{ inventory_hostname }}.key"
    cert_path: "/opt/spire/data/x509pop/nodes/{{ inventory_hostname }}.crt"
    common_name: "{{ inventory_hostname }}"
  delegate_to: "{{ groups['spire_servers'][0] }}"

- name: Sign the CSR an agent made with its own key (the key never leaves the agent)
  spire_py.spire.x509pop_cert:
    ca_key_path: /opt/spire/data/x509pop/ca.key
    ca_cert_path: /opt/spire/data/x509pop/ca.crt
    csr: "{{ agent_csr.stdout }}"
    certificate: "{{ (agent_cert.content | b64decode) if agent_cert.content is defined else omit }}"
    common_name: "{{ inventory_hostname }}"
  delegate_to: "{{ groups['spire_servers'][0] }}"
  register: node_cert

- name: Only make sure the provisioning CA exists
  spire_py.spire.x509pop_cert:
    ca_key_path: /opt/spire/data/x509pop/ca.key
    ca_cert_path: /opt/spire/data/x509pop/ca.crt
"""

RETURN = r"""
ca:
  description: Facts about the CA certificate (same fields as RV(spire_py.spire.root_ca#module:certificate)).
  returned: always
  type: dict
ca_changed:
  description: Whether the CA was created or replaced.
  returned: always
  type: bool
certificate:
  description: Facts about the node certificate (same fields as the CA's).
  returned: when O(cert_path) or O(csr) is set
  type: dict
ca_certificate_pem:
  description: The CA certificate in PEM, for the server's C(ca_bundle_path).
  returned: always
  type: str
certificate_pem:
  description: The node certificate in PEM (in check mode, the one that would be written).
  returned: when O(csr) is set, or O(return_content=true) and O(cert_path) is set
  type: str
private_key_pem:
  description: The node private key in PEM (in check mode, the one that would be written).
  returned: when O(return_content=true) and O(cert_path) is set
  type: str
reasons:
  description: Why the CA or the node certificate was (or would be) replaced.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.spire_py.spire.plugins.module_utils import files, pki
from ansible_collections.spire_py.spire.plugins.module_utils.ca_pair import CAPairRequest
from ansible_collections.spire_py.spire.plugins.module_utils.duration import parse_duration
from ansible_collections.spire_py.spire.plugins.module_utils.x509pop import NodeCertRequest, ensure, sign_csr


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ca_key_path=dict(type="path", required=True, no_log=False),
            ca_cert_path=dict(type="path", required=True),
            ca_subject=dict(type="dict", default={"common_name": "SPIRE x509pop provisioning CA"}),
            ca_key_type=dict(type="str", choices=["ec", "rsa"], default="ec", no_log=False),
            ca_key_size=dict(type="int", no_log=False),
            ca_validity=dict(type="str", default="87600h"),
            ca_renew_before=dict(type="str", default="8760h"),
            key_path=dict(type="path", no_log=False),
            csr=dict(type="str"),
            certificate=dict(type="str"),
            cert_path=dict(type="path"),
            common_name=dict(type="str"),
            dns_names=dict(type="list", elements="str", default=[]),
            key_type=dict(type="str", choices=["ec", "rsa"], default="ec", no_log=False),
            key_size=dict(type="int", no_log=False),
            validity=dict(type="str", default="8760h"),
            renew_before=dict(type="str", default="720h"),
            return_content=dict(type="bool", default=False),
            ca_regenerate=dict(type="str", default="fail",
                               choices=["never", "fail", "partial_idempotence", "full_idempotence", "always"]),
            ca_backup=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        required_together=[["key_path", "cert_path"]],
        required_by={"cert_path": ["common_name"], "csr": ["common_name"]},
        mutually_exclusive=[["csr", "key_path"], ["csr", "cert_path"]],
        supports_check_mode=True,
    )
    if not pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=pki.CRYPTOGRAPHY_IMPORT_ERROR)

    p = module.params
    try:
        ca_request = CAPairRequest(
            p["ca_key_path"], p["ca_cert_path"], dict((k, v) for k, v in p["ca_subject"].items() if v),
            p["ca_key_type"], p["ca_key_size"], parse_duration(p["ca_validity"]),
            parse_duration(p["ca_renew_before"]), regenerate=p["ca_regenerate"],
        )
        node_request = None
        if p["csr"]:
            csr_request = NodeCertRequest(
                None, None, p["common_name"], p["dns_names"], p["key_type"], p["key_size"],
                parse_duration(p["validity"]), parse_duration(p["renew_before"]), p["force"],
            )
        if p["cert_path"]:
            node_request = NodeCertRequest(
                p["key_path"], p["cert_path"], p["common_name"], p["dns_names"], p["key_type"], p["key_size"],
                parse_duration(p["validity"]), parse_duration(p["renew_before"]), p["force"],
            )
        dirs_changed = files.ensure_directories(
            module, [p["ca_key_path"], p["ca_cert_path"], p["key_path"], p["cert_path"]], p["owner"], p["group"])
        backup = (lambda paths: files.backup_files(module, paths)) if p["ca_backup"] else None
        result = ensure(ca_request, node_request, module.check_mode, backup=backup)
        if p["csr"]:
            result["node"] = sign_csr(csr_request, result["ca"]["key"], result["ca"]["cert"], p["csr"], p["certificate"])
            result["changed"] = result["changed"] or result["node"]["changed"]
    except (pki.PKIError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot write the certificate files: %s" % exc)

    changed = result["changed"] or dirs_changed
    for path, mode in ((p["ca_key_path"], "0600"), (p["ca_cert_path"], "0644"),
                       (p["key_path"], "0600"), (p["cert_path"], "0644")):
        if path:
            changed = files.apply_attributes(module, path, mode, p["owner"], p["group"], changed)
    ca = result["ca"]
    node = result["node"]
    out = dict(changed=changed, ca=ca["after"], ca_changed=ca["changed"], reasons=list(ca["reasons"]),
               ca_certificate_pem=pki.certificate_pem(ca["cert"]).decode())
    if node is not None:
        out["certificate"] = node["after"]
        out["reasons"].extend(node["reasons"])
        if p["csr"]:
            out["certificate_pem"] = pki.certificate_pem(node["cert"]).decode()
        elif p["return_content"]:
            out["certificate_pem"] = pki.certificate_pem(node["cert"]).decode()
            out["private_key_pem"] = pki.private_key_pem(node["key"]).decode()
    if module._diff:
        if node is not None and p["csr"]:
            out["diff"] = dict(before=pki.describe(node["before"]), after=pki.describe(node["after"]),
                               before_header=p["common_name"], after_header=p["common_name"])
        elif node is not None:
            out["diff"] = files.diff_of(p["cert_path"], pki.describe(node["before"]), pki.describe(node["after"]))
        else:
            out["diff"] = files.diff_of(p["ca_cert_path"], pki.describe(ca["before"]), pki.describe(ca["after"]))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
