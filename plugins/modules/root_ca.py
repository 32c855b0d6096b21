#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
module: root_ca
short_description: Create and renew the root CA key pair of UpstreamAuthority "disk"
version_added: "0.1.0"
description:
  - Keeps a self-signed CA private key and certificate on the target, as read by the
    SPIRE server's C(UpstreamAuthority "disk") plugin (C(key_file_path), C(cert_file_path)).
  - Idempotent. A pair is kept while the key parses and has the requested type and size,
    the certificate is a CA for that key with the requested subject, and it is valid for
    longer than O(renew_before). A pair on disk that does not match is replaced only as
    O(regenerate) allows (by default the task fails and keeps it, so a trust root is never
    re-keyed by surprise); O(backup=true) keeps a copy of the pair it replaces.
  - Missing parent directories are created with mode C(0700), owned by O(owner) and O(group).
  - The key is written atomically with mode C(0600), the certificate with C(0644).
  - Changing O(validity) alone does not regenerate a valid pair.
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
  key_path:
    description: Path of the PEM (PKCS#8) private key.
    type: path
    required: true
  cert_path:
    description: Path of the PEM certificate.
    type: path
    required: true
  key_type:
    description: Key algorithm.
    type: str
    choices: [ec, rsa]
    default: ec
  key_size:
    description:
      - RSA modulus size (2048, 3072, 4096; default 2048) or EC curve size (256, 384, 521; default 256).
    type: int
  subject:
    description: Subject of the CA certificate.
    type: dict
    default: {common_name: SPIRE root CA}
    suboptions:
      common_name:
        description: CN.
        type: str
      organization:
        description: O.
        type: str
      organizational_unit:
        description: OU.
        type: str
      country:
        description: C (two letters).
        type: str
      state_or_province:
        description: ST.
        type: str
      locality:
        description: L.
        type: str
  validity:
    description: Lifetime of a new certificate, as a duration (V(87600h), V(3650d), V(1h30m)) or seconds.
    type: str
    default: 87600h
  renew_before:
    description: Regenerate the pair when the certificate expires within this duration.
    type: str
    default: 8760h
  regenerate:
    description:
      - What to do with a pair on disk that does not match the request (unreadable or
        encrypted key, other key type or size, other subject, mismatched or expiring
        certificate). Absent files are always created.
      - V(fail) fails the task and keeps the files; V(never) keeps them and reports why
        they do not match; V(partial_idempotence) and V(full_idempotence) replace them;
        V(always) replaces them on every run.
    type: str
    choices: [never, fail, partial_idempotence, full_idempotence, always]
    default: fail
  backup:
    description: Copy the key and certificate aside (C(<file>.<pid>.<timestamp>~)) before replacing them.
    type: bool
    default: false
  force:
    description: Same as O(regenerate=always).
    type: bool
    default: false
  owner:
    description: Owner of both files and of the directories this module creates (for example the C(spire) user that runs the server).
    type: str
  group:
    description: Group of both files.
    type: str
"""

EXAMPLES = r"""
- name: Root CA for UpstreamAuthority "disk"
  spire_py.spire.root_ca:
    key_path: /opt/spire/data/server/upstream/root.key
    cert_path: /opt/spire/data/server/upstream/root.crt
    key_type: ec
    key_size: 384
    subject:
      common_name: example.org root CA
      organization: Example
    validity: 87600h
    renew_before: 8760h
    owner: spire
    group: spire
"""

RETURN = r"""
key_path:
  description: Path of the private key.
  returned: always
  type: str
cert_path:
  description: Path of the certificate.
  returned: always
  type: str
certificate:
  description: Facts about the certificate now on disk (or that would be, in check mode).
  returned: always
  type: dict
  contains:
    subject:
      description: RFC 4514 subject.
      type: str
      sample: CN=SPIRE root CA
    issuer:
      description: RFC 4514 issuer (the subject, for a root).
      type: str
    serial:
      description: Serial number in hex.
      type: str
    not_after:
      description: Expiry, UTC.
      type: str
      sample: "2035-01-01T00:00:00Z"
    sha256_fingerprint:
      description: SHA-256 of the DER certificate, hex.
      type: str
    key:
      description: Key type and size.
      type: str
      sample: ec 256
    is_ca:
      description: Whether the certificate is a CA.
      type: bool
    dns_names:
      description: DNS SANs (empty for a root).
      type: list
      elements: str
backup_files:
  description: The copies made of the replaced files (O(backup=true)), by original path.
  returned: when a pair was replaced with O(backup=true)
  type: dict
mismatch:
  description: Why the pair on disk does not match the request (kept with O(regenerate=never)).
  returned: always
  type: list
  elements: str
reasons:
  description: Why the pair was (or would be) regenerated; empty when it was kept.
  returned: always
  type: list
  elements: str
  sample: ["certificate expires in 86000s (renew_before is 31536000s)"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.spire_py.spire.plugins.module_utils import files, pki
from ansible_collections.spire_py.spire.plugins.module_utils.ca_pair import CAPairRequest, ensure_ca
from ansible_collections.spire_py.spire.plugins.module_utils.duration import parse_duration

SUBJECT_OPTIONS = dict(
    common_name=dict(type="str"),
    organization=dict(type="str"),
    organizational_unit=dict(type="str"),
    country=dict(type="str"),
    state_or_province=dict(type="str"),
    locality=dict(type="str"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            key_path=dict(type="path", required=True, no_log=False),
            cert_path=dict(type="path", required=True),
            key_type=dict(type="str", choices=["ec", "rsa"], default="ec", no_log=False),
            key_size=dict(type="int", no_log=False),
            subject=dict(type="dict", options=SUBJECT_OPTIONS, default={"common_name": "SPIRE root CA"}),
            validity=dict(type="str", default="87600h"),
            renew_before=dict(type="str", default="8760h"),
            regenerate=dict(type="str", default="fail",
                            choices=["never", "fail", "partial_idempotence", "full_idempotence", "always"]),
            backup=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=pki.CRYPTOGRAPHY_IMPORT_ERROR)
    p = module.params
    subject = dict((k, v) for k, v in p["subject"].items() if v)
    try:
        request = CAPairRequest(
            p["key_path"], p["cert_path"], subject, p["key_type"], p["key_size"],
            parse_duration(p["validity"]), parse_duration(p["renew_before"]), p["force"], p["regenerate"],
        )
        dirs_changed = files.ensure_directories(module, [p["key_path"], p["cert_path"]], p["owner"], p["group"])
        backup = (lambda paths: files.backup_files(module, paths)) if p["backup"] else None
        result = ensure_ca(request, module.check_mode, backup=backup)
    except (pki.PKIError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot write the CA files: %s" % exc)

    changed = result["changed"] or dirs_changed
    changed = files.apply_attributes(module, p["key_path"], "0600", p["owner"], p["group"], changed)
    changed = files.apply_attributes(module, p["cert_path"], "0644", p["owner"], p["group"], changed)
    out = dict(
        changed=changed,
        key_path=p["key_path"],
        cert_path=p["cert_path"],
        certificate=result["after"],
        reasons=result["reasons"],
        mismatch=result["mismatch"],
    )
    if result["backups"]:
        out["backup_files"] = result["backups"]
    if module._diff:
        out["diff"] = files.diff_of(p["cert_path"], pki.describe(result["before"]), pki.describe(result["after"]))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
