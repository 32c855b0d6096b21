# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""SSH host certificates for the sshpop attestor, signed by an SSH certificate authority key.

The CA key is created when absent (OpenSSH private key format, 0600, with its public
half in <ca_key_path>.pub, which is what the server's cert_authorities lists). A host
certificate is kept while it certifies the given host public key, was signed by the
CA, carries exactly the requested principals and key id, and is not within
renew_before of expiry.
"""

import os
import secrets
import time
import traceback

from ansible_collections.spire_py.spire.plugins.module_utils import files
from ansible_collections.spire_py.spire.plugins.module_utils.pki import PKIError

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import (
        SSHCertificateBuilder,
        SSHCertificateType,
        load_ssh_public_identity,
    )
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

BACKDATE = 60


class HostCertRequest:
    """One host certificate to keep signed; with public_key None, only the CA key is ensured."""

    def __init__(self, ca_key_path, cert_path, public_key, principals, key_id=None, ca_key_type="ed25519",
                 validity=365 * 86400, renew_before=30 * 86400, force=False):
        if public_key is not None and not principals:
            raise PKIError("principals must not be empty")
        if renew_before >= validity:
            raise PKIError("renew_before (%ss) must be shorter than validity (%ss)" % (renew_before, validity))
        if ca_key_type not in ("ed25519", "ecdsa", "rsa"):
            raise PKIError("ca_key_type must be ed25519, ecdsa or rsa")
        self.ca_key_path = ca_key_path
        self.cert_path = cert_path
        self.principals = list(principals or [])
        self.key_id = key_id or (self.principals[0] if self.principals else "")
        self.ca_key_type = ca_key_type
        self.validity = validity
        self.renew_before = renew_before
        self.force = force
        self.public_key = None
        if public_key is None:
            return
        try:
            self.public_key = serialization.load_ssh_public_key(public_key.strip().encode())
        except (ValueError, TypeError, IndexError, UnsupportedAlgorithm):
            raise PKIError("public_key is not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA...')")


def openssh_public(key):
    """'<type> <base64>' of a public key, without comment."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _generate_ca_key(key_type):
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


def _load_ca_key(data):
    if not data:
        return None
    try:
        return serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            return serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None


def ensure_ca_key(request, check_mode=False):
    """The CA private key, loaded or created; returns (key, created)."""
    key = _load_ca_key(files.read_bytes(request.ca_key_path))
    if key is not None:
        return key, False
    if os.path.exists(request.ca_key_path):
        raise PKIError("%s exists but is not an unencrypted private key: refusing to replace a CA key"
                       % request.ca_key_path)
    key = _generate_ca_key(request.ca_key_type)
    if not check_mode:
        files.atomic_write(request.ca_key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()), 0o600)
        files.atomic_write(request.ca_key_path + ".pub", (openssh_public(key.public_key()) + "\n").encode(), 0o644)
    return key, True


def certificate_info(cert):
    if cert is None:
        return None
    return {
        "type": "host" if cert.type == SSHCertificateType.HOST else "user",
        "key_id": cert.key_id.decode(errors="replace"),
        "principals": [p.decode(errors="replace") for p in cert.valid_principals],
        "serial": cert.serial,
        "valid_before": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(cert.valid_before, 2 ** 31 - 1))),
        "public_key": openssh_public(cert.public_key()),
        "signed_by": openssh_public(cert.signature_key()),
    }


def _load_cert(data):
    if not data:
        return None
    try:
        return load_ssh_public_identity(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def reasons_to_sign(request, ca_key, cert, now=None):
    if request.force:
        return ["force is set"]
    if cert is None or not hasattr(cert, "valid_principals"):
        return ["no readable SSH certificate at %s" % request.cert_path]
    reasons = []
    if cert.type != SSHCertificateType.HOST:
        reasons.append("certificate is not a host certificate")
    if openssh_public(cert.public_key()) != openssh_public(request.public_key):
        reasons.append("certificate is for another public key")
    if openssh_public(cert.signature_key()) != openssh_public(ca_key.public_key()):
        reasons.append("certificate was signed by another CA")
    else:
        try:
            cert.verify_cert_signature()
        except InvalidSignature:
            reasons.append("certificate signature is invalid")
    if [p.decode() for p in cert.valid_principals] != request.principals:
        reasons.append("principals differ")
    if cert.key_id.decode(errors="replace") != request.key_id:
        reasons.append("key id differs")
    left = cert.valid_before - int(now if now is not None else time.time())
    if left <= request.renew_before:
        reasons.append("certificate expires in %ss (renew_before is %ss)" % (max(left, 0), request.renew_before))
    return reasons


def ensure_host_cert(request, check_mode=False, now=None):
    now = int(now if now is not None else time.time())
    ca_key, ca_created = ensure_ca_key(request, check_mode)
    result = {"ca_created": ca_created, "ca_public_key": openssh_public(ca_key.public_key())}
    if request.public_key is None:
        result.update(changed=ca_created, reasons=["the CA key was created"] if ca_created else [],
                      before=None, after=None, certificate=None)
        return result
    cert = _load_cert(files.read_bytes(request.cert_path))
    reasons = ["the CA key was created"] if ca_created else reasons_to_sign(request, ca_key, cert, now)
    before = certificate_info(cert)
    if not reasons:
        text = files.read_bytes(request.cert_path).decode().strip() + "\n"
        result.update(changed=False, reasons=[], before=before, after=before, certificate=text)
        return result
    new = (
        SSHCertificateBuilder()
        .public_key(request.public_key)
        .serial(secrets.randbits(63))
        .type(SSHCertificateType.HOST)
        .key_id(request.key_id.encode())
        .valid_principals([p.encode() for p in request.principals])
        .valid_after(now - BACKDATE)
        .valid_before(now + request.validity)
        .sign(ca_key)
    )
    text = new.public_bytes().decode() + "\n"
    if not check_mode:
        files.atomic_write(request.cert_path, text.encode(), 0o644)
    result.update(changed=True, reasons=reasons, before=before, after=certificate_info(new), certificate=text)
    return result
