"""spire-agent api fetch [x509|jwt] | validate jwt | watch: Workload API clients, as SPIRE's.

Each command is an ordinary Workload API client: it dials the agent's public
socket, sends the ``workload.spiffe.io: true`` header and prints what it gets in
SPIRE's pretty format or, with ``-output json``, as SPIRE's protojson shapes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import time
from typing import Any, Callable, Coroutine

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ...common.admin_cli import dial_error_text
from ...common.cli import CommandError, Context, FlagSet, write_file
from ...common.cliprinter import go_time, print_proto_json, rpc_error_text
from ...common.duration import format_duration_ns
from ...common.spiffeid import SpiffeId, SpiffeIdError
from ...common.x509util import certs_to_pem, split_der_chain
from ...proto.workload import workload_pb2 as pb
from ..workloadapi.client import HEADER, StreamEndedError, WorkloadClient

DEFAULT_SOCKET = "/tmp/spire-agent/public/api.sock"
DEFAULT_TIMEOUT = 5
OUTPUT_USAGE = "Desired output format (pretty, json); default: pretty."
WATCH_RETRY = 1.0


# --- plumbing -------------------------------------------------------------------------------
RunFn = Callable[[Context], Coroutine[Any, Any, int]]


def bare_errors(fn: RunFn) -> RunFn:
    """SPIRE's Workload API commands print their error alone, without ``Error: ``."""

    @functools.wraps(fn)
    async def run(ctx: Context) -> int:
        try:
            return await fn(ctx)
        except CommandError as exc:
            raise CommandError(str(exc), exc.code, prefix="") from None

    return run


def socket_flag(fs: FlagSet) -> None:
    fs.string("socketPath", DEFAULT_SOCKET, "Path to the SPIRE Agent API Unix domain socket")


def _common_flags(fs: FlagSet) -> None:
    socket_flag(fs)
    fs.duration("timeout", DEFAULT_TIMEOUT, "Time to wait for a response")
    fs.string("output", "", OUTPUT_USAGE)


def _want_json(ctx: Context) -> bool:
    fmt = ctx.flags.get("output") or "pretty"
    if "format" in ctx.set_flags and "output" not in ctx.set_flags:
        fmt = ctx.flags["format"]
    if fmt not in ("pretty", "json"):
        raise CommandError(f'bad formatter flag: unknown format "{fmt}"; supported formats: pretty, json')
    return fmt == "json"


def rpc_error(exc: BaseException, socket_path: str = "") -> CommandError:
    """A failed call, worded as grpc-go words it in SPIRE's output."""
    return CommandError(dial_error_text(exc, socket_path))


async def _call(ctx: Context, fn: Any) -> Any:
    path = ctx.flags["socketPath"]
    try:
        async with WorkloadClient(path, ctx.flags.get("timeout")) as client:
            return await fn(client)
    except StreamEndedError as exc:
        raise CommandError(str(exc)) from None
    except (GRPCError, asyncio.TimeoutError, OSError, StreamTerminatedError) as exc:
        raise rpc_error(exc, path) from None


# --- X.509 ----------------------------------------------------------------------------------
class X509SVID:
    def __init__(self, spiffe_id: str, hint: str, certs: list[x509.Certificate], key: Any,
                 bundle: list[x509.Certificate], federated: dict[str, list[x509.Certificate]]) -> None:
        self.spiffe_id, self.hint, self.certs, self.key = spiffe_id, hint, certs, key
        self.bundle, self.federated = bundle, federated


def _parse_certs(der: bytes) -> list[x509.Certificate]:
    """Concatenated DER certificates, the Workload API's encoding."""
    return [x509.load_der_x509_certificate(d) for d in split_der_chain(der)]


def parse_x509_response(resp: pb.X509SVIDResponse) -> list[X509SVID]:
    if not resp.svids:
        raise CommandError("workload response contains no svids")
    federated: dict[str, list[x509.Certificate]] = {}
    for td, der in resp.federated_bundles.items():
        try:
            certs = _parse_certs(der)
        except ValueError as exc:
            raise CommandError(f'failed to parse bundle for federated domain "{td}": {exc}') from None
        if not certs:
            raise CommandError(f'no certificates in bundle for federated domain "{td}"')
        federated[td] = certs
    out = []
    for i, s in enumerate(resp.svids):
        where = f'failed to parse svid entry {i} for spiffe id "{s.spiffe_id}"'
        try:
            certs = _parse_certs(s.x509_svid)
            key = serialization.load_der_private_key(s.x509_svid_key, None)
            bundle = _parse_certs(s.bundle)
        except ValueError as exc:
            raise CommandError(f"{where}: {exc}") from None
        if not certs:
            raise CommandError(f"{where}: no certificates found")
        if not bundle:
            raise CommandError(f"{where}: no certificates in trust bundle")
        svid = X509SVID(s.spiffe_id, s.hint, certs, key, bundle, federated)
        _verify(svid)
        out.append(svid)
    return out


