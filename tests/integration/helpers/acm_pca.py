"""A loopback AWS Private CA (ACM-PCA) that really signs: the stand-in for the service in the
aws_pca end-to-end tests (moto issues subordinate-CA templates without CA extensions).

It speaks the wire protocol boto3 uses for ACM-PCA: AWS JSON 1.1 (``POST /``,
``X-Amz-Target: ACMPrivateCA.<Operation>``, ``Content-Type: application/x-amz-json-1.1``,
AWS's field names; blobs such as ``Csr`` arrive base64-encoded; errors are
``{"__type": ..., "message": ...}`` with HTTP 400). Every request must carry a SigV4
``Authorization`` header scoped to ``acm-pca``. Served: DescribeCertificateAuthority,
IssueCertificate (the template decides the extensions: ``SubordinateCACertificate_PathLen<N>/V1``
→ CA:true pathlen N, keyCertSign/cRLSign/digitalSignature; ``EndEntityCertificate/V1`` → CA:false),
GetCertificate (``RequestInProgressException`` for the first ``pending_polls`` calls per
certificate, as issuance is asynchronous, so the SDK's ``certificate_issued`` waiter runs).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACCOUNT = "123456789012"
REGION = "us-east-1"
TEMPLATE_PREFIX = "arn:aws:acm-pca:::template/"
JSON_11 = "application/x-amz-json-1.1"
_PATHLEN = re.compile(r"SubordinateCACertificate_PathLen([0-3])/V1")


class PCAError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Issued:
    arn: str
    certificate: x509.Certificate
    template: str
    polls: int = 0


@dataclass
class ACMPCA:
    """One ROOT private CA (EC P-256, SHA256WITHECDSA) and what it issued."""

    region: str = REGION
    pending_polls: int = 1
    arn: str = ""
    url: str = ""
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    root: Optional[x509.Certificate] = None
    issued: list[Issued] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    _tokens: dict[tuple[str, bytes], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.arn = f"arn:aws:acm-pca:{self.region}:{ACCOUNT}:certificate-authority/{uuid.uuid4()}"
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spire-py tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "Loopback ACM-PCA Root")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.root = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256()))

    def root_pem(self) -> str:
        assert self.root is not None
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    def issued_certificates(self) -> list[x509.Certificate]:
        with self._lock:
            return [i.certificate for i in self.issued]

    # ------------------------------------------------------------------ operations

    def _ca(self, body: dict[str, Any]) -> None:
        arn = body.get("CertificateAuthorityArn")
        if not isinstance(arn, str) or not arn:
            raise PCAError("ValidationException", "1 validation error detected: Value null at "
                           "'certificateAuthorityArn' failed to satisfy constraint: Member must not be null")
        if arn != self.arn:
            raise PCAError("ResourceNotFoundException", f"Could not find certificate authority {arn}.")

    def describe_certificate_authority(self, body: dict[str, Any]) -> dict[str, Any]:
        self._ca(body)
        assert self.root is not None
        return {"CertificateAuthority": {
            "Arn": self.arn, "OwnerAccount": ACCOUNT, "Type": "ROOT", "Status": "ACTIVE", "Serial": str(self.root.serial_number),
            "NotBefore": self.root.not_valid_before_utc.timestamp(), "NotAfter": self.root.not_valid_after_utc.timestamp(),
            "KeyStorageSecurityStandard": "FIPS_140_2_LEVEL_3_OR_HIGHER", "UsageMode": "GENERAL_PURPOSE",
            "CertificateAuthorityConfiguration": {
                "KeyAlgorithm": "EC_prime256v1", "SigningAlgorithm": "SHA256WITHECDSA",
                "Subject": {"Organization": "spire-py tests", "CommonName": "Loopback ACM-PCA Root"}}}}

    def issue_certificate(self, body: dict[str, Any]) -> dict[str, Any]:
        self._ca(body)
        assert self.root is not None
        if body.get("SigningAlgorithm") != "SHA256WITHECDSA":
            raise PCAError("InvalidArgsException",
                           f"Signing algorithm {body.get('SigningAlgorithm')} does not match the CA's key algorithm.")
        try:
            csr = x509.load_pem_x509_csr(base64.b64decode(body.get("Csr", ""), validate=True))
        except ValueError:
            raise PCAError("MalformedCSRException", "The certificate signing request is malformed.") from None
        if not csr.is_signature_valid:
            raise PCAError("MalformedCSRException", "The certificate signing request signature is invalid.")
        template = body.get("TemplateArn") or TEMPLATE_PREFIX + "EndEntityCertificate/V1"
        if not template.startswith(TEMPLATE_PREFIX):
            raise PCAError("InvalidArgsException", f"Template {template} is not valid.")
        name = template[len(TEMPLATE_PREFIX):]
        m = _PATHLEN.fullmatch(name)
        if not m and name != "EndEntityCertificate/V1":
            raise PCAError("InvalidArgsException", f"Template {template} is not supported.")
        not_after = self._not_after(body.get("Validity"))
        now = datetime.datetime.now(datetime.timezone.utc)
        if not_after <= now or not_after > self.root.not_valid_after_utc:
            raise PCAError("ValidationException", "The validity period is not within the CA's validity period.")
        token = body.get("IdempotencyToken")
        der = csr.public_bytes(serialization.Encoding.DER)
        with self._lock:
            if token and (token, der) in self._tokens:
                return {"CertificateArn": self._tokens[(token, der)]}
        builder = (
            x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.root.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False))
        if m:
            builder = (builder
                       .add_extension(x509.BasicConstraints(ca=True, path_length=int(m.group(1))), critical=True)
                       .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                    key_encipherment=False, data_encipherment=False,
                                                    key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                    encipher_only=False, decipher_only=False), critical=True))
        else:
            builder = (builder
                       .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                       .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                    key_encipherment=True, data_encipherment=False,
                                                    key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                    encipher_only=False, decipher_only=False), critical=True))
        with contextlib.suppress(x509.ExtensionNotFound):  # SANs pass through from the CSR
            builder = builder.add_extension(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                                            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        arn = f"{self.arn}/certificate/{cert.serial_number:x}"
        with self._lock:
            self.issued.append(Issued(arn, cert, template))
            if token:
                self._tokens[(token, der)] = arn
        return {"CertificateArn": arn}

    @staticmethod
    def _not_after(validity: Any) -> datetime.datetime:
        if not isinstance(validity, dict) or not isinstance(validity.get("Value"), int):
            raise PCAError("ValidationException", "1 validation error detected: Value null at 'validity'.")
        value, kind = validity["Value"], validity.get("Type")
        now = datetime.datetime.now(datetime.timezone.utc)
        if kind in ("ABSOLUTE", "END_DATE"):
            if kind == "END_DATE":  # YYYYMMDDHHMMSS
                return datetime.datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=datetime.timezone.utc)
            return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
        units = {"DAYS": 86400, "MONTHS": 30 * 86400, "YEARS": 365 * 86400}
        if kind not in units:
            raise PCAError("ValidationException", f"Validity type {kind} is not valid.")
        return now + datetime.timedelta(seconds=value * units[kind])

    def get_certificate(self, body: dict[str, Any]) -> dict[str, Any]:
        self._ca(body)
        with self._lock:
            found = next((i for i in self.issued if i.arn == body.get("CertificateArn")), None)
            if found is None:
                raise PCAError("ResourceNotFoundException", f"Could not find certificate {body.get('CertificateArn')}.")
            found.polls += 1
            if found.polls <= self.pending_polls:
                raise PCAError("RequestInProgressException", "The request is still in progress.")
        return {"Certificate": found.certificate.public_bytes(serialization.Encoding.PEM).decode(),
                "CertificateChain": self.root_pem()}

    def handle(self, target: str, authorization: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        ops = {"DescribeCertificateAuthority": self.describe_certificate_authority,
               "IssueCertificate": self.issue_certificate, "GetCertificate": self.get_certificate}
        try:
            if not re.match(r"AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/[a-z0-9-]+/acm-pca/aws4_request, ", authorization):
                raise PCAError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
            prefix, _, op = target.partition(".")
            if prefix != "ACMPrivateCA" or op not in ops:
                raise PCAError("UnknownOperationException", f"unknown operation {target!r}")
            if content_type.split(";")[0].strip() != JSON_11:
                raise PCAError("SerializationException", f"unexpected content type {content_type!r}")
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise PCAError("SerializationException", "the request body is not JSON") from None
            self.calls.append(op)
            return 200, ops[op](body)
        except PCAError as exc:
            return exc.status, {"__type": exc.code, "message": exc.message}


def _handler(pca: ACMPCA) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/":
                status, body = 404, {"__type": "UnknownOperationException", "message": f"no route for {self.path}"}
            else:
                status, body = pca.handle(self.headers.get("X-Amz-Target", ""), self.headers.get("Authorization", ""),
                                          self.headers.get("Content-Type", ""), raw)
            out = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", JSON_11)
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    return Handler


@contextlib.contextmanager
def acm_pca_server(pending_polls: int = 1) -> Iterator[ACMPCA]:
    """Serve one loopback ACM-PCA on 127.0.0.1 (an ephemeral port) until the block ends."""
    pca = ACMPCA(pending_polls=pending_polls)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pca))
    server.daemon_threads = True
    pca.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="acm-pca", daemon=True)
    thread.start()
    try:
        yield pca
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
