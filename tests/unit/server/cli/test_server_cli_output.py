"""spire-server admin commands without a server: argument checks and SPIRE's output formats."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from spire_py.common import cliprinter
from spire_py.common.cli import CommandError
from spire_py.proto.spire.api.types import bundle_pb2, entry_pb2
from spire_py.server.cli import bundle as bundle_cli
from spire_py.server.cli import arguments
from spire_py.server.cli import entry as entry_cli
from spire_py.server.cli.main import app

NOSOCK = "/nonexistent/spire-test/api.sock"


def make_ca(key=None, cn: str = "ca") -> tuple[x509.Certificate, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


# ---------------------------------------------------------------- command-line checks


@pytest.mark.parametrize(
    "argv, message",
    [
        (["entry", "create"], "Error: at least one selector is required"),
        (["entry", "create", "-selector", "unix:uid:0"], "Error: a parent ID is required if the node flag is not set"),
        (["entry", "create", "-selector", "unix:uid:0", "-parentID", "spiffe://example.org/p"], "Error: a SPIFFE ID is required"),
        (["entry", "create", "-selector", "unix:uid:0", "-node", "-federatesWith", "spiffe://other.org"], "Error: node entries can not federate"),
        (["entry", "create", "-selector", "unix", "-parentID", "spiffe://example.org/p", "-spiffeID", "spiffe://example.org/w"],
         'Error: selector "unix" must be formatted as type:value'),
        (["entry", "create", "-selector", "a:b", "-parentID", "spiffe://example.org/p", "-spiffeID", "spiffe://example.org/w", "-x509SVIDTTL", "-1"],
         "Error: a positive x509-SVID TTL is required"),
        (["entry", "create", "-selector", "a:b", "-parentID", "spiffe://example.org/p", "-spiffeID", "spiffe://example.org/w", "-jwtSVIDTTL", "-1"],
         "Error: a positive JWT-SVID TTL is required"),
        (["entry", "create", "-selector", "a:b", "-parentID", "spiffe://example.org/p", "-spiffeID", "example.org/w"],
         "Error: scheme is missing or invalid"),
        (["entry", "create", "-selector", "a:b", "-parentID", "spiffe://Example.org/p", "--spiffeID", "spiffe://example.org/w"],
         "Error: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"),
        (["entry", "update", "-selector", "a:b"], "Error: entry ID is required"),
        (["entry", "update", "-entryID", "x", "-selector", "a:b"], "Error: a parent ID is required"),
        (["entry", "delete"], "Error: an entry ID is required"),
        (["entry", "show", "-entryID", "x", "-spiffeID", "spiffe://example.org/w"], "Error: the -entryID flag can't be combined with others"),
        (["entry", "show", "-selector", "a:b", "-matchSelectorsOn", "most"], 'Error: match behavior "most" unknown'),
        (["entry", "show", "-parentID", "spiffe://example.org/a//b"], 'Error: error parsing parent ID "spiffe://example.org/a//b": path cannot contain empty segments'),
        (["entry", "count", "-spiffeID", "spiffe://example.org/a/"], 'Error: error parsing SPIFFE ID "spiffe://example.org/a/": path cannot have a trailing slash'),
        (["bundle", "set"], "Error: id flag is required"),
        (["bundle", "set", "-id", "spiffe://other.org", "-format", "der"], 'Error: invalid format: "der"'),
        (["bundle", "delete"], "Error: id is required"),
        (["bundle", "delete", "-id", "spiffe://other.org", "-mode", "nuke"], 'Error: unsupported mode "nuke"'),
        (["agent", "show"], "Error: a SPIFFE ID is required"),
        (["agent", "evict", "-spiffeID", "spiffe://"], "Error: trust domain is missing"),
        (["agent", "ban"], "Error: a SPIFFE ID is required"),
        (["agent", "list", "-expiresBefore", "tomorrow"], 'Error: date is not valid: parsing time "tomorrow"'),
        (["agent", "list", "-selector", "x", ], 'Error: error parsing selector "x": selector "x" must be formatted as type:value'),
        (["x509", "mint"], "Error: spiffeID must be specified"),
        (["x509", "mint", "-spiffeID", "spiffe://example.org/a/./b"], "Error: path cannot contain dot segments"),
        (["jwt", "mint", "-spiffeID", "spiffe://example.org/w"], "Error: at least one audience must be specified"),
        (["jwt", "mint", "-audience", "x"], "Error: spiffeID must be specified"),
        (["token", "generate", "-spiffeID", "spiffe://example.org/a?b"],
         "Error: path segment characters are limited to letters, numbers, dots, dashes, and underscores"),
        (["token", "generate", "-output", "yaml"], 'Error: invalid value "yaml" for flag -output: bad formatter flag: unknown format option: "yaml"'),
    ],
)
def test_invalid_arguments_fail_before_dialing(argv, message, capsys):
    assert app.main([*argv, "-socketPath", NOSOCK]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1, "one line on stderr"


def test_missing_socket_is_one_line(capsys):
    assert app.main(["bundle", "show", "--socketPath", NOSOCK]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: connection error:") and NOSOCK in err


def test_all_server_admin_commands_are_registered():
    words = {" ".join(k) for k in app.commands}
    for cmd in ("token generate", "entry create", "entry update", "entry delete", "entry show", "entry count",
                "bundle show", "bundle list", "bundle set", "bundle delete", "bundle count", "agent list",
                "agent show", "agent count", "agent evict", "agent ban", "agent purge", "x509 mint", "jwt mint"):
        assert cmd in words


# ---------------------------------------------------------------- SPIFFE IDs and selectors


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "cannot be empty"),
        ("http://example.org/a", "scheme is missing or invalid"),
        ("spiffe://", "trust domain is missing"),
        ("spiffe:///a", "trust domain is missing"),
        ("spiffe://example.org:80/a", "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"),
        ("spiffe://example.org/a/../b", "path cannot contain dot segments"),
        ("spiffe://example.org/a b", "path segment characters are limited to letters, numbers, dots, dashes, and underscores"),
    ],
)
def test_spiffe_id_errors_read_like_go_spiffe(value, reason):
    with pytest.raises(CommandError, match=f"^{reason}$"):
        arguments.split_spiffe_id(value)


def test_spiffe_id_and_trust_domain_parsing():
    assert arguments.split_spiffe_id("spiffe://example.org") == ("example.org", "")
    assert arguments.split_spiffe_id("spiffe://example.org/ns/A_b-1.2") == ("example.org", "/ns/A_b-1.2")
    assert arguments.trust_domain_name("spiffe://other.org") == "other.org"
    assert arguments.trust_domain_name("other.org") == "other.org"
    with pytest.raises(CommandError, match="trust domain is missing"):
        arguments.trust_domain_name("")


def test_selector_value_keeps_everything_after_the_first_colon():
    s = arguments.parse_selector("k8s:pod-label:app:web")
    assert (s.type, s.value) == ("k8s", "pod-label:app:web")
    s = arguments.parse_selector("unix:")
    assert (s.type, s.value) == ("unix", "")


# ---------------------------------------------------------------- JSON as SPIRE prints it


def test_proto_json_uses_proto_names_sorted_keys_and_keeps_defaults():
    e = entry_pb2.Entry(id="abc", x509_svid_ttl=0, revision_number=3)
    e.spiffe_id.trust_domain = "example.org"
    e.spiffe_id.path = "/w<>&"
    text = cliprinter.go_json(cliprinter.proto_json(e))
    doc = json.loads(text)
    assert doc["spiffe_id"] == {"path": "/w<>&", "trust_domain": "example.org"}
    assert doc["revision_number"] == "3" and doc["expires_at"] == "0"  # int64 as strings
    assert doc["selectors"] == [] and doc["admin"] is False and doc["x509_svid_ttl"] == 0
    assert "parent_id" not in doc and "additional_attributes" not in doc  # unset messages dropped
    assert list(doc) == sorted(doc)
    assert " " not in text.replace('"example.org"', "")
    assert "\\u003c\\u003e\\u0026" in text


def test_go_quote_and_times():
    assert cliprinter.go_quote('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert cliprinter.go_time(cliprinter.unix_time(0)) == "1970-01-01 00:00:00 +0000 UTC"
    half = dt.datetime(2024, 1, 2, 3, 4, 5, 500000, dt.timezone.utc)
    assert cliprinter.go_time(half) == "2024-01-02 03:04:05.5 +0000 UTC"  # Go prints a fraction only when set
    assert cliprinter.rfc3339(86400) == "1970-01-02T00:00:00Z"
    assert cliprinter.pluralize("Found 1 ", "entry", "entries", 1) == "Found 1 entry"
    assert cliprinter.pluralize("Found 0 ", "entry", "entries", 0) == "Found 0 entries"


@pytest.mark.parametrize("value, seconds", [(0, 0), (1, 1), (1.5, 2), (0.000000001, 1), (3600, 3600), (-1.5, 0)])
def test_ttl_rounds_up_to_whole_seconds(value, seconds):
    assert arguments.ttl_seconds(value) == seconds


# ---------------------------------------------------------------- entries


def full_entry() -> entry_pb2.Entry:
    e = entry_pb2.Entry(
        id="e1", revision_number=2, downstream=True, x509_svid_ttl=3600, expires_at=1_700_000_000,
        federates_with=["other.org"], dns_names=["web.example.org"], admin=True, store_svid=True, hint="web",
    )
    e.spiffe_id.trust_domain, e.spiffe_id.path = "example.org", "/web"
    e.parent_id.trust_domain, e.parent_id.path = "example.org", "/agent"
    e.selectors.add(type="unix", value="uid:1000")
    e.additional_attributes.jwt_svid_include_jti = True
    return e


def test_print_entry_matches_spire_layout():
    out: list[str] = []
    entry_cli.print_entry(full_entry(), out.append)
    assert "".join(out) == (
        "Entry ID                : e1\n"
        "SPIFFE ID               : spiffe://example.org/web\n"
        "Parent ID               : spiffe://example.org/agent\n"
        "Revision                : 2\n"
        "Downstream              : true\n"
        "X509-SVID TTL           : 3600\n"
        "JWT-SVID TTL            : default\n"
        "Expiration time         : 2023-11-14 22:13:20 +0000 UTC\n"
        "Selector                : unix:uid:1000\n"
        "FederatesWith           : other.org\n"
        "DNS name                : web.example.org\n"
        "Admin                   : true\n"
        "StoreSvid               : true\n"
        "Hint                    : web\n"
        "JwtSvidIncludeJti       : true\n"
        "\n"
    )


def test_print_entry_without_id_says_none():
    out: list[str] = []
    entry_cli.print_entry(entry_pb2.Entry(), out.append)
    assert "".join(out).startswith("Entry ID                : (none)\nSPIFFE ID               : \n")


def test_entries_sort_like_spire():
    def mk(path, parent, ttl=0, sels=()):
        e = entry_pb2.Entry(x509_svid_ttl=ttl)
        e.spiffe_id.trust_domain, e.spiffe_id.path = "example.org", path
        e.parent_id.trust_domain, e.parent_id.path = "example.org", parent
        for t, v in sels:
            e.selectors.add(type=t, value=v)
        return e

    got = entry_cli.sort_entries([mk("/b", "/p"), mk("/a", "/q"), mk("/a", "/p", 10), mk("/a", "/p", 0, [("u", "2"), ("u", "1")])])
    assert [(e.spiffe_id.path, e.parent_id.path, e.x509_svid_ttl) for e in got] == [("/a", "/p", 0), ("/a", "/p", 10), ("/a", "/q", 0), ("/b", "/p", 0)]
    assert [s.value for s in got[0].selectors] == ["1", "2"]


def test_data_file_is_spire_registration_entries_json():
    doc = {"entries": [{
        "selectors": [{"type": "unix", "value": "uid:1111"}],
        "spiffe_id": "spiffe://example.org/Blog", "parent_id": "spiffe://example.org/spire/agent/join_token/x",
        "x509_svid_ttl": 200, "jwt_svid_ttl": 30, "admin": True, "dns_names": ["a.example.org"],
        "federates_with": ["spiffe://other.org"], "entryExpiry": 1234, "Hint": "h", "store_svid": True,
        "additional_attributes": {"disable_x509_svid_prefetch": True},
    }, {"selectors": [{"type": "a", "value": "b"}], "spiffe_id": "spiffe://example.org/x", "parent_id": "spiffe://example.org/y", "downstream": True}]}
    first, second = entry_cli.entries_from_json(json.dumps(doc))
    assert arguments.id_string(first.spiffe_id) == "spiffe://example.org/Blog"
    assert (first.x509_svid_ttl, first.jwt_svid_ttl, first.expires_at, first.hint) == (200, 30, 1234, "h")
    assert list(first.federates_with) == ["other.org"] and first.admin and first.store_svid
    assert first.additional_attributes.disable_x509_svid_prefetch
    assert second.downstream and not second.HasField("additional_attributes")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"spiffe_id": "spiffe://example.org/a", "parent_id": "nope"}, "invalid parent ID: scheme is missing or invalid"),
        ({"spiffe_id": "", "parent_id": "spiffe://example.org/a"}, "invalid SPIFFE ID: cannot be empty"),
        ({"spiffe_id": "spiffe://example.org/a", "parent_id": "spiffe://example.org/b", "federates_with": ["Bad"]},
         "invalid federated trust domain: trust domain characters"),
        ({"spiffe_id": "spiffe://example.org/a", "parent_id": "spiffe://example.org/b", "x509_svid_ttl": "10"},
         "json: cannot unmarshal string into Go struct field"),
    ],
)
def test_data_file_errors(entry, message):
    with pytest.raises(CommandError, match=message):
        entry_cli.entries_from_json(json.dumps({"entries": [entry]}))


# ---------------------------------------------------------------- bundles


def api_bundle() -> tuple[bundle_pb2.Bundle, x509.Certificate, object]:
    cert, _ = make_ca()
    jwt_key = ec.generate_private_key(ec.SECP256R1())
    b = bundle_pb2.Bundle(trust_domain="example.org", refresh_hint=300, sequence_number=7)
    b.x509_authorities.add(asn1=cert.public_bytes(serialization.Encoding.DER))
    b.jwt_authorities.add(key_id="kid1", public_key=jwt_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return b, cert, jwt_key


def test_spiffe_bundle_document_layout_and_round_trip():
    b, cert, _ = api_bundle()
    doc = bundle_cli.spiffe_bundle_doc(b)
    assert list(doc) == ["keys", "spiffe_sequence", "spiffe_refresh_hint"]
    x509_key, jwt_key = doc["keys"]
    assert list(x509_key) == ["use", "kty", "crv", "x", "y", "x5c"] and x509_key["use"] == "x509-svid"
    assert base64.b64decode(x509_key["x5c"][0]) == cert.public_bytes(serialization.Encoding.DER)
    assert list(jwt_key) == ["use", "kty", "kid", "crv", "x", "y"] and jwt_key["kid"] == "kid1"
    back = bundle_cli.bundle_from_spiffe(json.dumps(doc).encode(), "spiffe://example.org")
    assert back == b


def test_spiffe_bundle_with_rsa_jwt_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    b = bundle_pb2.Bundle(trust_domain="example.org")
    b.jwt_authorities.add(key_id="r", public_key=key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    doc = bundle_cli.spiffe_bundle_doc(b)
    assert doc == {"keys": [{"use": "jwt-svid", "kty": "RSA", "kid": "r", "n": doc["keys"][0]["n"], "e": "AQAB"}]}
    assert bundle_cli.bundle_from_spiffe(json.dumps(doc).encode(), "example.org") == b


@pytest.mark.parametrize(
    "doc, message",
    [
        ({}, "unable to parse to spiffe bundle: spiffebundle: no authorities found"),
        ({"keys": [{"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "", "y": ""}]}, "unable to parse to spiffe bundle"),
    ],
)
def test_spiffe_bundle_errors(doc, message):
    with pytest.raises(CommandError, match=message):
        bundle_cli.bundle_from_spiffe(json.dumps(doc).encode(), "other.org")


def test_spiffe_bundle_rejects_x509_key_that_is_not_the_certificate_key():
    b, _, _ = api_bundle()
    doc = bundle_cli.spiffe_bundle_doc(b)
    doc["keys"][0]["x"], doc["keys"][1]["x"] = doc["keys"][1]["x"], doc["keys"][0]["x"]
    doc["keys"][0]["y"], doc["keys"][1]["y"] = doc["keys"][1]["y"], doc["keys"][0]["y"]
    with pytest.raises(CommandError, match="public keys mismatch"):
        bundle_cli.bundle_from_spiffe(json.dumps(doc).encode(), "example.org")


def test_pem_bundle_parsing():
    c1, _ = make_ca(cn="one")
    c2, _ = make_ca(cn="two")
    pem = c1.public_bytes(serialization.Encoding.PEM) + b"junk between\n" + c2.public_bytes(serialization.Encoding.PEM)
    assert bundle_cli.certs_from_pem(pem) == [c.public_bytes(serialization.Encoding.DER) for c in (c1, c2)]
    with pytest.raises(CommandError, match="^unable to parse bundle data: no PEM blocks$"):
        bundle_cli.certs_from_pem(b"not pem")
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(CommandError, match='expected block type "CERTIFICATE"; got "PRIVATE KEY"'):
        bundle_cli.certs_from_pem(key_pem)


def test_pem_output_is_go_pem_encoding():
    cert, _ = make_ca()
    der = cert.public_bytes(serialization.Encoding.DER)
    assert bundle_cli.pem_encode(der) == cert.public_bytes(serialization.Encoding.PEM).decode()
    assert bundle_cli.split_der(der + der) == [der, der]
    with pytest.raises(CommandError, match="^unable to parse certificates ASN.1 DER data: x509: malformed certificate$"):
        bundle_cli.split_der(der + der[:-1])


def test_bundle_list_header_and_formats():
    b, cert, _ = api_bundle()
    out: list[str] = []
    bundle_cli.write_bundle(out.append, b, "PEM", header=True)
    assert "".join(out) == ("****************************************\n* example.org\n****************************************\n"
                            + cert.public_bytes(serialization.Encoding.PEM).decode())
    out = []
    bundle_cli.write_bundle(out.append, b, "spiffe", header=False)
    text = "".join(out)
    assert text.startswith('{\n    "keys": [\n        {\n            "use": "x509-svid",') and text.endswith("}\n")
    with pytest.raises(CommandError, match='invalid format: "der"'):
        bundle_cli.write_bundle(out.append, b, "der", header=False)
