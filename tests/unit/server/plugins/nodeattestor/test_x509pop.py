"""x509pop node attestation: the real server and agent plugins against each other."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from grpclib.const import Status

from spire_py.agent.plugins.nodeattestor.base import AgentAttestationError
from spire_py.agent.plugins.nodeattestor.x509pop import X509PopAttestor as AgentX509Pop
from spire_py.common import plugin as registry
from spire_py.common.plugin import PluginConfigError, PluginContext
from spire_py.common.plugins import x509pop as pop
from spire_py.server.plugins.context import ServerPluginContext
from spire_py.server.plugins.nodeattestor.base import AttestationError
from spire_py.server.plugins.nodeattestor.x509pop import X509PopAttestor as ServerX509Pop

TD = "example.org"
NOW = dt.datetime.now(dt.timezone.utc)


def _key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if kind == "ec384" else ec.SECP256R1())


def make_cert(cn: str, key: Any, issuer: tuple[x509.Certificate, Any] | None = None, *, ca: bool = False,
              digital_signature: bool = True, not_after: dt.datetime | None = None,
              uris: tuple[str, ...] = (), serial: int | None = None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=2))
        .not_valid_after(not_after or NOW + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class PKI:
    root: x509.Certificate
    root_key: Any
    intermediate: x509.Certificate
    intermediate_key: Any


@pytest.fixture
def pki() -> PKI:
    root_key = _key("ec")
    root = make_cert("root", root_key, ca=True)
    inter_key = _key("ec")
    inter = make_cert("intermediate", inter_key, (root, root_key), ca=True)
    return PKI(root, root_key, inter, inter_key)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def server(tmp_path: Path, roots: list[x509.Certificate], **extra: Any) -> ServerX509Pop:
    conf = {"ca_bundle_path": write(tmp_path, "ca.pem", pem(*roots)), **extra}
    return ServerX509Pop.configure(conf, PluginContext(TD))


def agent(tmp_path: Path, certs: list[x509.Certificate], key: Any,
          intermediates: list[x509.Certificate] | None = None) -> AgentX509Pop:
    conf = {
        "certificate_path": write(tmp_path, "agent.crt.pem", pem(*certs)),
        "private_key_path": write(tmp_path, "agent.key.pem", key_pem(key)),
    }
    if intermediates:
        conf["intermediates_path"] = write(tmp_path, "intermediates.pem", pem(*intermediates))
    return AgentX509Pop.configure(conf, PluginContext(TD, side="agent"))


async def run(srv: ServerX509Pop, agt: AgentX509Pop, transcript: list[bytes] | None = None) -> Any:
    async def challenge(data: bytes) -> bytes:
        answer = await agt.respond(data)
        if transcript is not None:
            transcript.extend([data, answer])
        return answer

    return await srv.attest(await agt.payload(), challenge)


def sha1(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# --- successful attestation -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec", "ec384"])
async def test_leaf_signed_by_trusted_root_attests_with_fingerprint_id(tmp_path: Path, pki: PKI, kind: str) -> None:
    key = _key(kind)
    leaf = make_cert("node1.example.org", key, (pki.root, pki.root_key), serial=0x1A2B3)
    result = await run(server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key))
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/x509pop/{sha1(leaf)}"
    assert [str(s) for s in result.selectors] == [
        "x509pop:subject:cn:node1.example.org",
        f"x509pop:ca:fingerprint:{sha1(pki.root)}",
        "x509pop:serialnumber:01a2b3",
    ]
    assert result.can_reattest is True


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_chain_through_intermediate_gives_a_selector_per_issuer(tmp_path: Path, pki: PKI, kind: str) -> None:
    key = _key(kind)
    leaf = make_cert("node2", key, (pki.intermediate, pki.intermediate_key))
    result = await run(server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key, intermediates=[pki.intermediate]))
    values = [s.value for s in result.selectors]
    assert values[1:3] == [f"ca:fingerprint:{sha1(pki.intermediate)}", f"ca:fingerprint:{sha1(pki.root)}"]
    assert all(s.type == "x509pop" for s in result.selectors)


async def test_intermediate_may_follow_the_leaf_in_certificate_path(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("node3", key, (pki.intermediate, pki.intermediate_key))
    agt = agent(tmp_path, [leaf, pki.intermediate], key)
    assert len(json.loads(await agt.payload())["certificates"]) == 2
    result = await run(server(tmp_path, [pki.root]), agt)
    assert str(result.agent_id).endswith(sha1(leaf))


async def test_ca_bundle_paths_trusts_every_file(tmp_path: Path, pki: PKI) -> None:
    other_key = _key("ec")
    other_root = make_cert("other-root", other_key, ca=True)
    conf = {"ca_bundle_paths": [write(tmp_path, "a.pem", pem(other_root)), write(tmp_path, "b.pem", pem(pki.root))]}
    srv = ServerX509Pop.configure(conf, PluginContext(TD))
    key = _key("ec")
    leaf = make_cert("node", key, (pki.root, pki.root_key))
    assert (await run(srv, agent(tmp_path, [leaf], key))).agent_id.path.startswith("/spire/agent/x509pop/")


async def test_agent_path_template_and_uri_san_selectors(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("web-1", key, (pki.root, pki.root_key), serial=0xABC, uris=(
        f"x509pop://{TD}/datacenter/us-east-1", f"x509pop://{TD}/environment/prod", "x509pop://other.org/x/y"))
    srv = server(tmp_path, [pki.root], agent_path_template=(
        "/{{ .PluginName }}/{{ .URISanSelectors.datacenter }}/{{ .Subject.CommonName }}/{{ .SerialNumberHex }}"))
    result = await run(srv, agent(tmp_path, [leaf], key))
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/x509pop/us-east-1/web-1/0abc"
    assert [s.value for s in result.selectors][-2:] == ["san:datacenter:us-east-1", "san:environment:prod"]


async def test_spiffe_mode_uses_the_server_bundle_and_trims_the_svid_prefix(tmp_path: Path, pki: PKI) -> None:
    class Store:
        def fetch_bundle(self, td_id: str) -> Any:
            assert td_id == f"spiffe://{TD}"
            return type("B", (), {"x509_authorities": [pki.root.public_bytes(serialization.Encoding.DER)]})()

    key = _key("ec")
    leaf = make_cert("", key, (pki.root, pki.root_key), uris=(f"spiffe://{TD}/spire-exchange/host-7",))
    srv = ServerX509Pop.configure({"mode": "spiffe"}, ServerPluginContext(TD, datastore=Store()))
    result = await run(srv, agent(tmp_path, [leaf], key))
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/x509pop/host-7"

    outside = make_cert("", key, (pki.root, pki.root_key), uris=(f"spiffe://{TD}/workload/x",))
    with pytest.raises(AttestationError, match="doesnt match SVID prefix"):
        await run(srv, agent(tmp_path, [outside], key))


def test_plugins_are_registered_under_x509pop() -> None:
    assert registry.lookup("server", "NodeAttestor", "x509pop") is ServerX509Pop
    assert registry.lookup("agent", "NodeAttestor", "x509pop") is AgentX509Pop


# --- wire format ---------------------------------------------------------------------

async def test_wire_documents_have_spire_shapes(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    transcript: list[bytes] = []
    await run(server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key), transcript)
    challenge, response = (json.loads(d) for d in transcript)
    assert challenge["rsa_signature"] is None and len(base64.b64decode(challenge["ecdsa_signature"]["nonce"])) == 32
    assert response["rsa_signature"] is None and set(response["ecdsa_signature"]) == {"nonce", "r", "s"}


async def test_keys_match_case_insensitively_as_go_json_does(tmp_path: Path, pki: PKI) -> None:
    key = _key("rsa")
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    payload = json.dumps({"Certificates": [pop.b64(leaf.public_bytes(serialization.Encoding.DER))]}).encode()

    async def challenge(data: bytes) -> bytes:
        resp = pop.calculate_response(key, pop.unmarshal_challenge(data))["rsa_signature"]
        return json.dumps({"RSA_Signature": {"Nonce": pop.b64(resp["nonce"]),
                                              "Signature": pop.b64(resp["signature"])}}).encode()

    result = await server(tmp_path, [pki.root]).attest(payload, challenge)
    assert str(result.agent_id).endswith(sha1(leaf))


# --- refusals --------------------------------------------------------------------------

async def test_certificate_from_untrusted_ca_is_refused(tmp_path: Path, pki: PKI) -> None:
    rogue_key = _key("ec")
    rogue = make_cert("rogue", rogue_key, ca=True)
    key = _key("ec")
    leaf = make_cert("n", key, (rogue, rogue_key))
    with pytest.raises(AttestationError, match="certificate verification failed: .*unknown authority") as err:
        await run(server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key))
    assert err.value.status == Status.PERMISSION_DENIED


async def test_expired_certificate_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("n", key, (pki.root, pki.root_key), not_after=NOW - dt.timedelta(hours=1))
    with pytest.raises(AttestationError, match="expired") as err:
        await run(server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key))
    assert err.value.status == Status.PERMISSION_DENIED


async def test_missing_intermediate_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("n", key, (pki.intermediate, pki.intermediate_key))
    with pytest.raises(AttestationError, match="certificate verification failed"):
        await run(server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_signature_by_a_different_key_is_refused(tmp_path: Path, pki: PKI, kind: str) -> None:
    key, thief_key = _key(kind), _key(kind)
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    agt = agent(tmp_path, [leaf], key)
    payload = await agt.payload()

    async def challenge(data: bytes) -> bytes:
        return pop.marshal_response(pop.calculate_response(thief_key, pop.unmarshal_challenge(data)))

    with pytest.raises(AttestationError, match="challenge response verification failed: .*signature verify failed") as err:
        await server(tmp_path, [pki.root]).attest(payload, challenge)
    assert err.value.status == Status.PERMISSION_DENIED


def test_agent_refuses_a_private_key_that_does_not_match_the_certificate(tmp_path: Path, pki: PKI) -> None:
    leaf = make_cert("n", _key("ec"), (pki.root, pki.root_key))
    with pytest.raises(PluginConfigError, match="does not match"):
        agent(tmp_path, [leaf], _key("ec"))


async def test_replayed_challenge_response_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = _key("rsa")
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    srv, agt = server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key)
    transcript: list[bytes] = []
    await run(srv, agt, transcript)
    old_response = transcript[1]

    async def replay(data: bytes) -> bytes:
        assert data != transcript[0]  # a fresh nonce every time
        return old_response

    with pytest.raises(AttestationError, match="signature verify failed") as err:
        await srv.attest(await agt.payload(), replay)
    assert err.value.status == Status.PERMISSION_DENIED


@pytest.mark.parametrize("reply, status, message", [
    (b"not json", Status.INVALID_ARGUMENT, "unable to unmarshal challenge response"),
    (b'{"ecdsa_signature": {"nonce": "!!"}}', Status.INVALID_ARGUMENT, "illegal base64"),
    (b"{}", Status.PERMISSION_DENIED, "expecting ECDSA response"),
    (b'{"ecdsa_signature": {"nonce": "AAAA", "r": "AQ==", "s": "AQ=="}}', Status.PERMISSION_DENIED,
     "invalid response nonce"),
    (b'{"rsa_signature": {"nonce": "AAAA", "signature": "AQ=="}}', Status.PERMISSION_DENIED,
     "expecting ECDSA response"),
])
async def test_garbled_response_is_refused(tmp_path: Path, pki: PKI, reply: bytes, status: Status,
                                           message: str) -> None:
    key = _key("ec")
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    agt = agent(tmp_path, [leaf], key)

    async def challenge(data: bytes) -> bytes:
        return reply

    with pytest.raises(AttestationError, match=message) as err:
        await server(tmp_path, [pki.root]).attest(await agt.payload(), challenge)
    assert err.value.status == status


async def test_stale_response_with_wrong_length_nonce_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    agt = agent(tmp_path, [leaf], key)

    async def challenge(data: bytes) -> bytes:
        doc = json.loads(await agt.respond(data))
        doc["ecdsa_signature"]["nonce"] = pop.b64(b"\0" * 16)
        return json.dumps(doc).encode()

    with pytest.raises(AttestationError, match="invalid response nonce"):
        await server(tmp_path, [pki.root]).attest(await agt.payload(), challenge)


async def test_leaf_without_digital_signature_usage_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("n", key, (pki.root, pki.root_key), digital_signature=False)
    with pytest.raises(AttestationError, match="not intended for digital signature use"):
        await run(server(tmp_path, [pki.root]), agent(tmp_path, [leaf], key))


@pytest.mark.parametrize("payload, message", [
    (b"", "missing attestation payload"),
    (b"garbage", "failed to unmarshal data"),
    (b'{"certificates": []}', "no certificate to attest"),
    (b'{"certificates": ["AAAA"]}', "unable to parse leaf certificate"),
])
async def test_malformed_payload_is_invalid_argument(tmp_path: Path, pki: PKI, payload: bytes, message: str) -> None:
    async def never(data: bytes) -> bytes:
        raise AssertionError("no challenge for a malformed payload")

    with pytest.raises(AttestationError, match=message) as err:
        await server(tmp_path, [pki.root]).attest(payload, never)
    assert err.value.status == Status.INVALID_ARGUMENT


async def test_too_many_intermediates_is_refused_before_parsing(tmp_path: Path, pki: PKI) -> None:
    payload = pop.marshal_attestation_data([b"x"] * 3)
    srv = server(tmp_path, [pki.root], max_intermediates=1)

    async def never(data: bytes) -> bytes:
        raise AssertionError

    with pytest.raises(AttestationError, match="too many intermediate certificates"):
        await srv.attest(payload, never)


async def test_rsa_key_larger_than_the_limit_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = _key("rsa")
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    with pytest.raises(AttestationError, match="key size too large"):
        await run(server(tmp_path, [pki.root], max_rsa_key_size=1024), agent(tmp_path, [leaf], key))


async def test_template_that_renders_a_path_without_leading_slash_fails(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    leaf = make_cert("n", key, (pki.root, pki.root_key))
    srv = server(tmp_path, [pki.root], agent_path_template="{{ .PluginName }}/{{ .Fingerprint }}")
    with pytest.raises(AttestationError, match='must start with "/"') as err:
        await run(srv, agent(tmp_path, [leaf], key))
    assert err.value.status == Status.INTERNAL


# --- configuration ---------------------------------------------------------------------

@pytest.mark.parametrize("conf, key, message", [
    ({}, "ca_bundle_path", "one of ca_bundle_path or ca_bundle_paths must be configured"),
    ({"ca_bundle_path": "CA", "ca_bundle_paths": ["CA"]}, "ca_bundle_paths", "not both"),
    ({"ca_bundle_path": "CA", "bogus": 1}, "bogus", 'unknown configuration key "bogus"'),
    ({"ca_bundle_path": "CA", "agent_path_template": "/{{ .Fingerprint "}, "agent_path_template",
     "failed to parse agent svid template"),
    ({"ca_bundle_path": "CA", "agent_path_template": "/{{ nope .X }}"}, "agent_path_template", 'function "nope"'),
    ({"ca_bundle_path": "/nonexistent/ca.pem"}, "ca_bundle_path", "unable to load trust bundle"),
    ({"ca_bundle_path": "NOTPEM"}, "ca_bundle_path", "no certificates found in file"),
    ({"ca_bundle_path": "CA", "mode": "spire_pki"}, "mode", "mode can only be either spiffe or external_pki"),
    ({"mode": "spiffe", "ca_bundle_path": "CA"}, "ca_bundle_path", "can not use ca_bundle_path"),
    ({"ca_bundle_path": "CA", "max_intermediates": 0}, "max_intermediates", "greater than 0"),
    ({"ca_bundle_path": "CA", "verify_client_ip": True}, "verify_client_ip", "not supported"),
])
def test_server_config_errors_name_the_key(tmp_path: Path, pki: PKI, conf: dict[str, Any], key: str,
                                           message: str) -> None:
    ca = write(tmp_path, "ca.pem", pem(pki.root))
    notpem = write(tmp_path, "notpem", b"hello")
    conf = {k: ([ca] if v == ["CA"] else ca if v == "CA" else notpem if v == "NOTPEM" else v) for k, v in conf.items()}
    with pytest.raises(PluginConfigError, match=message) as err:
        ServerX509Pop.check_config(conf, PluginContext(TD))
    assert err.value.key == key


def test_spire_sample_config_is_accepted(tmp_path: Path, pki: PKI) -> None:
    conf = {"ca_bundle_path": write(tmp_path, "ca.pem", pem(pki.root)),
            "agent_path_template": "/cn/{{ .Subject.CommonName }}", "max_intermediates": 4,
            "max_rsa_key_size": 8192, "verify_client_ip": False}
    ServerX509Pop.check_config(conf, PluginContext(TD))
    ServerX509Pop.check_config({"mode": "spiffe", "spiffe_prefix": "/exchange"}, PluginContext(TD))


@pytest.mark.parametrize("conf, key, message", [
    ({"certificate_path": "C"}, "private_key_path", "private_key_path is required"),
    ({"private_key_path": "K"}, "certificate_path", "certificate_path is required"),
    ({"private_key_path": "K", "certificate_path": "/nonexistent"}, "certificate_path", "unable to load keypair"),
    ({"private_key_path": "K", "certificate_path": "C", "nope": "x"}, "nope", "unknown configuration key"),
    ({"private_key_path": "K", "certificate_path": "C", "intermediates_path": "/nonexistent"},
     "intermediates_path", "unable to load intermediate certificates"),
])
def test_agent_config_errors(tmp_path: Path, pki: PKI, conf: dict[str, Any], key: str, message: str) -> None:
    k = _key("ec")
    files = {"C": write(tmp_path, "c.pem", pem(make_cert("n", k, (pki.root, pki.root_key)))),
             "K": write(tmp_path, "k.pem", key_pem(k))}
    conf = {name: files.get(v, v) for name, v in conf.items()}
    with pytest.raises(PluginConfigError, match=message) as err:
        AgentX509Pop.configure(conf, PluginContext(TD, side="agent"))
    assert err.value.key == key


def test_agent_validate_checks_keys_but_not_files_as_spire() -> None:
    ctx = PluginContext(TD, side="agent")
    AgentX509Pop.check_config({"private_key_path": "/not/yet/key.pem", "certificate_path": "/not/yet/cert.pem"}, ctx)
    AgentX509Pop.check_config({"spiffe_endpoint_socket": "unix:///run/spire/sockets/other.sock"}, ctx)
    with pytest.raises(PluginConfigError, match="private_key_path is required"):
        AgentX509Pop.check_config({"certificate_path": "/c.pem"}, ctx)


async def test_agent_reports_credentials_that_vanish_after_configure(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    agt = agent(tmp_path, [make_cert("n", key, (pki.root, pki.root_key))], key)
    Path(agt.private_key_path).unlink()
    with pytest.raises(AgentAttestationError, match="unable to load keypair: private key"):
        await agt.payload()


async def test_agent_answers_no_challenge_before_sending_its_payload(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    agt = agent(tmp_path, [make_cert("n", key, (pki.root, pki.root_key))], key)
    with pytest.raises(AgentAttestationError, match="before the attestation payload"):
        await agt.respond(b"{}")


async def test_agent_refuses_a_challenge_for_the_wrong_key_type(tmp_path: Path, pki: PKI) -> None:
    key = _key("ec")
    agt = agent(tmp_path, [make_cert("n", key, (pki.root, pki.root_key))], key)
    await agt.payload()
    with pytest.raises(AgentAttestationError, match="expecting ECDSA challenge"):
        await agt.respond(pop.marshal_challenge({"rsa_signature": {"nonce": b"\1" * 32}, "ecdsa_signature": None}))
