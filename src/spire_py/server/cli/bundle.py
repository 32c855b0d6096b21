"""spire-server bundle show | list | set | delete | count.

Bundles are shown as PEM (X.509 authorities only) or in the SPIFFE bundle
format: a JWKS whose keys carry ``use`` = ``x509-svid`` (with the CA in
``x5c``) or ``jwt-svid`` (with a ``kid``), printed the way go-spiffe marshals
it and indented by four spaces, as SPIRE does.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ...common.cli import CommandError, Context, FlagSet
from ...proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from ...proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from .client import AdminClient, socket_flags
from .main import app
from .printing import (
    PEM_FORMAT, SPIFFE_FORMAT, call, go_quote, is_json, pem_encode, pluralize, print_proto_json, trust_domain_name,
)

Bundle = types_bundle_pb2.Bundle
HEADER = "****************************************\n* {}\n****************************************\n"
X509_USE = "x509-svid"
JWT_USE = "jwt-svid"


# ---------------------------------------------------------------- PEM


def split_der(data: bytes) -> list[bytes]:
    """Certificates concatenated in one ASN.1 DER blob, as x509.ParseCertificates reads them."""
    out = []
    i = 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise CommandError("unable to parse certificates ASN.1 DER data: x509: malformed certificate")
        n = data[i + 1]
        head = 2
        if n & 0x80:
            size = n & 0x7F
            n = int.from_bytes(data[i + 2:i + 2 + size], "big")
            head += size
        end = i + head + n
        if end > len(data):
            raise CommandError("unable to parse certificates ASN.1 DER data: x509: malformed certificate")
        out.append(data[i:end])
        i = end
    return out


def certs_from_pem(data: bytes) -> list[bytes]:
    """pemutil.ParseCertificates: every block must be a CERTIFICATE."""
    text = data.decode("latin-1")
    ders = []
    pos = 0
    while True:
        start = text.find("-----BEGIN ", pos)
        if start < 0:
            break
        kind_end = text.find("-----", start + 11)
        end_marker = text.find("-----END ", kind_end)
        if kind_end < 0 or end_marker < 0:
            break
        kind = text[start + 11:kind_end]
        if kind != "CERTIFICATE":
            raise CommandError(f'unable to parse bundle data: expected block type "CERTIFICATE"; got {go_quote(kind)}')
        body = "".join(text[kind_end + 5:end_marker].split())
        try:
            der = base64.b64decode(body, validate=True)
            x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CommandError(f'unable to parse bundle data: unable to parse "CERTIFICATE" PEM block {len(ders) + 1}: {exc}') from None
        ders.append(der)
        pos = text.find("-----", end_marker + 9) + 5
    if not ders:
        raise CommandError("unable to parse bundle data: no PEM blocks")
    return ders


# ---------------------------------------------------------------- SPIFFE bundle format


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("invalid base64 value")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}
_CURVES_BY_JWK = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


def jwk_fields(key: Any) -> dict[str, Any]:
    """The key parameters of a JWK, in go-jose's field order."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv, size = _CURVES[key.curve.name]
        nums = key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": _b64url(nums.x.to_bytes(size, "big")), "y": _b64url(nums.y.to_bytes(size, "big"))}
    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        return {"kty": "RSA", "n": _b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
                "e": _b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big"))}
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    raise CommandError(f"unsupported key type {type(key).__name__}")


def key_from_jwk(jwk: dict[str, Any]) -> Any:
    kty = jwk.get("kty")
    if kty == "EC":
        curve = _CURVES_BY_JWK.get(jwk.get("crv", ""))
        if curve is None:
            raise ValueError(f"unsupported elliptic curve '{jwk.get('crv')}'")
        x = int.from_bytes(_unb64url(jwk.get("x")), "big")
        y = int.from_bytes(_unb64url(jwk.get("y")), "big")
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    if kty == "RSA":
        n = int.from_bytes(_unb64url(jwk.get("n")), "big")
        e = int.from_bytes(_unb64url(jwk.get("e")), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_unb64url(jwk.get("x")))
    raise ValueError(f"unknown json web key type '{kty}'")


def spiffe_bundle_doc(b: Bundle) -> dict[str, Any]:
    """go-spiffe's spiffebundle.Marshal of an API bundle."""
    keys = []
    for auth in b.x509_authorities:
        cert = x509.load_der_x509_certificate(auth.asn1)
        keys.append({"use": X509_USE, **jwk_fields(cert.public_key()), "x5c": [base64.b64encode(auth.asn1).decode()]})
    for auth in b.jwt_authorities:
        fields = jwk_fields(serialization.load_der_public_key(auth.public_key))
        keys.append({"use": JWT_USE, "kty": fields.pop("kty"), "kid": auth.key_id, **fields})
    doc: dict[str, Any] = {"keys": keys}
    if b.sequence_number > 0:
        doc["spiffe_sequence"] = b.sequence_number
    if b.refresh_hint > 0:
        doc["spiffe_refresh_hint"] = b.refresh_hint
    return doc


def bundle_from_spiffe(data: bytes, trust_domain: str) -> Bundle:
    """util.ParseBundle for the SPIFFE format."""
    td = trust_domain_name(trust_domain)

    def fail(msg: str) -> CommandError:
        return CommandError(f"unable to parse to spiffe bundle: spiffebundle: {msg}")

    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(f"unable to parse JWKS: {exc}") from None
    if not isinstance(doc, dict):
        raise fail("unable to parse JWKS: json: cannot unmarshal into Go value of type spiffebundle.bundleDoc")
    keys = doc.get("keys")
    if keys is None:
        raise fail("no keys found")
    b = Bundle(trust_domain=td)
    if isinstance(doc.get("spiffe_refresh_hint"), int):
        b.refresh_hint = doc["spiffe_refresh_hint"]
    if isinstance(doc.get("spiffe_sequence"), int):
        b.sequence_number = doc["spiffe_sequence"]
    for i, jwk in enumerate(keys if isinstance(keys, list) else []):
        if not isinstance(jwk, dict):
            raise fail("unable to parse JWKS: json: cannot unmarshal into Go struct field of type jose.JSONWebKey")
        try:
            key = key_from_jwk(jwk)
            certs = [base64.b64decode(c) for c in jwk.get("x5c") or []]
        except ValueError as exc:
            raise fail(f"unable to parse JWKS: go-jose/go-jose: {exc}") from None
        use = jwk.get("use")
        if use == X509_USE:
            if len(certs) != 1:
                raise fail(f"expected a single certificate in {X509_USE} entry {i}; got {len(certs)}")
            try:
                cert = x509.load_der_x509_certificate(certs[0])
            except ValueError as exc:
                raise fail(f"unable to parse JWKS: {exc}") from None
            if jwk_fields(cert.public_key()) != jwk_fields(key):
                raise fail("unable to parse JWKS: go-jose/go-jose: invalid JWK, public keys mismatch")
            if all(a.asn1 != certs[0] for a in b.x509_authorities):
                b.x509_authorities.add(asn1=certs[0])
        elif use == JWT_USE:
            kid = jwk.get("kid") or ""
            if not kid:
                raise fail(f"error adding authority {i} of JWKS: keyID cannot be empty")
            der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            for existing in b.jwt_authorities:
                if existing.key_id == kid:
                    existing.public_key = der
                    break
            else:
                b.jwt_authorities.add(public_key=der, key_id=kid)
    return b


# ---------------------------------------------------------------- printing


def validate_format(fmt: str) -> str:
    fmt = (fmt or PEM_FORMAT).lower()
    if fmt not in (PEM_FORMAT, SPIFFE_FORMAT):
        raise CommandError(f"invalid format: {go_quote(fmt)}")
    return fmt


def write_bundle(write: Callable[[str], Any], b: Bundle, fmt: str, header: bool) -> None:
    fmt = validate_format(fmt)
    if header:
        write(HEADER.format(b.trust_domain))
    if fmt == PEM_FORMAT:
        for auth in b.x509_authorities:
            for der in split_der(auth.asn1):
                write(pem_encode(der))
        return
    write(json.dumps(spiffe_bundle_doc(b), indent=4, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- commands


def _format_flag(fs: FlagSet, what: str) -> None:
    fs.string("format", PEM_FORMAT, f'The format to {what} (only pretty output format supports this flag). Either "pem" or "spiffe".')


def _show_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    _format_flag(fs, "show the bundle")


@app.command("bundle show", "Prints server CA bundle to stdout", _show_flags)
async def show(ctx: Context) -> int:
    as_json = is_json(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        b = await call(c.stub(bundle_grpc.BundleStub).GetBundle(bundle_pb2.GetBundleRequest()))
    if as_json:
        print_proto_json(ctx, b)
    else:
        write_bundle(ctx.stdout.write, b, ctx.flags["format"], header=False)
    return 0


def _list_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("id", "", "SPIFFE ID of the trust domain")
    _format_flag(fs, "list federated bundles")


@app.command("bundle list", "Lists federated bundle data", _list_flags)
async def list_(ctx: Context) -> int:
    as_json = is_json(ctx)
    fmt = ctx.flags["format"]
    async with AdminClient(ctx.flags["socketPath"]) as c:
        stub = c.stub(bundle_grpc.BundleStub)
        if ctx.flags["id"]:
            b = await call(stub.GetFederatedBundle(bundle_pb2.GetFederatedBundleRequest(trust_domain=ctx.flags["id"])))
            if as_json:
                print_proto_json(ctx, b)
            else:
                write_bundle(ctx.stdout.write, b, fmt, header=False)
            return 0
        resp = await call(stub.ListFederatedBundles(bundle_pb2.ListFederatedBundlesRequest()))
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    for i, b in enumerate(resp.bundles):
        if i:
            ctx.out()
        write_bundle(ctx.stdout.write, b, fmt, header=True)
    return 0


def _set_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("id", "", "SPIFFE ID of the trust domain")
    fs.string("path", "", "Path to the bundle data")
    fs.string("format", PEM_FORMAT, 'The format of the bundle data. Either "pem" or "spiffe".')


def _load(path: str) -> bytes:
    if not path:
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CommandError(f"unable to load bundle data: open {path}: {reason[:1].lower() + reason[1:]}") from None


@app.command("bundle set", "Creates or updates federated bundle data", _set_flags)
async def set_(ctx: Context) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    if not f["id"]:
        raise CommandError("id flag is required")
    fmt = validate_format(f["format"])
    data = _load(f["path"])
    if fmt == PEM_FORMAT:
        b = Bundle(trust_domain=f["id"])
        for der in certs_from_pem(data):
            b.x509_authorities.add(asn1=der)
    else:
        b = bundle_from_spiffe(data, f["id"])
    async with AdminClient(f["socketPath"]) as c:
        resp = await call(c.stub(bundle_grpc.BundleStub).BatchSetFederatedBundle(
            bundle_pb2.BatchSetFederatedBundleRequest(bundle=[b])), "failed to set federated bundle: ")
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    result = resp.results[0]
    if result.status.code != 0:
        raise CommandError(f"failed to set federated bundle: {result.status.message}")
    ctx.out("bundle set.")
    return 0


MODES = {"": 0, "restrict": 0, "delete": 1, "dissociate": 2}


def _delete_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("id", "", "SPIFFE ID of the trust domain")
    fs.string("mode", "restrict", "Deletion mode: one of restrict, delete, or dissociate")


@app.command("bundle delete", "Deletes federated bundle data", _delete_flags)
async def delete(ctx: Context) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    if not f["id"]:
        raise CommandError("id is required")
    if f["mode"] not in MODES:
        raise CommandError(f"unsupported mode {go_quote(f['mode'])}")
    req = bundle_pb2.BatchDeleteFederatedBundleRequest(trust_domains=[f["id"]], mode=MODES[f["mode"]])
    async with AdminClient(f["socketPath"]) as c:
        resp = await call(c.stub(bundle_grpc.BundleStub).BatchDeleteFederatedBundle(req), "failed to delete federated bundle: ")
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    result = resp.results[0]
    if result.status.code != 0:
        raise CommandError(f"failed to delete federated bundle {go_quote(result.trust_domain)}: {result.status.message}")
    ctx.out("bundle deleted.")
    return 0


@app.command("bundle count", "Count bundles", socket_flags)
async def count(ctx: Context) -> int:
    as_json = is_json(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(bundle_grpc.BundleStub).CountBundles(bundle_pb2.CountBundlesRequest()))
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    ctx.out(pluralize(f"{resp.count} ", "bundle", "bundles", resp.count))
    return 0
