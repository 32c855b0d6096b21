"""AWS end to end: real spire-server and spire-agent processes, moto in server mode, an
instance metadata service and an ACM-PCA on loopback (all started and stopped here). The
server's boto3 reaches moto through ``AWS_ENDPOINT_URL``, the SDK's own variable; the metadata
service serves documents signed by a test CA the server trusts through ``aws_ca_certificates``;
aws_pca talks to ``helpers/acm_pca.py`` (a PCA that really signs, with the subordinate-CA
template's extensions, which moto leaves out) through its ``endpoint`` key or
``AWS_ENDPOINT_URL_ACM_PCA``."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography import x509

from spire_py.common.x509util import verify_chain
from spire_py.server.plugins.upstreamauthority.aws_pca import DEFAULT_CA_SIGNING_TEMPLATE_ARN
from tests.integration.helpers.acm_pca import ACMPCA, acm_pca_server
from tests.integration.helpers.harness import TD, AgentHandle, ServerHandle, svid_for, wait_for
from tests.unit.helpers.aws import (
    ACCOUNT, REGION, IIDSigner, aws_env, document, imds_server, launch_instance, moto_server,
    reset_moto,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """boto3 clients on moto; the same environment reaches the server processes started here."""
    import boto3

    reset_moto(moto_endpoint)
    for name, value in aws_env(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    yield lambda service: boto3.client(service, region_name=REGION)


@pytest.fixture
def pca(monkeypatch: pytest.MonkeyPatch) -> Iterator[ACMPCA]:
    """The loopback ACM-PCA (moto's gives subordinate-CA templates no CA extensions); test
    credentials so boto3 signs, and no endpoint but what each test sets."""
    with acm_pca_server() as fixture:
        for name, value in aws_env(fixture.url).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        yield fixture


@pytest.fixture(scope="module")
def signer() -> IIDSigner:
    return IIDSigner()


def server_plugin(ca_file: Path) -> str:
    return f'NodeAttestor "aws_iid" {{ plugin_data {{ aws_ca_certificates = {{ "{REGION}" = "{ca_file}" }} }} }}'


def agent_plugin(imds_url: str) -> str:
    return f'NodeAttestor "aws_iid" {{ plugin_data {{ ec2_metadata_endpoint = "{imds_url}" }} }}'


def agent_json(server: ServerHandle, agent_id: str) -> dict[str, Any]:
    return json.loads(server.cli("agent", "show", "-spiffeID", agent_id, "-output", "json").stdout)


def refused(agent: AgentHandle) -> str:
    wait_for(lambda: not agent.proc.alive(), 60, "the agent to give up")
    code = agent.proc.stop()
    logs = agent.proc.logs()
    assert code == 1, f"agent exited with {code}:\n{logs}"
    return logs


def test_agent_attests_with_aws_iid_and_a_workload_gets_an_svid_by_tag(
        aws: Callable[[str], Any], signer: IIDSigner, make_server: Callable[..., ServerHandle],
        start_agent: Callable[..., AgentHandle], tmp_path: Path) -> None:
    inst = launch_instance(aws("ec2"), aws("iam"), {"app": "web"})
    iid_ = inst["InstanceId"]
    server = make_server(extra_plugins=server_plugin(signer.write_cert(tmp_path / "aws-ca.pem")))
    alias = f"spiffe://{TD}/aws/web-nodes"
    server.cli("entry", "create", "-node", "-spiffeID", alias, "-selector", "aws_iid:tag:app:web")
    server.cli("entry", "create", "-parentID", alias, "-spiffeID", f"spiffe://{TD}/web", "-selector",
               f"unix:uid:{os.getuid()}")

    with imds_server(signer.sign(document(iid_))) as imds:
        agent = start_agent(server, node_attestor=agent_plugin(imds.url))
        agent_id = f"spiffe://{TD}/spire/agent/aws_iid/{ACCOUNT}/{REGION}/{iid_}"
        shown = agent_json(server, agent_id)
        assert shown["attestation_type"] == "aws_iid"
        assert shown["can_reattest"] is False
        assert {f'{s["type"]}:{s["value"]}' for s in shown["selectors"]} == {
            f"aws_iid:account_id:{ACCOUNT}", f"aws_iid:az:{REGION}a", "aws_iid:image:id:ami-12c6146b",
            f"aws_iid:instance:id:{iid_}", f"aws_iid:region:{REGION}", "aws_iid:tag:app:web",
            f"aws_iid:sg:id:{inst['_sg']}", "aws_iid:sg:name:spire-node-sg",
            f"aws_iid:iamrole:arn:aws:iam::{ACCOUNT}:role/spire-node-role",
        }
        assert imds.requests[0] == "PUT /latest/api/token"
        assert svid_for(agent.socket, f"spiffe://{TD}/web")["spiffe_id"] == f"spiffe://{TD}/web"

        # The same document again (another process on the instance, or a copy): refused.
        replay = start_agent(server, node_attestor=agent_plugin(imds.url), wait=False)
        assert "attestation data has already been used to attest an agent" in refused(replay)
    assert "Attestation data has already been used to attest an agent" in server.proc.logs()


@pytest.mark.parametrize("case, message", [
    ("other-key", "no trusted certificate matches the signer"),
    ("tampered", "does not match the verified PKCS7 content"),
    ("other-account", 'is not owned by account "999999999999"'),
    ("unknown-instance", "failed to describe instance"),
])
def test_forged_or_foreign_documents_are_refused(
        aws: Callable[[str], Any], signer: IIDSigner, make_server: Callable[..., ServerHandle],
        start_agent: Callable[..., AgentHandle], tmp_path: Path, case: str, message: str) -> None:
    inst = launch_instance(aws("ec2"), aws("iam"), {"app": "web"})
    doc = document(inst["InstanceId"])
    data = {
        "other-key": lambda: IIDSigner("Impostor").sign(doc),
        "tampered": lambda: dataclasses.replace(signer.sign(doc), document=doc.replace("m1.small", "m5.24xlarge")),
        "other-account": lambda: signer.sign(document(inst["InstanceId"], account="999999999999")),
        "unknown-instance": lambda: signer.sign(document("i-0000000000000dead")),
    }[case]()
    server = make_server(extra_plugins=server_plugin(signer.write_cert(tmp_path / "aws-ca.pem")))
    with imds_server(data) as imds:
        agent = start_agent(server, node_attestor=agent_plugin(imds.url), wait=False)
        logs = refused(agent)
    assert message in logs, logs
    assert json.loads(server.cli("agent", "list", "-output", "json").stdout).get("agents", []) in ([], None)


def _ca(name: str, issuer: Any = None) -> tuple[Any, x509.Certificate]:
    import time

    from cryptography.x509.oid import NameOID

    from spire_py.common.keys import generate_key
    from spire_py.common.x509util import create_ca_certificate

    key = generate_key("ec-p256")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return key, create_ca_certificate(key.public_key(), issuer[0] if issuer else key, subject=subject,
                                      ttl=86400 * 30, now=time.time(), issuer=issuer[1] if issuer else None)


def test_server_with_awssecret_issues_svids_chaining_to_the_upstream_root(
        aws: Callable[[str], Any], make_server: Callable[..., ServerHandle],
        start_agent: Callable[..., AgentHandle]) -> None:
    from cryptography.hazmat.primitives import serialization

    from spire_py.common.keys import private_key_to_pem

    root_key, root = _ca("AWS Secrets Root")
    mid_key, mid = _ca("AWS Secrets Intermediate", (root_key, root))
    sm = aws("secretsmanager")
    pem = serialization.Encoding.PEM
    arn = {name: sm.create_secret(Name=f"spire/{name}", SecretString=value)["ARN"] for name, value in {
        "cert": mid.public_bytes(pem).decode(), "key": private_key_to_pem(mid_key).decode(),
        "bundle": root.public_bytes(pem).decode()}.items()}
    server = make_server(extra_plugins=f'''UpstreamAuthority "awssecret" {{ plugin_data {{
        region = "{REGION}"
        cert_file_arn = "{arn["cert"]}"
        key_file_arn = "{arn["key"]}"
        bundle_file_arn = "{arn["bundle"]}"
    }} }}''')
    bundle = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    assert root in bundle

    token = server.token()
    server.cli("entry", "create", "-parentID", f"spiffe://{TD}/spire/agent/join_token/{token}",
               "-spiffeID", f"spiffe://{TD}/web", "-selector", f"unix:uid:{os.getuid()}")
    agent = start_agent(server, token=token)
    got = svid_for(agent.socket, f"spiffe://{TD}/web")
    chain = x509.load_pem_x509_certificates(got["chain"].encode())
    assert mid in chain  # the server CA comes with the intermediate from cert_file_arn
    verify_chain(chain[0], chain[1:], [root])


def _pca_plugin(arn: str, endpoint: str = "") -> str:
    line = f'endpoint = "{endpoint}"' if endpoint else ""
    return f'''UpstreamAuthority "aws_pca" {{ plugin_data {{
        region = "{REGION}"
        certificate_authority_arn = "{arn}"
        {line}
    }} }}'''


def _mint(server: ServerHandle) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """``spire-server x509 mint``: the SVID chain (leaf first) and the bundle it came with."""
    out = json.loads(server.cli("x509", "mint", "-spiffeID", f"spiffe://{TD}/web", "-output", "json").stdout)
    load = lambda field: [x509.load_der_x509_certificate(base64.b64decode(c)) for c in out[field]]  # noqa: E731
    return load("x509_svid"), load("root_cas")


def _is_pathlen0_ca(cert: x509.Certificate) -> bool:
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    return bc.ca and bc.path_length == 0 and ku.key_cert_sign and ku.crl_sign


def test_server_with_aws_pca_issues_svids_chaining_to_the_pca_root(
        pca: ACMPCA, make_server: Callable[..., ServerHandle]) -> None:
    """The plugin's ``endpoint`` key points boto3 at the loopback ACM-PCA."""
    server = make_server(extra_plugins=_pca_plugin(pca.arn, endpoint=pca.url))
    assert pca.calls[:2] == ["DescribeCertificateAuthority", "IssueCertificate"]
    assert pca.calls.count("GetCertificate") >= 2  # the certificate_issued waiter polled past "in progress"
    [issued] = pca.issued
    assert issued.template == DEFAULT_CA_SIGNING_TEMPLATE_ARN
    assert _is_pathlen0_ca(issued.certificate)
    assert issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]

    bundle = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    assert pca.root in bundle
    chain, roots = _mint(server)
    assert chain[1] == issued.certificate  # the server's intermediate, issued by the PCA
    assert pca.root in roots
    path = verify_chain(chain[0], chain[1:], [pca.root])
    assert path[-1] == pca.root and len(path) == 3


