"""spire-server admin commands against a real `spire-server run` process.

Each test starts its own server (tests/integration/conftest.py, helpers/harness.py: sqlite datastore,
memory key manager, join_token attestor, trust domain example.org) and drives
it only through the CLI, the way an operator or Ansible would.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.helpers.harness import TD, ServerHandle

WEB = f"spiffe://{TD}/web"


def load_pem_certs(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def is_ca(cert: x509.Certificate) -> bool:
    return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def chains_to(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> bool:
    """Each certificate is signed by the next; the last by one of the roots."""
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    for root in roots:
        try:
            chain[-1].verify_directly_issued_by(root)
            return True
        except (ValueError, TypeError, Exception):
            continue
    return False


def create_web_entry(server: ServerHandle, *extra: str, check: bool = True):  # type: ignore[no-untyped-def]
    return server.cli("entry", "create", "-parentID", f"spiffe://{TD}/host", "-spiffeID", WEB,
                      "-selector", "unix:uid:1000", *extra, check=check)


def test_token_then_entry_create_then_show_json_round_trip(spire_server: ServerHandle) -> None:
    token = spire_server.token("-spiffeID", f"spiffe://{TD}/host", "-ttl", "120")
    assert len(token) >= 8
    out = spire_server.cli("token", "generate").stdout
    assert out.startswith("Token: ") and out.endswith("Warning: Missing SPIFFE ID.\n")

    created = json.loads(create_web_entry(spire_server, "-dns", "web.example.org", "-x509SVIDTTL", "600",
                                          "-hint", "web", "-output", "json").stdout)
    result = created["results"][0]
    assert result["status"] == {"code": 0, "message": "OK"}
    entry = result["entry"]
    assert entry["id"] and entry["spiffe_id"] == {"trust_domain": TD, "path": "/web"}

    shown = json.loads(spire_server.cli("entry", "show", "-spiffeID", WEB, "-output", "json").stdout)
    assert shown["entries"] == [entry]
    assert shown["entries"][0]["dns_names"] == ["web.example.org"] and shown["entries"][0]["x509_svid_ttl"] == 600
    assert shown["entries"][0]["selectors"] == [{"type": "unix", "value": "uid:1000"}]

    pretty = spire_server.cli("entry", "show", "-entryID", entry["id"]).stdout
    assert pretty.startswith(f"Found 1 entry\nEntry ID                : {entry['id']}\nSPIFFE ID               : {WEB}\n")
    assert "Hint                    : web\n" in pretty
    assert spire_server.cli("entry", "count", "-spiffeID", WEB).stdout == "1 registration entry\n"


def test_duplicate_entry_reports_already_exists_and_exits_1(spire_server: ServerHandle) -> None:
    create_web_entry(spire_server)
    proc = create_web_entry(spire_server, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(
        'Failed to create the following entry (code: AlreadyExists, msg: "similar entry already exists"):\n'
        "Entry ID                : (none)\n"
        f"SPIFFE ID               : {WEB}\n")
    assert proc.stderr.endswith("Error: failed to create one or more entries\n")


def test_entry_outside_trust_domain_is_invalid_argument_naming_the_field(spire_server: ServerHandle) -> None:
    proc = spire_server.cli("entry", "create", "-parentID", f"spiffe://{TD}/host", "-spiffeID", "spiffe://other.org/web",
                            "-selector", "unix:uid:0", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        'Failed to create the following entry (code: InvalidArgument, msg: "failed to convert entry: invalid spiffe ID: '
        '\\"spiffe://other.org/web\\" is not a member of trust domain \\"example.org\\""):')


def test_entry_update_and_delete(spire_server: ServerHandle) -> None:
    entry_id = json.loads(create_web_entry(spire_server, "-output", "json").stdout)["results"][0]["entry"]["id"]
    out = spire_server.cli("entry", "update", "-entryID", entry_id, "-parentID", f"spiffe://{TD}/host",
                           "-spiffeID", WEB, "-selector", "unix:uid:2000", "-admin").stdout
    assert "Selector                : unix:uid:2000\n" in out and "Admin                   : true\n" in out
    out = spire_server.cli("entry", "delete", "-entryID", entry_id).stdout
    assert out == f"Deleted entry with ID: {entry_id}\n\n\nDeleted 1 entries successfully"
    proc = spire_server.cli("entry", "show", "-entryID", entry_id, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith(f"Error: error fetching entry ID {entry_id}: rpc error: code = NotFound")


def test_bundle_show_pem_is_a_ca_certificate(spire_server: ServerHandle) -> None:
    certs = load_pem_certs(spire_server.cli("bundle", "show", "-format", "pem").stdout)
    assert certs and all(is_ca(c) for c in certs)
    uris = certs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == [f"spiffe://{TD}"]
    doc = json.loads(spire_server.cli("bundle", "show", "-output", "json").stdout)
    assert doc["trust_domain"] == TD and doc["x509_authorities"]


def test_federated_bundle_set_list_delete(spire_server: ServerHandle, tmp_path: Path) -> None:
    # Any CA will do as another trust domain's root: reuse our own.
    pem = tmp_path / "other.pem"
    pem.write_text(spire_server.cli("bundle", "show").stdout)
    assert spire_server.cli("bundle", "set", "-id", "spiffe://other.org", "-path", str(pem)).stdout == "bundle set.\n"
    spiffe_doc = spire_server.cli("bundle", "show", "-format", "spiffe").stdout
    assert spire_server.cli("bundle", "set", "-id", "spiffe://third.org", "-format", "spiffe", input=spiffe_doc).stdout == "bundle set.\n"

    listed = spire_server.cli("bundle", "list").stdout
    assert "* other.org\n" in listed and "* third.org\n" in listed
    assert load_pem_certs(spire_server.cli("bundle", "list", "-id", "spiffe://other.org").stdout) == load_pem_certs(pem.read_text())
    third = json.loads(spire_server.cli("bundle", "list", "-id", "spiffe://third.org", "-format", "spiffe").stdout)
    assert {k["use"] for k in third["keys"]} == {"x509-svid", "jwt-svid"}
    assert spire_server.cli("bundle", "count").stdout == "3 bundles\n"

    assert spire_server.cli("bundle", "delete", "-id", "spiffe://other.org").stdout == "bundle deleted.\n"
    assert "other.org" not in spire_server.cli("bundle", "list").stdout
    proc = spire_server.cli("bundle", "list", "-id", "spiffe://other.org", check=False)
    assert proc.returncode == 1 and "code = NotFound" in proc.stderr


def test_agent_list_is_empty_on_a_new_server(spire_server: ServerHandle) -> None:
    assert spire_server.cli("agent", "list").stdout == "No attested agents found\n"
    assert json.loads(spire_server.cli("agent", "list", "-output", "json").stdout)["agents"] == []
    assert spire_server.cli("agent", "count").stdout == "0 attested agents\n"
    proc = spire_server.cli("agent", "show", "-spiffeID", f"spiffe://{TD}/spire/agent/join_token/none", check=False)
    assert proc.returncode == 1 and "code = NotFound" in proc.stderr


def test_x509_mint_chains_to_the_bundle(spire_server: ServerHandle, tmp_path: Path) -> None:
    out = spire_server.cli("x509", "mint", "-spiffeID", WEB, "-dns", "web.example.org").stdout
    svid_text, rest = out.split("\nPrivate key:\n")
    key_text, roots_text = rest.split("\nRoot CAs:\n")
    chain = load_pem_certs(svid_text.removeprefix("X509-SVID:\n"))
    roots = load_pem_certs(spire_server.cli("bundle", "show").stdout)
    assert load_pem_certs(roots_text) == roots
    assert chains_to(chain, roots)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert "web.example.org" in san.get_values_for_type(x509.DNSName)
    key = serialization.load_pem_private_key(key_text.encode(), None)
    assert key.public_key().public_numbers() == chain[0].public_key().public_numbers()  # type: ignore[union-attr]

    spire_server.cli("x509", "mint", "-spiffeID", WEB, "-write", str(tmp_path))
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    assert chains_to(load_pem_certs((tmp_path / "svid.pem").read_text()), load_pem_certs((tmp_path / "bundle.pem").read_text()))


def test_jwt_mint_verifies_with_the_bundle_jwt_key(spire_server: ServerHandle) -> None:
    token = spire_server.cli("jwt", "mint", "-spiffeID", WEB, "-audience", "db", "-audience", "cache").stdout.strip()
    jwks = json.loads(spire_server.cli("bundle", "show", "-format", "spiffe").stdout)
    kid = pyjwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["use"] == "jwt-svid" and k["kid"] == kid]
    key = pyjwt.PyJWK(jwk)
    claims = pyjwt.decode(token, key.key, algorithms=[pyjwt.get_unverified_header(token)["alg"]], audience="cache")
    assert claims["sub"] == WEB and set(claims["aud"]) == {"db", "cache"}
    doc = json.loads(spire_server.cli("jwt", "mint", "-spiffeID", WEB, "-audience", "x", "-output", "json").stdout)
    assert doc["svid"]["id"] == {"trust_domain": TD, "path": "/web"} and doc["svid"]["token"].count(".") == 2
