"""spire-server localauthority x509|jwt show|prepare|activate|taint|revoke and
spire-server upstreamauthority taint|revoke: the LocalAuthority API, printed as SPIRE's
cmd/spire-server/cli/localauthority, upstreamauthority and authoritycommon."""

from __future__ import annotations

from typing import Any, Callable, Coroutine

from ...common.cli import CommandError, Context, FlagSet
from ...common.cliprinter import go_time, is_json, print_proto_json, unix_time
from ...proto.spire.api.server.localauthority.v1 import localauthority_grpc
from ...proto.spire.api.server.localauthority.v1 import localauthority_pb2 as pb
from .client import AdminClient, call, socket_flags

# kind → (its name in messages, the RPC name's middle part)
KINDS = {"x509": ("X.509", "X509"), "jwt": ("JWT", "JWT")}

SYNOPSES = {
    ("x509", "show"): "Shows the local X.509 authorities",
    ("x509", "prepare"): "Prepares a new X.509 authority for use by generating a new key and injecting the "
                         "resulting CA certificate into the bundle",
    ("x509", "activate"): "Activates a prepared X.509 authority for use, which will cause it to be used for all "
                          "X.509 signing operations serviced by this server going forward",
    ("x509", "taint"): "Marks the previously active X.509 authority as being tainted",
    ("x509", "revoke"): "Revokes the previously active X.509 authority by removing it from the bundle and "
                        "propagating this update throughout the cluster",
    ("jwt", "show"): "Shows the local JWT authorities",
    ("jwt", "prepare"): "Prepares a new JWT authority for use by generating a new key and injecting it into the bundle",
    ("jwt", "activate"): "Activates a prepared JWT authority for use, which will cause it to be used for all JWT "
                         "signing operations serviced by this server going forward",
    ("jwt", "taint"): "Marks the previously active JWT authority as being tainted",
    ("jwt", "revoke"): "Revokes the previously active JWT authority by removing it from the bundle and "
                       "propagating this update throughout the cluster",
    ("upstream", "taint"): "Marks the provided X.509 upstream authority as being tainted",
    ("upstream", "revoke"): "Revokes the previously active X.509 upstream authority by removing it from the bundle "
                            "and propagating this update throughout the cluster",
}


def print_state(ctx: Context, state: Any, x509: bool) -> None:
    """authoritycommon.prettyPrintAuthorityState."""
    ctx.stdout.write(f"  Authority ID: {state.authority_id}\n")
    ctx.stdout.write(f"  Expires at: {go_time(unix_time(state.expires_at))}\n")
    if not x509:
        return
    if state.upstream_authority_subject_key_id:
        ctx.stdout.write(f"  Upstream authority Subject Key ID: {state.upstream_authority_subject_key_id}\n")
        return
    ctx.stdout.write("  Upstream authority ID: No upstream authority\n")


def _stub(c: AdminClient) -> localauthority_grpc.LocalAuthorityStub:
    return c.stub(localauthority_grpc.LocalAuthorityStub)


def flags(fs: FlagSet) -> None:
    socket_flags(fs)


def id_flags(kind: str, verb: str) -> Callable[[FlagSet], None]:
    def setup(fs: FlagSet) -> None:
        socket_flags(fs)
        fs.string("authorityID", "", f"The authority ID of the {KINDS[kind][0]} authority to {verb}")
    return setup


def show(kind: str) -> Callable[[Context], Coroutine[Any, Any, int]]:
    name, rpc = KINDS[kind]

    async def run(ctx: Context) -> int:
        as_json = is_json(ctx)
        async with AdminClient(ctx.flags["socketPath"]) as c:
            method = getattr(_stub(c), f"Get{rpc}AuthorityState")
            req = getattr(pb, f"Get{rpc}AuthorityStateRequest")()
            # SPIRE's jwt show adds no prefix to the error; x509 show does.
            resp = await call(method(req), f"could not get {name} authorities: " if kind == "x509" else "")
        if as_json:
            print_proto_json(ctx, resp)
            return 0
        for i, (title, field) in enumerate((("Active", "active"), ("Prepared", "prepared"), ("Old", "old"))):
            if i:
                ctx.out()
            ctx.out(f"{title} {name} authority:")
            if resp.HasField(field):
                print_state(ctx, getattr(resp, field), kind == "x509")
            else:
                ctx.out(f"  No {field} {name} authority found")
        return 0
    return run


# verb → (RPC verb, request field, response field, title)
_VERBS = {
    "prepare": ("Prepare", None, "prepared_authority", "Prepared"),
    "activate": ("Activate", "authority_id", "activated_authority", "Activated"),
    "taint": ("Taint", "authority_id", "tainted_authority", "Tainted"),
    "revoke": ("Revoke", "authority_id", "revoked_authority", "Revoked"),
}


def change(kind: str, verb: str) -> Callable[[Context], Coroutine[Any, Any, int]]:
    name, rpc = KINDS[kind]
    rpc_verb, req_field, resp_field, title = _VERBS[verb]

    async def run(ctx: Context) -> int:
        as_json = is_json(ctx)
        kw = {}
        if req_field is not None:
            if not ctx.flags["authorityID"]:
                raise CommandError("an authority ID is required")
            kw[req_field] = ctx.flags["authorityID"]
        async with AdminClient(ctx.flags["socketPath"]) as c:
            method = getattr(_stub(c), f"{rpc_verb}{rpc}Authority")
            req = getattr(pb, f"{rpc_verb}{rpc}AuthorityRequest")(**kw)
            resp = await call(method(req), f"could not {verb} {name} authority: ")
        if as_json:
            print_proto_json(ctx, resp)
            return 0
        ctx.out(f"{title} {name} authority:")
        if not resp.HasField(resp_field):
            raise CommandError(f"internal error: expected to have {title.lower()} {name} authority information")
        print_state(ctx, getattr(resp, resp_field), kind == "x509")
        return 0
    return run


# ---------------------------------------------------------------- upstreamauthority


def upstream_flags(verb: str) -> Callable[[FlagSet], None]:
    what = {"taint": "of the upstream X.509 authority to taint",
            "revoke": "of the X.509 upstream authority to revoke"}[verb]

    def setup(fs: FlagSet) -> None:
        socket_flags(fs)
        fs.string("subjectKeyID", "", "The X.509 Subject Key Identifier (or SKID) of the authority's CA certificate "
                  + what)
    return setup


def upstream(verb: str) -> Callable[[Context], Coroutine[Any, Any, int]]:
    rpc_verb, title = ("Taint", "Tainted") if verb == "taint" else ("Revoke", "Revoked")

    async def run(ctx: Context) -> int:
        as_json = is_json(ctx)
        skid = ctx.flags["subjectKeyID"]
        if not skid:
            raise CommandError("the Subject Key ID of the X.509 upstream authority is required")
        async with AdminClient(ctx.flags["socketPath"]) as c:
            method = getattr(_stub(c), f"{rpc_verb}X509UpstreamAuthority")
            req = getattr(pb, f"{rpc_verb}X509UpstreamAuthorityRequest")(subject_key_id=skid)
            resp = await call(method(req), f"could not {verb} X.509 upstream authority: ")
        if as_json:
            print_proto_json(ctx, resp)
            return 0
        ctx.out(f"{title} X.509 upstream authority:")
        ctx.out(f"  Subject Key ID: {resp.upstream_authority_subject_key_id}")
        return 0
    return run