def _verify(svid: X509SVID) -> None:
    """The chain must lead from the leaf to a root of the SVID's own bundle."""
    fail = f'"{svid.spiffe_id}" SVID failed verification against bundle'
    try:
        SpiffeId.parse(svid.spiffe_id)
    except SpiffeIdError as exc:
        raise CommandError(str(exc)) from None
    chain = svid.certs
    try:
        for child, parent in zip(chain, chain[1:]):
            child.verify_directly_issued_by(parent)
    except Exception as exc:  # InvalidSignature carries no message
        raise CommandError(f"{fail}: x509svid: could not verify leaf certificate: {exc or 'bad signature'}") from None
    last = chain[-1]
    for root in svid.bundle:
        try:
            last.verify_directly_issued_by(root)
            return
        except Exception:
            continue
    raise CommandError(f"{fail}: x509svid: could not verify leaf certificate: "
                       "x509: certificate signed by unknown authority")


def print_x509(ctx: Context, svids: list[X509SVID], elapsed_ns: int) -> None:
    n = len(svids)
    ctx.out(f"Received {n} svid{'' if n == 1 else 's'} after {format_duration_ns(elapsed_ns)}")
    for s in svids:
        ctx.out()
        ctx.out(f"SPIFFE ID:\t\t{s.spiffe_id}")
        if s.hint:
            ctx.out(f"Hint:\t\t\t{s.hint}")
        ctx.out(f"SVID Valid After:\t{go_time(s.certs[0].not_valid_before_utc)}")
        ctx.out(f"SVID Valid Until:\t{go_time(s.certs[0].not_valid_after_utc)}")
        for i, c in enumerate(s.certs[1:], 1):
            ctx.out(f"Intermediate #{i} Valid After:\t{go_time(c.not_valid_before_utc)}")
            ctx.out(f"Intermediate #{i} Valid Until:\t{go_time(c.not_valid_after_utc)}")
        for i, c in enumerate(s.bundle, 1):
            ctx.out(f"CA #{i} Valid After:\t{go_time(c.not_valid_before_utc)}")
            ctx.out(f"CA #{i} Valid Until:\t{go_time(c.not_valid_after_utc)}")
        for td in sorted(s.federated):
            for i, c in enumerate(s.federated[td], 1):
                ctx.out(f"[{td}] CA #{i} Valid After:\t{go_time(c.not_valid_before_utc)}")
                ctx.out(f"[{td}] CA #{i} Valid Until:\t{go_time(c.not_valid_after_utc)}")
    ctx.out()


def write_x509(ctx: Context, directory: str, svids: list[X509SVID]) -> None:
    try:
        for i, s in enumerate(svids):
            svid_path = os.path.join(directory, f"svid.{i}.pem")
            key_path = os.path.join(directory, f"svid.{i}.key")
            bundle_path = os.path.join(directory, f"bundle.{i}.pem")
            ctx.out(f"Writing SVID #{i} to file {svid_path}.")
            write_file(svid_path, certs_to_pem(s.certs), 0o644)
            ctx.out(f"Writing key #{i} to file {key_path}.")
            key_pem = s.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
            write_file(key_path, key_pem, 0o600)
            ctx.out(f"Writing bundle #{i} to file {bundle_path}.")
            write_file(bundle_path, certs_to_pem(s.bundle), 0o644)
            for j, td in enumerate(sorted(s.federated)):
                path = os.path.join(directory, f"federated_bundle.{i}.{j}.pem")
                ctx.out(f"Writing federated bundle #{j} for trust domain {td} to file {path}.")
                write_file(path, certs_to_pem(s.federated[td]), 0o644)
    except OSError as exc:
        raise CommandError(f"open {exc.filename}: {(exc.strerror or str(exc)).lower()}") from None


def x509_flags(fs: FlagSet) -> None:
    _common_flags(fs)
    fs.bool("silent", False, "Suppress stdout")
    fs.string("write", "", "Write SVID data to the specified path (optional; only available for pretty output format)")


@bare_errors
async def fetch_x509(ctx: Context) -> int:
    as_json = _want_json(ctx)
    start = time.monotonic_ns()
    resp = await _call(ctx, lambda c: c.first(c.stub.FetchX509SVID, pb.X509SVIDRequest()))
    elapsed = time.monotonic_ns() - start
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    svids = parse_x509_response(resp)
    if not ctx.flags["silent"]:
        print_x509(ctx, svids, elapsed)
    if ctx.flags["write"]:
        write_x509(ctx, ctx.flags["write"], svids)
    return 0


# --- JWT ------------------------------------------------------------------------------------
def jwt_flags(fs: FlagSet) -> None:
    _common_flags(fs)
    fs.list("audience", "comma separated list of audience values")
    fs.string("spiffeID", "", "SPIFFE ID subject (optional)")
    fs.string("format", "", "deprecated; use -output")


