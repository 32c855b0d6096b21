"""spire-server federation create | update | delete | list | show | refresh, as SPIRE's
cmd/spire-server/cli/federation: the same flags, JSON data file and wording."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ...common.cli import CommandError, Context, FlagSet
from ...common.cliprinter import go_quote, is_json, pluralize, print_proto_json, rpc_error_text
from ...common.grpc_codes import go_code
from ...common.spiffeid import SpiffeId, SpiffeIdError
from ...proto.spire.api.server.trustdomain.v1 import trustdomain_grpc, trustdomain_pb2 as pb
from ...proto.spire.api.types import bundle_pb2, federationrelationship_pb2 as fr_pb2
from ...proto.spire.api.types import status_pb2
from .bundle import PEM_FORMAT, SPIFFE_FORMAT, bundle_from_spiffe, certs_from_pem
from .client import AdminClient, call, socket_flags

HTTPS_WEB = "https_web"
HTTPS_SPIFFE = "https_spiffe"
MAX_DATA_BYTES = 4 * 1024 * 1024
# JSON data file keys (Go matches them case-insensitively) -> config fields.
_JSON_KEYS = {k.lower(): k for k in ("trustDomain", "bundleEndpointURL", "bundleEndpointProfile", "endpointSPIFFEID",
                                     "trustDomainBundle", "trustDomainBundleFormat")}


def _config_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("data", "", "Path to a file containing federation relationships in JSON format (optional). "
              "If set to '-', read the JSON from stdin.")
    fs.string("trustDomain", "", "Name of the trust domain to federate with (e.g., example.org)")
    fs.string("bundleEndpointURL", "", "URL of the SPIFFE bundle endpoint that provides the trust bundle "
              "(must use the HTTPS protocol)")
    fs.string("bundleEndpointProfile", "", f'Endpoint profile type (either "{HTTPS_WEB}" or "{HTTPS_SPIFFE}")')
    fs.string("endpointSpiffeID", "", "SPIFFE ID of the SPIFFE bundle endpoint server. Only used for 'spiffe' profile.")
    fs.string("trustDomainBundlePath", "", "Path to the trust domain bundle data (optional).")
    fs.string("trustDomainBundleFormat", PEM_FORMAT,
              f'The format of the bundle data (optional). Either "{PEM_FORMAT}" or "{SPIFFE_FORMAT}".')


create_flags = update_flags = _config_flags


def _parse_bundle(data: bytes, fmt: str, td: str) -> bundle_pb2.Bundle:
    if fmt == PEM_FORMAT:
        b = bundle_pb2.Bundle(trust_domain=td)
        for der in certs_from_pem(data):
            b.x509_authorities.add(asn1=der)
        return b
    return bundle_from_spiffe(data, td)


def _to_proto(c: dict[str, Any]) -> fr_pb2.FederationRelationship:
    """SPIRE's jsonToProto: flags or one JSON item to a relationship."""
    if not c.get("trustDomain"):
        raise CommandError("trust domain is required")
    if not c.get("bundleEndpointURL"):
        raise CommandError("bundle endpoint URL is required")
    fr = fr_pb2.FederationRelationship(trust_domain=c["trustDomain"], bundle_endpoint_url=c["bundleEndpointURL"])
    bundle_td = c["trustDomain"]
    profile = c.get("bundleEndpointProfile") or ""
    if profile == HTTPS_WEB:
        fr.https_web.SetInParent()
    elif profile == HTTPS_SPIFFE:
        sid = c.get("endpointSPIFFEID") or ""
        if not sid:
            raise CommandError("endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set")
        try:
            bundle_td = SpiffeId.parse(sid).trust_domain.name
        except SpiffeIdError as exc:
            raise CommandError(f"cannot parse bundle endpoint SPIFFE ID: {exc}") from None
        fr.https_spiffe.endpoint_spiffe_id = sid
    else:
        raise CommandError(f"unknown bundle endpoint profile type: {go_quote(profile)}")
    fmt = c.get("trustDomainBundleFormat") or ""
    if c.get("trustDomainBundlePath"):
        path = c["trustDomainBundlePath"]
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_DATA_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CommandError(f"cannot read bundle file: open {path}: {reason[:1].lower() + reason[1:]}") from None
        try:
            fr.trust_domain_bundle.CopyFrom(_parse_bundle(data, fmt, bundle_td))
        except CommandError as exc:
            raise CommandError(f"cannot parse bundle file: {exc}") from None
    elif c.get("trustDomainBundle") is not None:
        raw = c["trustDomainBundle"]
        try:
            if fmt == PEM_FORMAT:
                if not isinstance(raw, str):
                    raise CommandError("failed to unmarshal json: the PEM bundle must be a JSON string")
                data = raw.encode()
            elif fmt == SPIFFE_FORMAT:
                data = json.dumps(raw).encode()
            else:
                raise CommandError(f"bundle format {go_quote(fmt)} is unsupported")
            fr.trust_domain_bundle.CopyFrom(_parse_bundle(data, fmt, bundle_td))
        except CommandError as exc:
            raise CommandError(f"cannot parse bundle raw message: {exc}") from None
    return fr


