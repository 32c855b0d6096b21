"""spire-server x509 mint | jwt mint.

x509 mint makes an EC P-256 key and a CSR here, so the private key never
travels; the server signs the CSR and returns the chain.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ...common.cli import CommandError, Context, FlagSet, write_file
from ...common.cliprinter import eprint, go_json, go_quote, is_json, pem_encode, print_proto_json, rfc3339
from ...common.spiffeid import SpiffeId
from ...proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from ...proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from .arguments import check_int32, duration_seconds, spiffe_id_proto, split_spiffe_id, ttl_seconds
from .client import AdminClient, call, socket_flags


def _ttl(ctx: Context) -> int:
    secs = ttl_seconds(ctx.flags["ttl"])
    if not -(2**31) <= secs < 2**31:
        raise CommandError(f"invalid value for TTL: overflow converting time.Duration({secs}) to int32")
    return secs


# ---------------------------------------------------------------- x509 mint


def x509_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("spiffeID", "", "SPIFFE ID of the X509-SVID")
    fs.duration("ttl", 0, "TTL of the X509-SVID")
    fs.list("dns", "DNS name that will be included in SVID. Can be used more than once.")
    fs.string("write", "", "Directory to write output to instead of stdout")


def make_csr(spiffe_id: str, dns_names: list[str]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    sans += [x509.DNSName(d) for d in dns_names]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.DER)


async def x509_mint(ctx: Context) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    if not f["spiffeID"]:
        raise CommandError("spiffeID must be specified")
    td, path = split_spiffe_id(f["spiffeID"])
    ttl = _ttl(ctx)
    try:
        key, csr = make_csr(str(SpiffeId.from_parts(td, path)), f["dns"])
    except ValueError as exc:
        raise CommandError(f"unable to generate CSR: {exc}") from None
    async with AdminClient(f["socketPath"]) as c:
        resp = await call(c.stub(svid_grpc.SVIDStub).MintX509SVID(svid_pb2.MintX509SVIDRequest(csr=csr, ttl=ttl)),
                          "unable to mint SVID: ")
        if not resp.svid.cert_chain:
            raise CommandError("server response missing SVID chain")
        ca = await call(c.stub(bundle_grpc.BundleStub).GetBundle(bundle_pb2.GetBundleRequest()), "unable to get bundle: ")
    if not ca.x509_authorities:
        raise CommandError("server response missing X509 Authorities")
    if resp.svid.expires_at - time.time() < duration_seconds(f["ttl"]):
        eprint(ctx, f"X509-SVID lifetime was capped shorter than specified ttl; expires {go_quote(rfc3339(resp.svid.expires_at))}\n")

    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    chain = list(resp.svid.cert_chain)
    roots = [a.asn1 for a in ca.x509_authorities]
    if not f["write"]:
        if as_json:
            b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
            ctx.out(go_json({"x509_svid": [b64(c) for c in chain], "private_key": b64(key_der),
                             "root_cas": [b64(r) for r in roots]}, sort_keys=False))
            return 0
        ctx.stdout.write(f"X509-SVID:\n{''.join(pem_encode(c) for c in chain)}\n")
        ctx.stdout.write(f"Private key:\n{pem_encode(key_der, 'PRIVATE KEY')}\n")
        ctx.stdout.write(f"Root CAs:\n{''.join(pem_encode(r) for r in roots)}\n")
        return 0

    svid_path = os.path.normpath(os.path.join(f["write"], "svid.pem"))
    key_path = os.path.normpath(os.path.join(f["write"], "key.pem"))
    bundle_path = os.path.normpath(os.path.join(f["write"], "bundle.pem"))
    _write(svid_path, "".join(pem_encode(c) for c in chain), 0o644, "unable to write SVID")
    ctx.out(f"X509-SVID written to {svid_path}")
    _write(key_path, pem_encode(key_der, "PRIVATE KEY"), 0o600, "unable to write key")
    ctx.out(f"Private key written to {key_path}")
    _write(bundle_path, "".join(pem_encode(r) for r in roots), 0o644, "unable to write bundle")
    ctx.out(f"Root CAs written to {bundle_path}")
    return 0


def _write(path: str, text: str, mode: int, what: str) -> None:
    try:
        write_file(path, text.encode(), mode)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CommandError(f"{what}: open {path}: {reason[:1].lower() + reason[1:]}") from None


# ---------------------------------------------------------------- jwt mint


def jwt_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("spiffeID", "", "SPIFFE ID of the JWT-SVID")
    fs.duration("ttl", 0, "TTL of the JWT-SVID")
    fs.list("audience", "Audience claim that will be included in the SVID. Can be used more than once.")
    fs.string("write", "", "File to write token to instead of stdout")


def _token_expiry(token: str) -> Any:
    claims = pyjwt.decode(token, options={"verify_signature": False, "verify_exp": False, "verify_aud": False})
    if "exp" not in claims:
        raise ValueError("no expiry claim")
    return claims["exp"]


async def jwt_mint(ctx: Context) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    if not f["spiffeID"]:
        raise CommandError("spiffeID must be specified")
    if not f["audience"]:
        raise CommandError("at least one audience must be specified")
    sid = spiffe_id_proto(f["spiffeID"])
    ttl = _ttl(ctx)
    req = svid_pb2.MintJWTSVIDRequest(id=sid, ttl=check_int32(ttl, "TTL"), audience=f["audience"])
    async with AdminClient(f["socketPath"]) as c:
        resp = await call(c.stub(svid_grpc.SVIDStub).MintJWTSVID(req), "unable to mint SVID: ")
    token = resp.svid.token
    if not token:
        raise CommandError("server response missing token")
    try:
        exp = _token_expiry(token)
        if float(exp) - time.time() < duration_seconds(f["ttl"]):
            eprint(ctx, f"JWT-SVID lifetime was capped shorter than specified ttl; expires {go_quote(rfc3339(float(exp)))}\n")
    except (pyjwt.PyJWTError, ValueError, TypeError) as exc:
        eprint(ctx, f"Unable to determine JWT-SVID lifetime: {exc}\n")

    if not f["write"]:
        if as_json:
            print_proto_json(ctx, resp)
        else:
            ctx.out(token)
        return 0
    path = os.path.normpath(f["write"])
    _write(path, token, 0o600, "unable to write token")
    ctx.out(f"JWT-SVID written to {path}")
    return 0