@bare_errors
async def fetch_jwt(ctx: Context) -> int:
    as_json = _want_json(ctx)
    # Go's CommaStringsFlag: the last -audience wins, split on commas.
    audience = ctx.flags["audience"][-1].split(",") if ctx.flags["audience"] else []
    if not audience:
        raise CommandError("audience must be specified")

    async def fetch(c: WorkloadClient) -> tuple[Any, Any]:
        bundles = await c.first(c.stub.FetchJWTBundles, pb.JWTBundlesRequest())
        svids = await c.unary(c.stub.FetchJWTSVID,
                              pb.JWTSVIDRequest(audience=audience, spiffe_id=ctx.flags["spiffeID"]))
        return svids, bundles

    svids, bundles = await _call(ctx, fetch)
    if as_json:
        print_proto_json(ctx, svids, bundles)
        return 0
    for s in svids.svids:
        ctx.out(f"token({s.spiffe_id}):\n\t{s.svid}")
        if s.hint:
            ctx.out(f"hint({s.spiffe_id}):\n\t{s.hint}")
    for td in sorted(bundles.bundles):
        ctx.out(f"bundle({td}):\n\t{bundles.bundles[td].decode(errors='replace')}")
    return 0


def validate_flags(fs: FlagSet) -> None:
    _common_flags(fs)
    fs.string("audience", "", "expected audience value")
    fs.string("svid", "", "JWT SVID")


@bare_errors
async def validate_jwt(ctx: Context) -> int:
    as_json = _want_json(ctx)
    if not ctx.flags["audience"]:
        raise CommandError("audience must be specified")
    if not ctx.flags["svid"]:
        raise CommandError("svid must be specified")
    req = pb.ValidateJWTSVIDRequest(audience=ctx.flags["audience"], svid=ctx.flags["svid"])
    try:
        resp = await _call(ctx, lambda c: c.unary(c.stub.ValidateJWTSVID, req))
    except CommandError as exc:
        msg = str(exc)
        prefix = "rpc error: code = InvalidArgument desc = "
        if msg.startswith(prefix):
            raise CommandError(f"SVID is not valid: {msg[len(prefix):]}") from None
        raise CommandError(f"unable to validate JWT SVID: {msg}") from None
    if as_json:
        print_proto_json(ctx, resp)
        return 0
    claims = json_format.MessageToDict(resp.claims)
    ctx.out("SVID is valid.")
    ctx.out(f"SPIFFE ID : {resp.spiffe_id}")
    ctx.out(f"Claims    : {json.dumps(claims, separators=(',', ':'), sort_keys=True)}")
    return 0


# --- watch ----------------------------------------------------------------------------------
def _watch_svids(resp: pb.X509SVIDResponse) -> list[X509SVID]:
    """Like go-spiffe's X509Context: own bundle by the SVID's trust domain, others keyed by name."""
    bundles: dict[str, list[x509.Certificate]] = {}
    for td, der in resp.federated_bundles.items():
        bundles[SpiffeId.parse(td).trust_domain.name] = _parse_certs(der)
    svids = []
    for s in resp.svids:
        td = SpiffeId.parse(s.spiffe_id).trust_domain.name
        bundles[td] = _parse_certs(s.bundle)
    for s in resp.svids:
        td = SpiffeId.parse(s.spiffe_id).trust_domain.name
        key = serialization.load_der_private_key(s.x509_svid_key, None)
        fed = {name: certs for name, certs in bundles.items() if name != td}
        svids.append(X509SVID(s.spiffe_id, "", _parse_certs(s.x509_svid), key, bundles.get(td, []), fed))
    return svids


@bare_errors
async def watch(ctx: Context) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        task = asyncio.ensure_future(_watch_loop(ctx))
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        else:
            task.result()
    finally:
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _watch_loop(ctx: Context) -> None:
    path = ctx.flags["socketPath"]
    while True:
        updated = time.monotonic_ns()
        try:
            async with WorkloadClient(path) as client:
                async with client.stub.FetchX509SVID.open(metadata=HEADER) as stream:
                    await stream.send_message(pb.X509SVIDRequest(), end=True)
                    async for resp in stream:
                        try:
                            svids = _watch_svids(resp)
                        except (ValueError, SpiffeIdError) as exc:
                            print(f"failed to parse X.509 context: {exc}", file=ctx.stderr, flush=True)
                            continue
                        print_x509(ctx, svids, time.monotonic_ns() - updated)
                        ctx.stdout.flush()
                        updated = time.monotonic_ns()
        except (GRPCError, OSError, StreamTerminatedError) as exc:
            print(rpc_error(exc, path), file=ctx.stderr, flush=True)
        await asyncio.sleep(WATCH_RETRY)
