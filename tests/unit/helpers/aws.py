"""AWS test fixtures: a test CA that signs instance identity documents as AWS does (RSA-2048
PKCS#7 and RSA-1024-style PKCS#1 signatures), an instance metadata service on loopback
(IMDSv2 only: no token, no answer), moto in server mode on loopback, and the environment
that points boto3 at it (``AWS_ENDPOINT_URL``, the standard variable: no test-only code path).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
import socket
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from spire_py.common.plugins import aws_iid as iid

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"


def aws_env(endpoint: str) -> dict[str, str]:
    """What a process needs to talk to moto and nothing else."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


class IIDSigner:
    """A stand-in for AWS's regional signing key: RSA-2048, self-signed certificate."""

    def __init__(self, name: str = "Test AWS IID CA") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=365))
                     .sign(self.key, hashes.SHA256()))

    def write_cert(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def sign(self, document: str) -> iid.AttestationData:
        der = (pkcs7.PKCS7SignatureBuilder().set_data(document.encode())
               .add_signer(self.cert, self.key, hashes.SHA256())
               .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.NoCerts, pkcs7.PKCS7Options.Binary]))
        legacy = self.key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())
        # AWS wraps the base64 at 64 columns and drops the PEM armour.
        body = base64.encodebytes(der).decode().strip()
        return iid.AttestationData(document, base64.b64encode(legacy).decode(), body)


def document(instance_id: str, account: str = ACCOUNT, region: str = REGION, image_id: str = "ami-12c6146b",
             az: str = REGION + "a") -> str:
    """An instance identity document laid out as the metadata service serves it."""
    return json.dumps({
        "accountId": account, "architecture": "x86_64", "availabilityZone": az, "billingProducts": None,
        "devpayProductCodes": None, "marketplaceProductCodes": None, "imageId": image_id,
        "instanceId": instance_id, "instanceType": "m1.small", "kernelId": None, "pendingTime":
        "2026-01-01T00:00:00Z", "privateIp": "10.0.0.1", "ramdiskId": None, "region": region, "version": "2017-09-30",
    }, indent=2)


@dataclass
class IMDS:
    """The metadata service of one instance; tests swap what it serves."""

    data: Optional[iid.AttestationData] = None
    tokens: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    url: str = ""


def _handler(state: IMDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: str = "") -> None:
            raw = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_PUT(self) -> None:
            state.requests.append(f"PUT {self.path}")
            if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self._send(400)
            token = secrets.token_urlsafe(16)
            state.tokens.add(token)
            self._send(200, token)

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            if self.headers.get("X-aws-ec2-metadata-token") not in state.tokens:
                return self._send(401)
            data = state.data
            paths = {} if data is None else {
                "/latest/dynamic/instance-identity/document": data.document,
                "/latest/dynamic/instance-identity/signature": data.signature,
                "/latest/dynamic/instance-identity/rsa2048": data.rsa2048,
            }
            if self.path not in paths:
                return self._send(404)
            self._send(200, paths[self.path])

    return Handler


@contextlib.contextmanager
def imds_server(data: Optional[iid.AttestationData] = None) -> Iterator[IMDS]:
    state = IMDS(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="imds", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    req = urllib.request.Request(endpoint + "/moto-api/reset", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10):
        pass


def launch_instance(ec2: Any, iam: Any, tags: dict[str, str], profile: str = "spire-node") -> dict[str, Any]:
    """A running instance with a security group, tags and an instance profile holding one role."""
    iam.create_role(RoleName=f"{profile}-role", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=f"{profile}-role")
    sg = ec2.create_security_group(GroupName=f"{profile}-sg", Description="spire nodes")
    kw: dict[str, Any] = {}
    if tags:
        kw["TagSpecifications"] = [{"ResourceType": "instance",
                                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    out = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SecurityGroupIds=[sg["GroupId"]],
                            IamInstanceProfile={"Name": profile}, **kw)
    instance: dict[str, Any] = out["Instances"][0]
    instance["_sg"] = sg["GroupId"]
    return instance


def active_root_pca(acmpca: Any, key_algorithm: str = "RSA_2048", signing_algorithm: str = "SHA256WITHRSA") -> str:
    """A root CA in ACM PCA, the AWS way: create it, have it sign its own CSR with the root
    template, import that certificate (it becomes ACTIVE). Returns its ARN."""
    arn: str = acmpca.create_certificate_authority(
        CertificateAuthorityConfiguration={"KeyAlgorithm": key_algorithm, "SigningAlgorithm": signing_algorithm,
                                           "Subject": {"Organization": "Upstream", "CommonName": "PCA Root"}},
        CertificateAuthorityType="ROOT")["CertificateAuthorityArn"]
    csr = acmpca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
    cert_arn = acmpca.issue_certificate(CertificateAuthorityArn=arn, Csr=csr.encode(), SigningAlgorithm=signing_algorithm,
                                        TemplateArn="arn:aws:acm-pca:::template/RootCACertificate/V1",
                                        Validity={"Type": "YEARS", "Value": 10})["CertificateArn"]
    cert = acmpca.get_certificate(CertificateAuthorityArn=arn, CertificateArn=cert_arn)["Certificate"]
    acmpca.import_certificate_authority_certificate(CertificateAuthorityArn=arn, Certificate=cert.encode())
    return arn
