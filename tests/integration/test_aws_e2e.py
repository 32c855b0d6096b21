"""AWS end to end: real spire-server and spire-agent processes, moto in server mode and an
instance metadata service on loopback (both started and stopped here). The server's boto3
reaches moto through ``AWS_ENDPOINT_URL``, the SDK's own variable; the metadata service
serves documents signed by a test CA the server trusts through ``aws_ca_certificates``."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography import x509

from spire_py.common.x509util import verify_chain
from tests.integration.helpers.harness import TD, AgentHandle, ServerHandle, svid_for, wait_for
from tests.unit.helpers.aws import (
    ACCOUNT, REGION, IIDSigner, active_root_pca, aws_env, document, imds_server, launch_instance, moto_server,
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


def test_server_with_aws_pca_on_moto_stops_with_a_clear_error(
        aws: Callable[[str], Any], make_server: Callable[..., ServerHandle]) -> None:
    """moto's ACM PCA issues from the CSR but puts no CA extensions in certificates made with the
    SubordinateCACertificate templates; the server's CA checks refuse that at start."""
    arn = active_root_pca(aws("acm-pca"))
    with pytest.raises(AssertionError) as err:
        make_server(extra_plugins=f'''UpstreamAuthority "aws_pca" {{ plugin_data {{
            region = "{REGION}"
            certificate_authority_arn = "{arn}"
        }} }}''')
    assert "upstream-signed X509 CA is not a CA certificate" in str(err.value)
