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
from typing import Any, Callable, cast

from cryptography import x509

from ...common.bundle import Bundle as SpiffeBundle
from ...common.bundle import BundleError
from ...common.cli import CommandError, Context, FlagSet
from ...common.cliprinter import go_quote, is_json, pem_encode, pluralize, print_proto_json
from ...common.x509util import split_der_chain
from ...proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from ...proto.spire.api.types import bundle_pb2 as types_bundle_pb2
from .arguments import trust_domain_name
from .client import AdminClient, call, socket_flags

Bundle = types_bundle_pb2.Bundle
PEM_FORMAT = "pem"
SPIFFE_FORMAT = "spiffe"
HEADER = "****************************************\n* {}\n****************************************\n"


# ---------------------------------------------------------------- PEM


def split_der(data: bytes) -> list[bytes]:
    """Certificates concatenated in one ASN.1 DER blob, as x509.ParseCertificates reads them."""
    try:
        return split_der_chain(data)
    except ValueError as exc:
        raise CommandError(f"unable to parse certificates ASN.1 DER data: {exc}") from None


def certs_from_pem(data: bytes) -> list[bytes]:
    """pemutil.ParseCertificates: every block must be a CERTIFICATE."""
    text = data.decode("latin-1")
    ders: list[bytes] = []
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


def spiffe_bundle_doc(b: Bundle) -> dict[str, Any]:
    """go-spiffe's spiffebundle.Marshal of an API bundle, as a JSON document."""
    try:
        return SpiffeBundle.from_proto(None, b).to_jwks()
    except (BundleError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def bundle_from_spiffe(data: bytes, trust_domain: str) -> Bundle:
    """util.ParseBundle for the SPIFFE format: the trust domain comes from -id."""
    td = trust_domain_name(trust_domain)
    try:
        return SpiffeBundle.from_json(td, data).to_proto()
    except (BundleError, ValueError) as exc:
        raise CommandError(f"unable to parse to spiffe bundle: spiffebundle: {exc}") from None


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


def show_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    _format_flag(fs, "show the bundle")


async def show(ctx: Context) -> int:
    as_json = is_json(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        b = await call(c.stub(bundle_grpc.BundleStub).GetBundle(bundle_pb2.GetBundleRequest()))
    if as_json:
        print_proto_json(ctx, b)
    else:
        write_bundle(ctx.stdout.write, b, ctx.flags["format"], header=False)
    return 0


def list_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("id", "", "SPIFFE ID of the trust domain")
    _format_flag(fs, "list federated bundles")


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


def set_flags(fs: FlagSet) -> None:
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


def delete_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("id", "", "SPIFFE ID of the trust domain")
    fs.string("mode", "restrict", "Deletion mode: one of restrict, delete, or dissociate")


async def delete(ctx: Context) -> int:
    as_json = is_json(ctx)
    f = ctx.flags
    if not f["id"]:
        raise CommandError("id is required")
    if f["mode"] not in MODES:
        raise CommandError(f"unsupported mode {go_quote(f['mode'])}")
    req = bundle_pb2.BatchDeleteFederatedBundleRequest(trust_domains=[f["id"]], 
        mode=cast("bundle_pb2.BatchDeleteFederatedBundleRequest.Mode", MODES[f["mode"]]))
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


async def count(ctx: Context) -> int:
    as_json = is_json(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(bundle_grpc.BundleStub).CountBundles(bundle_pb2.CountBundlesRequest()))
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    ctx.out(pluralize(f"{resp.count} ", "bundle", "bundles", resp.count))
    return 0
