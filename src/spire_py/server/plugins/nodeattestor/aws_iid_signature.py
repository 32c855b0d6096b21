"""The RSA-2048 signature of an EC2 instance identity document: a PKCS#7 SignedData.

AWS serves it as the base64 body of a PKCS#7 (no PEM armour, no certificates inside):
the signed content is the document itself, one signer identified by issuer and
serial number, SHA-256, usually with signed attributes (content type, signing time,
message digest). We verify it as SPIRE does (Go's pkcs7 with the region's AWS
certificate put in as the only certificate): the signer must be one of the trusted
certificates, the digest must match, the RSA PKCS#1 v1.5 signature must verify, and the
content must be exactly the document the agent sent (no borrowed signature).

cryptography has no PKCS#7 verification, so the structure is read with pyasn1's RFC 5652
module and the signature checked with cryptography.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Callable, Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ....common.errors import SpireError

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
    "1.3.14.3.2.26": hashes.SHA1,
}
_RSA_SIGNATURES = {
    "1.2.840.113549.1.1.1",   # rsaEncryption: the hash is the digest algorithm's
    "1.2.840.113549.1.1.11",  # sha256WithRSAEncryption
    "1.2.840.113549.1.1.12",  # sha384WithRSAEncryption
    "1.2.840.113549.1.1.13",  # sha512WithRSAEncryption
    "1.2.840.113549.1.1.5",   # sha1WithRSAEncryption
}


class SignatureError(SpireError, ValueError):
    """The signature does not verify; the message says at which step."""


def _decode_body(signature: str) -> bytes:
    try:
        return base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("failed to decode the instance identity cryptographic signature") from None


def _parse(der: bytes) -> tuple[bytes, list[Any]]:
    from pyasn1.codec.der import decoder
    from pyasn1.error import PyAsn1Error
    from pyasn1_modules import rfc5652

    try:
        info, rest = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
        if rest:
            raise SignatureError("failed to parse the instance identity cryptographic signature: trailing data")
        if str(info["contentType"]) != OID_SIGNED_DATA:
            raise SignatureError("failed to parse the instance identity cryptographic signature: not SignedData")
        signed, _ = decoder.decode(info["content"], asn1Spec=rfc5652.SignedData())
        encap = signed["encapContentInfo"]
        if not encap["eContent"].isValue:
            raise SignatureError("failed to parse the instance identity cryptographic signature: no content")
        return bytes(encap["eContent"]), list(signed["signerInfos"])
    except PyAsn1Error as exc:
        raise SignatureError(f"failed to parse the instance identity cryptographic signature: {exc}") from None


def _issuer_serial_matches(signer: Any, cert: x509.Certificate) -> bool:
    from pyasn1.codec.der import encoder

    sid = signer["sid"]
    if sid.getName() != "issuerAndSerialNumber":
        return False
    ias = sid["issuerAndSerialNumber"]
    return (int(ias["serialNumber"]) == cert.serial_number
            and encoder.encode(ias["issuer"]) == cert.issuer.public_bytes())


def _verify_signer(signer: Any, content: bytes, cert: x509.Certificate) -> None:
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.type import univ

    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("certificate does not hold an RSA key")
    digest_oid = str(signer["digestAlgorithm"]["algorithm"])
    hash_cls = _DIGESTS.get(digest_oid)
    if hash_cls is None:
        raise SignatureError(f"unsupported digest algorithm {digest_oid}")
    if str(signer["signatureAlgorithm"]["algorithm"]) not in _RSA_SIGNATURES:
        raise SignatureError(f'unsupported signature algorithm {signer["signatureAlgorithm"]["algorithm"]}')
    signed_bytes = content
    attrs = signer["signedAttrs"]
    if attrs.isValue and len(attrs):
        digests = [a for a in attrs if str(a["attrType"]) == OID_MESSAGE_DIGEST]
        if len(digests) != 1 or len(digests[0]["attrValues"]) != 1:
            raise SignatureError("signed attributes must hold exactly one message digest")
        claimed, _ = decoder.decode(digests[0]["attrValues"][0], asn1Spec=univ.OctetString())
        h = hashes.Hash(hash_cls())
        h.update(content)
        if not hmac.compare_digest(bytes(claimed), h.finalize()):
            raise SignatureError("message digest mismatch")
        # The signature covers the attributes as a DER SET OF, not with their [0] tag.
        encoded = encoder.encode(attrs)
        signed_bytes = b"\x31" + encoded[1:]
    try:
        key.verify(bytes(signer["signature"]), signed_bytes, padding.PKCS1v15(), hash_cls())
    except InvalidSignature:
        raise SignatureError("crypto/rsa: verification error") from None


def verify_rsa2048(document: str, signature: str, trusted: Iterable[x509.Certificate]) -> None:
    """Raise SignatureError unless ``signature`` is a PKCS#7 over exactly ``document`` by one of
    ``trusted``; every signer in it must verify (as Go's pkcs7.Verify)."""
    content, signers = _parse(_decode_body(signature))
    if not signers:
        raise SignatureError("failed verification of instance identity cryptographic signature: no signers")
    certs = list(trusted)
    for signer in signers:
        matching = [c for c in certs if _issuer_serial_matches(signer, c)]
        if not matching:
            raise SignatureError("failed verification of instance identity cryptographic signature: "
                                 "no trusted certificate matches the signer")
        errors = []
        for cert in matching:
            try:
                _verify_signer(signer, content, cert)
                break
            except SignatureError as exc:
                errors.append(str(exc))
        else:
            raise SignatureError(f"failed verification of instance identity cryptographic signature: {errors[0]}")
    if not hmac.compare_digest(content, document.encode()):
        raise SignatureError("instance identity document does not match the verified PKCS7 content")
