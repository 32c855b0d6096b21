# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A self-signed CA key pair on disk, kept while valid and regenerated when it must be.

Used for the root of UpstreamAuthority "disk" (root_ca) and the x509pop provisioning
CA (x509pop_cert). A pair is kept when the key parses, has the requested type and
size, the certificate is a CA for that key with the requested subject, and it is not
within renew_before of expiry. Otherwise what happens to a pair already on disk is
``regenerate``'s choice, as in community.crypto: a trust root is never replaced by
surprise (the modules default to "fail"), and ``backup`` keeps the old pair.
"""

from ansible_collections.spire_py.spire.plugins.module_utils import files, pki

# community.crypto's values. partial/full_idempotence both replace a pair that does not match.
REGENERATE = ("never", "fail", "partial_idempotence", "full_idempotence", "always")


class CARefused(pki.PKIError):
    """regenerate=fail and the pair on disk does not match the request."""


class CAPairRequest:
    def __init__(self, key_path, cert_path, subject, key_type="ec", key_size=None,
                 validity=10 * 365 * 86400, renew_before=0, force=False, regenerate="full_idempotence"):
        self.key_path = key_path
        self.cert_path = cert_path
        self.subject = subject
        self.key_type = key_type
        self.key_size = pki.resolve_key_size(key_type, key_size)
        self.validity = validity
        self.renew_before = renew_before
        self.force = force or regenerate == "always"
        if regenerate not in REGENERATE:
            raise pki.PKIError("regenerate must be one of %s, not %s" % (", ".join(REGENERATE), regenerate))
        self.regenerate = regenerate
        if renew_before >= validity:
            raise pki.PKIError("renew_before (%ss) must be shorter than validity (%ss)" % (renew_before, validity))


def reasons_to_regenerate(request, key, cert, now=None):
    """Why the pair on disk cannot be kept; an empty list means keep it."""
    if request.force:
        return ["force is set"]
    if key is None:
        return ["no readable private key at %s" % request.key_path]
    spec = pki.key_spec(key)
    wanted = (request.key_type, request.key_size)
    if spec != wanted:
        return ["key is %s, want %s" % (_spec_text(spec), _spec_text(wanted))]
    if cert is None:
        return ["no readable certificate at %s" % request.cert_path]
    reasons = []
    if not pki.same_public_key(cert.public_key(), key.public_key()):
        reasons.append("certificate does not match the private key")
    if not pki.is_ca(cert):
        reasons.append("certificate is not a CA")
    if cert.subject != pki.build_name(request.subject):
        reasons.append("subject is %s, want %s" % (cert.subject.rfc4514_string(),
                                                   pki.build_name(request.subject).rfc4514_string()))
    left = pki.seconds_left(cert, now)
    if left <= request.renew_before:
        reasons.append("certificate expires in %ss (renew_before is %ss)" % (max(left, 0), request.renew_before))
    return reasons


def _spec_text(spec):
    return "%s %s" % spec if spec else "of an unsupported type"


def ensure_ca(request, check_mode=False, now=None, backup=None):
    """Bring the pair to the requested state; in check mode compute it without writing.

    ``backup`` (a callable taking the list of paths, returning {path: copy}) runs before an
    existing pair is replaced. Returns a dict: changed, reasons, before/after certificate
    info, backups, and the (new or kept) key and certificate objects so callers can sign.
    """
    key_bytes, cert_bytes = files.read_bytes(request.key_path), files.read_bytes(request.cert_path)
    key = pki.load_private_key(key_bytes)
    cert = pki.load_certificate(cert_bytes)
    reasons = reasons_to_regenerate(request, key, cert, now)
    before = pki.certificate_info(cert)
    kept = {"changed": False, "reasons": [], "before": before, "after": before, "key": key, "cert": cert,
            "backups": {}, "mismatch": reasons}
    if not reasons:
        return kept
    on_disk = key_bytes is not None or cert_bytes is not None
    if on_disk and request.regenerate == "never":
        return kept
    if on_disk and request.regenerate == "fail" and not request.force:
        raise CARefused("the CA at %s does not match the request (%s); it is kept: set regenerate=full_idempotence "
                        "to replace it (with backup=true to keep a copy), or restore the matching settings"
                        % (request.key_path, "; ".join(reasons)))
    backups = {}
    if on_disk and backup is not None and not check_mode:
        backups = backup([request.key_path, request.cert_path])
    key = pki.generate_private_key(request.key_type, request.key_size)
    cert = pki.make_ca_certificate(key, request.subject, request.validity, now)
    if not check_mode:
        # Key first: a crash in between leaves a pair that fails the match check next run.
        files.atomic_write(request.key_path, pki.private_key_pem(key), 0o600)
        files.atomic_write(request.cert_path, pki.certificate_pem(cert), 0o644)
    return {"changed": True, "reasons": reasons, "before": before, "after": pki.certificate_info(cert),
            "key": key, "cert": cert, "backups": backups, "mismatch": reasons}
