"""aws_iid (agent): the payload read from a metadata service on loopback, as SPIRE sends it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spire_py.agent.plugins.nodeattestor.aws_iid import AWSIIDAttestor
from spire_py.agent.plugins.nodeattestor.base import AgentAttestationError
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.server.plugins.context import ServerPluginContext
from spire_py.server.plugins.nodeattestor.aws_iid import AWSIIDAttestor as ServerAWSIID
from tests.unit.helpers.aws import IIDSigner, document, imds_server

CTX = PluginContext("example.org", side="agent")


async def test_payload_is_the_document_and_both_signatures_over_imdsv2() -> None:
    signer = IIDSigner()
    signed = signer.sign(document("i-0abc"))
    with imds_server(signed) as imds:
        plugin = AWSIIDAttestor.configure({"ec2_metadata_endpoint": imds.url + "/"}, CTX)
        body = json.loads(await plugin.payload())
    assert body == {"document": signed.document, "signature": signed.signature, "rsa2048": signed.rsa2048}
    assert imds.requests[0] == "PUT /latest/api/token"
    assert sorted(imds.requests[1:]) == ["GET /latest/dynamic/instance-identity/document",
                                         "GET /latest/dynamic/instance-identity/rsa2048",
                                         "GET /latest/dynamic/instance-identity/signature"]


async def test_the_server_plugin_verifies_what_the_agent_sends(tmp_path: Path) -> None:
    signer = IIDSigner()
    with imds_server(signer.sign(document("i-0abc"))) as imds:
        payload = await AWSIIDAttestor.configure({"ec2_metadata_endpoint": imds.url}, CTX).payload()
    server = ServerAWSIID.configure({"aws_ca_certificates": {"us-east-1": str(signer.write_cert(tmp_path / "ca.pem"))}},
                                    ServerPluginContext("example.org"))
    assert server.verify(payload).instance_id == "i-0abc"


async def test_endpoint_from_the_sdk_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with imds_server(IIDSigner().sign(document("i-0env"))) as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        body = json.loads(await AWSIIDAttestor.configure({}, CTX).payload())
    assert '"i-0env"' in body["document"]


async def test_metadata_service_missing_the_document_is_an_error() -> None:
    with imds_server(None) as imds:
        plugin = AWSIIDAttestor.configure({"ec2_metadata_endpoint": imds.url}, CTX)
        with pytest.raises(AgentAttestationError, match="HTTP 404"):
            await plugin.payload()


async def test_unreachable_metadata_service_is_an_error() -> None:
    with imds_server(None) as imds:
        url = imds.url
    plugin = AWSIIDAttestor.configure({"ec2_metadata_endpoint": url}, CTX)
    with pytest.raises(AgentAttestationError, match="unable to fetch instance identity"):
        await plugin.payload()


@pytest.mark.parametrize("data, key, message", [
    ({"ec2_metadata_endpoint": "169.254.169.254"}, "ec2_metadata_endpoint", "must be an http:// or https:// URL"),
    ({"ec2_metadata_endpoint": "ftp://x"}, "ec2_metadata_endpoint", "must be an http:// or https:// URL"),
    ({"ec2_metadata_endpoint": True}, "ec2_metadata_endpoint", "expected a string"),
    ({"endpoint": "http://x"}, "endpoint", 'unknown configuration key "endpoint"'),
])
def test_config_refusals(data: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError) as err:
        AWSIIDAttestor.check_config(data, CTX)
    assert err.value.key == key
    assert message in str(err.value)


def test_spire_sample_config_validates() -> None:
    AWSIIDAttestor.check_config({}, CTX)
    AWSIIDAttestor.check_config({"ec2_metadata_endpoint": "http://169.254.169.254/"}, CTX)
