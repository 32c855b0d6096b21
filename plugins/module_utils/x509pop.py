# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Node certificates for the x509pop attestor, issued by a provisioning CA.

A node's certificate is kept while it chains to the current CA, matches its key, has
the requested common name and DNS names, and is not within renew_before of expiry.
When the CA is replaced every node certificate is reissued on its next run.
"""

from ansible_collections.spire_py.spire.plugins.module_utils import ca_pair, files, pki


class NodeCertRequest:
    def __init__(self, key_path, cert_path, common_name, dns_names=None, key_type="ec", key_size=None,
                 validity=365 * 86400, renew_before=30 * 86400, force=False):
        self.key_path = key_path
        self.cert_path = cert_path
        self.common_name = common_name
        self.dns_names = list(dns_names or [])
        self.key_type = key_type
        self.key_size = pki.resolve_key_size(key_type, key_size)
        self.validity = validity
        self.renew_before = renew_before
        self.force = force
        if not common_name:
            raise pki.PKIError("common_name must not be empty")
        if renew_before >= validity:
            raise pki.PKIError("renew_before (%ss) must be shorter than validity (%ss)" % (renew_before, validity))


def reasons_to_reissue(request, ca_cert, key, cert, now=None):
    if request.force:
        return ["force is set"]
    if key is None:
        return ["no readable private key at %s" % request.key_path]
    if pki.key_spec(key) != (request.key_type, request.key_size):
        return ["key type or size differs from the request"]
    if cert is None:
        return ["no readable certificate at %s" % request.cert_path]
    reasons = []
    if not pki.same_public_key(cert.public_key(), key.public_key()):
        reasons.append("certificate does not match the private key")
    if not pki.signed_by(cert, ca_cert):
        reasons.append("certificate was not issued by the current provisioning CA")
    cns = [a.value for a in cert.subject.get_attributes_for_oid(pki.NameOID.COMMON_NAME)]
    if cns != [request.common_name]:
        reasons.append("common name is %s, want %s" % (", ".join(cns) or "empty", request.common_name))
    if pki.dns_names(cert) != request.dns_names:
        reasons.append("DNS names differ")
    left = pki.seconds_left(cert, now)
    if left <= request.renew_before:
        reasons.append("certificate expires in %ss (renew_before is %ss)" % (max(left, 0), request.renew_before))
    return reasons


def ensure_node_cert(request, ca_key, ca_cert, check_mode=False, now=None):
    key = pki.load_private_key(files.read_bytes(request.key_path))
    cert = pki.load_certificate(files.read_bytes(request.cert_path))
    reasons = reasons_to_reissue(request, ca_cert, key, cert, now)
    before = pki.certificate_info(cert)
    if not reasons:
        return {"changed": False, "reasons": [], "before": before, "after": before, "cert": cert, "key": key}
    if key is None or request.force or pki.key_spec(key) != (request.key_type, request.key_size):
        key = pki.generate_private_key(request.key_type, request.key_size)
        new_key = True
    else:
        new_key = False  # a still-good key is kept; only the certificate is reissued
    cert = pki.issue_leaf_certificate(ca_key, ca_cert, key.public_key(), request.common_name,
                                      request.dns_names, request.validity, now)
    if not check_mode:
        if new_key:
            files.atomic_write(request.key_path, pki.private_key_pem(key), 0o600)
        files.atomic_write(request.cert_path, pki.certificate_pem(cert), 0o644)
    return {"changed": True, "reasons": reasons, "before": before, "after": pki.certificate_info(cert),
            "cert": cert, "key": key}


def ensure(ca_request, node_request, check_mode=False, now=None, backup=None):
    """The provisioning CA (created when absent) and, when requested, one node's certificate."""
    ca = ca_pair.ensure_ca(ca_request, check_mode, now, backup)
    result = {"changed": ca["changed"], "ca": ca, "node": None}
    if node_request is not None:
        node = ensure_node_cert(node_request, ca["key"], ca["cert"], check_mode, now)
        result["node"] = node
        result["changed"] = result["changed"] or node["changed"]
    return result


def csr_reasons(request, ca_cert, public_key, cert, now=None):
    """Why a certificate for the CSR's key must be issued ([] keeps the agent's current one)."""
    if request.force:
        return ["force is set"]
    if cert is None:
        return ["the agent has no readable certificate"]
    reasons = []
    if not pki.same_public_key(cert.public_key(), public_key):
        reasons.append("certificate does not match the agent's key")
    if not pki.signed_by(cert, ca_cert):
        reasons.append("certificate was not issued by the current provisioning CA")
    cns = [a.value for a in cert.subject.get_attributes_for_oid(pki.NameOID.COMMON_NAME)]
    if cns != [request.common_name]:
        reasons.append("common name is %s, want %s" % (", ".join(cns) or "empty", request.common_name))
    if pki.dns_names(cert) != request.dns_names:
        reasons.append("DNS names differ")
    left = pki.seconds_left(cert, now)
    if left <= request.renew_before:
        reasons.append("certificate expires in %ss (renew_before is %ss)" % (max(left, 0), request.renew_before))
    return reasons


def sign_csr(request, ca_key, ca_cert, csr_pem, current_pem=None, now=None):
    """A node certificate for the key of an agent's CSR: the key never leaves the agent.

    The CA decides the names (request.common_name, request.dns_names); the CSR only proves
    possession of the key. The agent's current certificate is kept while it still fits.
    """
    public_key = pki.load_csr(csr_pem).public_key()
    cert = pki.load_certificate(current_pem.encode() if isinstance(current_pem, str) else current_pem)
    reasons = csr_reasons(request, ca_cert, public_key, cert, now)
    before = pki.certificate_info(cert)
    if not reasons:
        return {"changed": False, "reasons": [], "before": before, "after": before, "cert": cert}
    cert = pki.issue_leaf_certificate(ca_key, ca_cert, public_key, request.common_name,
                                      request.dns_names, request.validity, now)
    return {"changed": True, "reasons": reasons, "before": before, "after": pki.certificate_info(cert), "cert": cert}
