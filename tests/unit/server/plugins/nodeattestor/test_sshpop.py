"""sshpop node attestation: the real server and agent plugins against each other."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType
from grpclib.const import Status

from spire_py.agent.plugins.nodeattestor.base import AgentAttestationError
from spire_py.agent.plugins.nodeattestor.sshpop import SshPopAttestor as AgentSshPop
from spire_py.common import plugin as registry
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.plugins import sshpop as pop
from spire_py.server.plugins.nodeattestor.base import AttestationError
from spire_py.server.plugins.nodeattestor.sshpop import SshPopAttestor as ServerSshPop

TD = "example.org"

# SPIRE's own fixture (test/fixture/nodeattestor/sshpop): an OpenSSH-made, self-signed
# ed25519 host certificate for "foo-host"; SPIRE's test expects the agent ID below.
SPIRE_KEY = b"""-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBAFjwLCif6jGFCAXh+wSzEQhP25FLzB1/uzmYQDZOOUgAAAKCdN05XnTdO
VwAAAAtzc2gtZWQyNTUxOQAAACBAFjwLCif6jGFCAXh+wSzEQhP25FLzB1/uzmYQDZOOUg
AAAECqiQ5qAtvGENjROr1TPJqNHr3ipz2o5m/LZJYrfFWDHkAWPAsKJ/qMYUIBeH7BLMRC
E/bkUvMHX+7OZhANk45SAAAAHHRqdWxpYW5AdGp1bGlhbi1DMDJYNzREREpHSDYB
-----END OPENSSH PRIVATE KEY-----
"""
SPIRE_CERT = (
    b"ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIHKePFvG6YhtFQBeMVEw+5cvlZ6"
    b"5YHP2vYpHJuBI/fVxAAAAIEAWPAsKJ/qMYUIBeH7BLMRCE/bkUvMHX+7OZhANk45SAAAAAAAAAAAAAAACAAAACGZvby1ob3N0AAAADAAAAAhmb28t"
    b"aG9zdAAAAAAAAAAA//////////8AAAAAAAAAAAAAAAAAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIEAWPAsKJ/qMYUIBeH7BLMRCE/bkUvMHX+7OZhANk4"
    b"5SAAAAUwAAAAtzc2gtZWQyNTUxOQAAAEAJGYmukpFo0c0B5lj7OU1Zn4bFA11DFHKwwYgFSJyx0gAdW74KV8wlfIU+wPj6ot0zojZ2F6eDyfETSDES"
    b"Zy4C\n"
)
SPIRE_CA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEAWPAsKJ/qMYUIBeH7BLMRCE/bkUvMHX+7OZhANk45S"
SPIRE_AGENT_ID = "spiffe://example.org/spire/agent/sshpop/21Aic_muK032oJMhLfU1_CMNcGmfAnvESeuH5zyFw_g"


def _key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


def ca_line(ca: Any) -> str:
    return ca.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def host_cert(host_key: Any, ca: Any, *, principals: tuple[str, ...] = ("node1.example.org",),
              cert_type: SSHCertificateType = SSHCertificateType.HOST, valid_after: int | None = None,
              valid_before: int | None = None, critical: dict[bytes, bytes] | None = None) -> bytes:
    now = int(time.time())
    b = (SSHCertificateBuilder().public_key(host_key.public_key()).serial(42).type(cert_type).key_id(b"node1")
         .valid_after(now - 60 if valid_after is None else valid_after)
         .valid_before(now + 3600 if valid_before is None else valid_before))
    b = b.valid_principals([p.encode() for p in principals]) if principals else b.valid_for_all_principals()
    for name, value in (critical or {}).items():
        b = b.add_critical_option(name, value)
    return b.sign(ca).public_bytes() + b"\n"


def openssh_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def agent(tmp_path: Path, key: Any, cert: bytes, key_bytes: bytes | None = None) -> AgentSshPop:
    (tmp_path / "ssh_host_key").write_bytes(key_bytes or openssh_key(key))
    (tmp_path / "ssh_host_key-cert.pub").write_bytes(cert)
    return AgentSshPop.configure({"host_key_path": str(tmp_path / "ssh_host_key"),
                                  "host_cert_path": str(tmp_path / "ssh_host_key-cert.pub")},
                                 PluginContext(TD, side="agent"))


def server(*cas: Any, **extra: Any) -> ServerSshPop:
    return ServerSshPop.configure({"cert_authorities": [ca if isinstance(ca, str) else ca_line(ca) for ca in cas],
                                   **extra}, PluginContext(TD))


async def run(srv: ServerSshPop, agt: AgentSshPop, transcript: list[bytes] | None = None) -> Any:
    async def challenge(data: bytes) -> bytes:
        answer = await agt.respond(data)
        if transcript is not None:
            transcript.extend([data, answer])
        return answer

    return await srv.attest(await agt.payload(), challenge)


def fingerprint(cert_line: bytes) -> str:
    digest = hashlib.sha256(base64.b64decode(cert_line.split()[1])).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


# --- successful attestation --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
async def test_host_cert_from_trusted_ca_attests_with_fingerprint_id(tmp_path: Path, kind: str) -> None:
    ca, key = _key("ed25519"), _key(kind)
    cert = host_cert(key, ca)
    result = await run(server(ca), agent(tmp_path, key, cert))
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/sshpop/{fingerprint(cert)}"
    assert result.selectors == []
    assert result.can_reattest is True


async def test_spire_fixture_gives_spire_agent_id(tmp_path: Path) -> None:
    agt = agent(tmp_path, None, SPIRE_CERT, key_bytes=SPIRE_KEY)
    result = await run(server(SPIRE_CA), agt)
    assert str(result.agent_id) == SPIRE_AGENT_ID


async def test_template_with_hostname_from_canonical_domain(tmp_path: Path) -> None:
    ca, key = _key("ec"), _key("ed25519")
    srv = server(ca, canonical_domain="example.org",
                 agent_path_template="/{{ .PluginName }}/{{ .Hostname }}/{{ index .ValidPrincipals 0 }}")
    result = await run(srv, agent(tmp_path, key, host_cert(key, ca)))
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/sshpop/node1/node1.example.org"


async def test_cert_authorities_path_and_list_are_united(tmp_path: Path) -> None:
    ca1, ca2, key = _key("ed25519"), _key("rsa"), _key("ed25519")
    path = tmp_path / "cas.pub"
    path.write_text(f"# trusted host CAs\n{ca_line(ca2)} ops@example\n\n")
    srv = ServerSshPop.configure({"cert_authorities": [ca_line(ca1)], "cert_authorities_path": str(path)},
                                 PluginContext(TD))
    sub = tmp_path / "a"
    sub.mkdir()
    assert (await run(srv, agent(sub, key, host_cert(key, ca2)))).agent_id.path.startswith("/spire/agent/sshpop/")
    assert (await run(srv, agent(tmp_path, key, host_cert(key, ca1)))).agent_id.path.startswith("/spire/agent/sshpop/")


async def test_wire_documents_have_spire_shapes(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ec")
    cert = host_cert(key, ca)
    agt = agent(tmp_path, key, cert)
    assert json.loads(await agt.payload()) == {"Certificate": base64.b64encode(base64.b64decode(cert.split()[1])).decode()}
    transcript: list[bytes] = []
    await run(server(ca), agt, transcript)
    challenge, response = (json.loads(d) for d in transcript)
    assert set(challenge) == {"Nonce"} and len(base64.b64decode(challenge["Nonce"])) == 32
    assert response["Signature"]["Format"] == "ecdsa-sha2-nistp384" and response["Signature"]["Rest"] is None


async def test_go_agent_ssh_rsa_sha1_signature_is_accepted(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("rsa")
    agt = agent(tmp_path, key, host_cert(key, ca))

    async def go_agent(data: bytes) -> bytes:
        nonce = b"\x07" * 32
        signed = pop.combine_nonces(base64.b64decode(json.loads(data)["Nonce"]), nonce)
        sig = key.sign(signed, padding.PKCS1v15(), hashes.SHA1())
        return json.dumps({"Nonce": base64.b64encode(nonce).decode(),
                           "Signature": {"Format": "ssh-rsa", "Blob": base64.b64encode(sig).decode(), "Rest": None}}).encode()

    assert (await server(ca).attest(await agt.payload(), go_agent)).agent_id.path.startswith("/spire/agent/sshpop/")


def test_plugins_are_registered_under_sshpop() -> None:
    assert registry.lookup("server", "NodeAttestor", "sshpop") is ServerSshPop
    assert registry.lookup("agent", "NodeAttestor", "sshpop") is AgentSshPop


# --- refusals ------------------------------------------------------------------------------

async def _refused(srv: ServerSshPop, agt: AgentSshPop, message: str, status: Status = Status.PERMISSION_DENIED) -> None:
    with pytest.raises(AttestationError, match=message) as err:
        await run(srv, agt)
    assert err.value.status == status


async def test_cert_from_untrusted_ca_is_refused(tmp_path: Path) -> None:
    ca, rogue, key = _key("ed25519"), _key("ed25519"), _key("ed25519")
    await _refused(server(ca), agent(tmp_path, key, host_cert(key, rogue)), "no authorities for hostname")


async def test_user_cert_is_not_a_host_cert(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    cert = host_cert(key, ca, cert_type=SSHCertificateType.USER)
    await _refused(server(ca), agent(tmp_path, key, cert), "certificate presented as a host key has type 1")


async def test_expired_cert_is_refused(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    now = int(time.time())
    cert = host_cert(key, ca, valid_after=now - 7200, valid_before=now - 3600)
    await _refused(server(ca), agent(tmp_path, key, cert), "cert has expired")


async def test_not_yet_valid_cert_is_refused(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    now = int(time.time())
    cert = host_cert(key, ca, valid_after=now + 3600, valid_before=now + 7200)
    await _refused(server(ca), agent(tmp_path, key, cert), "cert is not yet valid")


async def test_principal_outside_canonical_domain_is_refused(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    cert = host_cert(key, ca, principals=("node1.evil.org", "node1.example.org"))
    await _refused(server(ca, canonical_domain="example.org"), agent(tmp_path, key, cert),
                   'cert principal is not in domain ".example.org"')


async def test_cert_without_principals_is_refused(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    await _refused(server(ca), agent(tmp_path, key, host_cert(key, ca, principals=())), "no valid principals")


async def test_unsupported_critical_option_is_refused(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    cert = host_cert(key, ca, critical={b"force-command": b"/bin/true"})
    await _refused(server(ca), agent(tmp_path, key, cert), 'unsupported critical option "force-command"')


async def test_tampered_cert_signature_is_refused(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    agt = agent(tmp_path, key, host_cert(key, ca))
    doc = json.loads(await agt.payload())
    blob = bytearray(base64.b64decode(doc["Certificate"]))
    blob[-1] ^= 1  # last byte of the CA signature
    payload = json.dumps({"Certificate": base64.b64encode(bytes(blob)).decode()}).encode()

    async def never(data: bytes) -> bytes:
        raise AssertionError

    with pytest.raises(AttestationError, match="certificate signature does not verify"):
        await server(ca).attest(payload, never)


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
async def test_signature_by_a_different_host_key_is_refused(tmp_path: Path, kind: str) -> None:
    ca, key, thief = _key("ed25519"), _key(kind), _key(kind)
    agt = agent(tmp_path, key, host_cert(key, ca))
    payload = await agt.payload()

    async def challenge(data: bytes) -> bytes:
        return pop.calculate_response(thief, data)

    with pytest.raises(AttestationError, match="failed to verify signature: ssh: signature did not verify") as err:
        await server(ca).attest(payload, challenge)
    assert err.value.status == Status.PERMISSION_DENIED


def test_agent_refuses_a_host_key_that_does_not_match_its_certificate(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    with pytest.raises(PluginConfigError, match="does not match") as err:
        agent(tmp_path, _key("ed25519"), host_cert(key, ca))
    assert err.value.key == "host_key_path"


async def test_replayed_challenge_response_is_refused(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ec")
    srv, agt = server(ca), agent(tmp_path, key, host_cert(key, ca))
    transcript: list[bytes] = []
    await run(srv, agt, transcript)

    async def replay(data: bytes) -> bytes:
        assert data != transcript[0]
        return transcript[1]

    with pytest.raises(AttestationError, match="signature did not verify") as err:
        await srv.attest(await agt.payload(), replay)
    assert err.value.status == Status.PERMISSION_DENIED


@pytest.mark.parametrize("reply, status, message", [
    (b"garbage", Status.INVALID_ARGUMENT, "failed to unmarshal challenge response"),
    (b'{"Nonce": "%%%"}', Status.INVALID_ARGUMENT, "illegal base64"),
    (b'{"Nonce": "AAAA", "Signature": {"Format": "ssh-ed25519", "Blob": "AAAA"}}', Status.PERMISSION_DENIED,
     "invalid response nonce size"),
    (json.dumps({"Nonce": base64.b64encode(b"n" * 32).decode()}).encode(), Status.PERMISSION_DENIED,
     "missing signature"),
    (json.dumps({"Nonce": base64.b64encode(b"n" * 32).decode(),
                 "Signature": {"Format": "ssh-rsa", "Blob": "AAAA"}}).encode(), Status.PERMISSION_DENIED,
     "signature type ssh-rsa for key type ssh-ed25519"),
])
async def test_garbled_response_is_refused(tmp_path: Path, reply: bytes, status: Status, message: str) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    agt = agent(tmp_path, key, host_cert(key, ca))

    async def challenge(data: bytes) -> bytes:
        return reply

    with pytest.raises(AttestationError, match=message) as err:
        await server(ca).attest(await agt.payload(), challenge)
    assert err.value.status == status


@pytest.mark.parametrize("payload, message", [
    (b"", "missing attestation payload"),
    (b"[]", "failed to unmarshal data"),
    (b"{}", "no certificate in response"),
    (b'{"Certificate": "AAAAB3NzaC1yc2E="}', "failed to parse public key"),
])
async def test_malformed_payload_is_invalid_argument(payload: bytes, message: str) -> None:
    async def never(data: bytes) -> bytes:
        raise AssertionError

    with pytest.raises(AttestationError, match=message) as err:
        await server(_key("ed25519")).attest(payload, never)
    assert err.value.status == Status.INVALID_ARGUMENT


async def test_plain_public_key_instead_of_certificate_is_refused() -> None:
    key = _key("ed25519")
    line = ca_line(key).encode()
    payload = json.dumps({"Certificate": line.split()[1].decode()}).encode()

    async def never(data: bytes) -> bytes:
        raise AssertionError

    with pytest.raises(AttestationError, match="not a certificate"):
        await server(key).attest(payload, never)


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("conf, key, message", [
    ({}, "cert_authorities", 'missing required config value for "cert_authorities"'),
    ({"cert_authorities": []}, "cert_authorities_path", "at least one cert authority"),
    ({"cert_authorities": ["ssh-ed25519 bm90IGEga2V5"]}, "cert_authorities", "failed to parse public key"),
    ({"cert_authorities": ["hello"]}, "cert_authorities", "no key found"),
    ({"cert_authorities_path": "/nonexistent/cas.pub"}, "cert_authorities_path", "failed to get cert authorities"),
    ({"cert_authorities": [SPIRE_CA], "agent_path_template": "/{{ .Hostname"}, "agent_path_template",
     "failed to parse agent svid template"),
    ({"cert_authorities": [SPIRE_CA], "canonical_domian": "x"}, "canonical_domian", "unknown configuration key"),
])
def test_server_config_errors_name_the_key(conf: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PluginConfigError, match=message) as err:
        ServerSshPop.check_config(conf, PluginContext(TD))
    assert err.value.key == key


def test_empty_authorities_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty.pub").write_text("\n\n")
    with pytest.raises(PluginConfigError, match="no data found in file"):
        ServerSshPop.check_config({"cert_authorities_path": str(tmp_path / "empty.pub")}, PluginContext(TD))


@pytest.mark.parametrize("conf, key, message", [
    ({"host_key_path": "/nonexistent/key"}, "host_key_path", "failed to read host key file"),
    ({"host_cert_path": "/nonexistent/cert"}, "host_cert_path", "failed to read host cert file"),
    ({"host_kye_path": "/x"}, "host_kye_path", "unknown configuration key"),
])
def test_agent_config_errors(tmp_path: Path, conf: dict[str, Any], key: str, message: str) -> None:
    ca, k = _key("ed25519"), _key("ed25519")
    (tmp_path / "key").write_bytes(openssh_key(k))
    (tmp_path / "cert").write_bytes(host_cert(k, ca))
    full = {"host_key_path": str(tmp_path / "key"), "host_cert_path": str(tmp_path / "cert"), **conf}
    with pytest.raises(PluginConfigError, match=message) as err:
        AgentSshPop.check_config(full, PluginContext(TD, side="agent"))
    assert err.value.key == key


def test_agent_defaults_to_the_rsa_host_key_paths() -> None:
    with pytest.raises(PluginConfigError, match='"/etc/ssh/ssh_host_rsa_key"'):
        AgentSshPop.check_config({}, PluginContext(TD, side="agent"))


def test_agent_refuses_a_plain_public_key_as_certificate(tmp_path: Path) -> None:
    key = _key("ed25519")
    with pytest.raises(PluginConfigError, match="not a certificate"):
        agent(tmp_path, key, ca_line(key).encode())


async def test_agent_reports_credentials_that_vanish_after_configure(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    agt = agent(tmp_path, key, host_cert(key, ca))
    (tmp_path / "ssh_host_key-cert.pub").unlink()
    with pytest.raises(AgentAttestationError, match="failed to read host cert file"):
        await agt.payload()


async def test_agent_answers_no_challenge_before_sending_its_payload(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    with pytest.raises(AgentAttestationError, match="before the attestation payload"):
        await agent(tmp_path, key, host_cert(key, ca)).respond(b'{"Nonce": ""}')


async def test_agent_reports_a_malformed_challenge(tmp_path: Path) -> None:
    ca, key = _key("ed25519"), _key("ed25519")
    agt = agent(tmp_path, key, host_cert(key, ca))
    await agt.payload()
    with pytest.raises(AgentAttestationError, match="invalid challenge nonce size"):
        await agt.respond(b'{"Nonce": "AAAA"}')