def test_server_with_aws_pca_rotates_through_a_second_pca_issued_intermediate(
        pca: ACMPCA, make_server: Callable[..., ServerHandle]) -> None:
    """With a one-minute ca_ttl (as in test_ca_rotation_e2e) the next CA is prepared at half its
    life (~30 s) and activated at 5/6 (~50 s): the server asks ACM-PCA again, and SVIDs minted
    after activation chain through the new intermediate to the same root."""
    server = make_server(extra_server='ca_ttl = "60s"\n    default_x509_svid_ttl = "10s"',
                         extra_plugins=_pca_plugin(pca.arn, endpoint=pca.url))
    first = pca.issued_certificates()[0]
    chain, _ = _mint(server)
    assert chain[1] == first

    wait_for(lambda: len(pca.issued) >= 2, 90, "the server to ask ACM-PCA for its next intermediate")
    second = pca.issued_certificates()[1]
    assert _is_pathlen0_ca(second) and second.public_key() != first.public_key()

    wait_for(lambda: _mint(server)[0][1] == second, 60, "SVIDs from the second intermediate")
    chain, roots = _mint(server)
    assert chain[1] == second and pca.root in roots
    verify_chain(chain[0], chain[1:], [pca.root])
    assert server.proc.alive()


def test_server_with_aws_pca_and_an_unknown_ca_arn_stops_with_aws_error(
        pca: ACMPCA, make_server: Callable[..., ServerHandle], monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``endpoint`` key: boto3 finds the service through AWS_ENDPOINT_URL_ACM_PCA."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_ACM_PCA", pca.url)
    unknown = pca.arn[:-12] + "000000000000"
    with pytest.raises(AssertionError) as err:
        make_server(extra_plugins=_pca_plugin(unknown))
    assert "failed to describe CertificateAuthority" in str(err.value)
    assert "ResourceNotFoundException" in str(err.value)
    assert f"Could not find certificate authority {unknown}" in str(err.value)
    assert pca.calls == ["DescribeCertificateAuthority"] and not pca.issued


def test_loopback_acm_pca_wants_signed_aws_json_requests(pca: ACMPCA) -> None:
    """The fixture itself: AWS JSON 1.1 as boto3 sends it, and nothing unsigned."""
    import urllib.error
    import urllib.request

    def post(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(pca.url + "/", json.dumps({"CertificateAuthorityArn": pca.arn}).encode(), {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "ACMPrivateCA.DescribeCertificateAuthority", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert post({}) == (403, {"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"})
    auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/acm-pca/aws4_request, "
                             "SignedHeaders=host, Signature=00"}
    status, body = post(auth)
    assert status == 200 and body["CertificateAuthority"]["Status"] == "ACTIVE"
    assert post({**auth, "X-Amz-Target": "ACMPrivateCA.DeleteCertificateAuthority"})[1]["__type"] == \
        "UnknownOperationException"