def _from_file(path: str) -> list[fr_pb2.FederationRelationship]:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_DATA_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_DATA_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CommandError(f"open {path}: {reason[:1].lower() + reason[1:]}") from None
    if len(data) > MAX_DATA_BYTES:
        raise CommandError(f"failed to parse JSON: more than {MAX_DATA_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"failed to parse JSON: {exc}") from None
    items = doc.get(next((k for k in doc if k.lower() == "federationrelationships"), ""), []) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise CommandError("failed to parse JSON: federationRelationships must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CommandError(f"could not parse item {i}: not a JSON object")
        config = {_JSON_KEYS[k.lower()]: v for k, v in item.items() if k.lower() in _JSON_KEYS}
        config.setdefault("trustDomainBundleFormat", "")
        try:
            out.append(_to_proto(config))
        except CommandError as exc:
            raise CommandError(f"could not parse item {i}: {exc}") from None
    return out


def _relationships(f: dict[str, Any]) -> list[fr_pb2.FederationRelationship]:
    if f["data"]:
        empty = (not f["bundleEndpointProfile"] and not f["bundleEndpointURL"] and f["trustDomainBundleFormat"] == PEM_FORMAT
                 and not f["trustDomainBundlePath"] and not f["endpointSpiffeID"] and not f["trustDomain"])
        if not empty:
            raise CommandError("cannot use other flags to specify relationship fields when 'data' flag is set")
        return _from_file(f["data"])
    return [_to_proto({"trustDomain": f["trustDomain"], "bundleEndpointURL": f["bundleEndpointURL"],
                       "bundleEndpointProfile": f["bundleEndpointProfile"], "endpointSPIFFEID": f["endpointSpiffeID"],
                       "trustDomainBundlePath": f["trustDomainBundlePath"],
                       "trustDomainBundleFormat": f["trustDomainBundleFormat"]})]


def print_relationship(fr: fr_pb2.FederationRelationship, write: Callable[[str], Any]) -> None:
    write(f"Trust domain              : {fr.trust_domain}\n")
    write(f"Bundle endpoint URL       : {fr.bundle_endpoint_url}\n")
    which = fr.WhichOneof("bundle_endpoint_profile")
    if which == "https_web":
        write("Bundle endpoint profile   : https_web\n")
    elif which == "https_spiffe":
        write("Bundle endpoint profile   : https_spiffe\n")
        write(f"Endpoint SPIFFE ID        : {fr.https_spiffe.endpoint_spiffe_id}\n")


def _print_batch(ctx: Context, sent: list[fr_pb2.FederationRelationship], results: Any, verb: str) -> int:
    failed = []
    for i, r in enumerate(results):
        if r.status.code == 0:
            ctx.out()
            print_relationship(r.federation_relationship, ctx.stdout.write)
        else:
            failed.append((r, sent[i]))
    for r, fr in failed:
        ctx.out()
        ctx.stderr.write(f"Failed to {verb} the following federation relationship "
                         f"(code: {go_code(r.status.code)}, msg: {go_quote(r.status.message)}):\n")
        print_relationship(fr, ctx.stderr.write)
    if failed:
        raise CommandError(f"failed to {verb} one or more federation relationships")
    return 0


async def create(ctx: Context) -> int:
    as_json = is_json(ctx)
    sent = _relationships(ctx.flags)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(trustdomain_grpc.TrustDomainStub).BatchCreateFederationRelationship(
            pb.BatchCreateFederationRelationshipRequest(federation_relationships=sent)), "request failed: ")
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    return _print_batch(ctx, sent, resp.results, "create")


async def update(ctx: Context) -> int:
    as_json = is_json(ctx)
    sent = _relationships(ctx.flags)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(trustdomain_grpc.TrustDomainStub).BatchUpdateFederationRelationship(
            pb.BatchUpdateFederationRelationshipRequest(federation_relationships=sent)), "request failed: ")
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    return _print_batch(ctx, sent, resp.results, "update")


def id_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("id", "", "SPIFFE ID of the trust domain")


async def delete(ctx: Context) -> int:
    as_json = is_json(ctx)
    td = ctx.flags["id"]
    if not td:
        raise CommandError("id is required")
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(trustdomain_grpc.TrustDomainStub).BatchDeleteFederationRelationship(
            pb.BatchDeleteFederationRelationshipRequest(trust_domains=[td])), "failed to delete federation relationship: ")
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    r = resp.results[0]
    if r.status.code != 0:
        raise CommandError(f"failed to delete federation relationship {go_quote(r.trust_domain)}: {r.status.message}")
    ctx.out("federation relationship deleted.")
    return 0


async def list_(ctx: Context) -> int:
    as_json = is_json(ctx)
    async with AdminClient(ctx.flags["socketPath"]) as c:
        resp = await call(c.stub(trustdomain_grpc.TrustDomainStub).ListFederationRelationships(
            pb.ListFederationRelationshipsRequest()), "error listing federation relationship: ")
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    n = len(resp.federation_relationships)
    ctx.out(pluralize(f"Found {n} ", "federation relationship", "federation relationships", n))
    for fr in resp.federation_relationships:
        ctx.out()
        print_relationship(fr, ctx.stdout.write)
    return 0


def show_flags(fs: FlagSet) -> None:
    socket_flags(fs)
    fs.string("trustDomain", "", "The trust domain name of the federation relationship to show")


async def show(ctx: Context) -> int:
    as_json = is_json(ctx)
    td = ctx.flags["trustDomain"]
    if not td:
        raise CommandError("a trust domain name is required")
    async with AdminClient(ctx.flags["socketPath"]) as c:
        fr = await call(c.stub(trustdomain_grpc.TrustDomainStub).GetFederationRelationship(
            pb.GetFederationRelationshipRequest(trust_domain=td)), "error showing federation relationship: ")
    if as_json:
        print_proto_json(ctx, fr)
        return 0
    ctx.out(f"Found a federation relationship with trust domain {td}:\n")
    print_relationship(fr, ctx.stdout.write)
    return 0


async def refresh(ctx: Context) -> int:
    as_json = is_json(ctx)
    td = ctx.flags["id"]
    if not td:
        raise CommandError("id is required")
    async with AdminClient(ctx.flags["socketPath"]) as c:
        try:
            await c.stub(trustdomain_grpc.TrustDomainStub).RefreshBundle(pb.RefreshBundleRequest(trust_domain=td))
        except GRPCError as exc:
            if exc.status == Status.NOT_FOUND:
                raise CommandError(f"there is no federation relationship with trust domain {go_quote(td)}") from None
            raise CommandError(f"failed to refresh bundle: {rpc_error_text(exc)}") from None
        except (ConnectionError, OSError) as exc:
            raise CommandError(f"failed to refresh bundle: connection error: {exc}") from None
    if as_json:
        print_proto_json(ctx, status_pb2.Status(code=0, message="OK"))
        return 0
    ctx.out("Bundle refreshed")
    return 0
