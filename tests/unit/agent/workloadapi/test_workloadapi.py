"""The agent's Workload API, exercised by py-spiffe's unmodified client over a real socket."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from spiffe import TrustDomain as PyTrustDomain, WorkloadApiClient
from spiffe.workloadapi.errors import ValidateJwtSvidError

from spire_py.agent.workloadapi.caller import Caller, CallerGone
from spire_py.agent.workloadapi.handler import filter_hints
from spire_py.common.registration import Entry
from spire_py.proto.workload import workload_grpc, workload_pb2 as pb

from tests.unit.helpers.workload_world import FEDERATED_TD, TD_ID, WORKLOAD_ID, uid_selector

HEADER = {"workload.spiffe.io": "true"}


def client_for(w) -> WorkloadApiClient:
    return WorkloadApiClient(f"unix://{w.socket_path}", default_timeout=10)


async def in_thread(fn, *args):
    return await asyncio.to_thread(fn, *args)


def der(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# --- the socket ------------------------------------------------------------------------------
async def test_socket_is_world_connectable_in_a_0755_directory(world):
    assert stat.S_IMODE(os.stat(world.socket_path).st_mode) == 0o777
    assert stat.S_IMODE(os.stat(os.path.dirname(world.socket_path)).st_mode) == 0o755
    assert stat.S_ISSOCK(os.stat(world.socket_path).st_mode)


async def test_stale_socket_is_replaced_and_close_removes_the_socket(tmp_path):
    from tests.unit.helpers.workload_world import new_world, short_dir

    from spire_py.agent.workloadapi.server import close_workload_api, serve_workload_api

    w = new_world(short_dir())
    os.makedirs(os.path.dirname(w.socket_path))
    open(w.socket_path, "w").close()  # left over from a crashed agent
    server = await serve_workload_api(w.socket_path, w.service)
    assert stat.S_ISSOCK(os.stat(w.socket_path).st_mode)
    await close_workload_api(server, w.socket_path)
    assert not os.path.exists(w.socket_path)


# --- X.509-SVIDs -----------------------------------------------------------------------------
async def test_py_spiffe_fetches_the_x509_svid_with_its_id_and_key(world):
    entry = world.add_entry(hint="internal")
    expected = world.cache.svids[entry.id]
    with client_for(world) as client:
        svid = await in_thread(client.fetch_x509_svid)
        ctx = await in_thread(client.fetch_x509_context)
    assert str(svid.spiffe_id) == WORKLOAD_ID
    assert svid.leaf.serial_number == expected.chain[0].serial_number
    assert der(svid.private_key) == der(expected.key)
    own = ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain("example.org"))
    assert [c.serial_number for c in own.x509_authorities] == [world.ca.cert.serial_number]


async def test_svid_response_carries_hint_bundle_and_federated_bundles(world):
    world.add_entry(hint="internal", federates_with=[FEDERATED_TD])
    async with raw(world) as stub:
        async with stub.FetchX509SVID.open(metadata=HEADER) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            resp = await stream.recv_message()
            await stream.cancel()
    [svid] = resp.svids
    assert svid.hint == "internal"
    assert svid.bundle == world.ca.cert.public_bytes(serialization.Encoding.DER)
    assert set(resp.federated_bundles) == {FEDERATED_TD}
    assert resp.federated_bundles[FEDERATED_TD] == world.partner.cert.public_bytes(serialization.Encoding.DER)


async def test_stream_pushes_a_rotated_svid_after_publish(world):
    entry = world.add_entry()
    first_serial = world.cache.svids[entry.id].chain[0].serial_number
    got: list = []
    errors: list = []
    two = threading.Event()

    def on_success(ctx):
        got.append(ctx.default_svid.leaf.serial_number)
        if len(got) >= 2:
            two.set()

    with client_for(world) as client:
        handle = client.stream_x509_contexts(on_success, errors.append, retry_connect=False)
        try:
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.05)
            assert got == [first_serial]
            rotated = world.issue(entry)
            await world.cache.publish()
            assert await in_thread(two.wait, 10)
        finally:
            handle.cancel()
    assert got[-1] == rotated.chain[0].serial_number != first_serial
    assert not errors


async def test_open_streams_end_with_unavailable_when_the_server_stops(world):
    from spire_py.agent.workloadapi.server import close_workload_api

    world.add_entry()
    updates: list = []
    errors: list = []
    failed = threading.Event()

    def on_error(exc):
        errors.append(exc)
        failed.set()

    with client_for(world) as client:
        handle = client.stream_x509_contexts(updates.append, on_error, retry_connect=False)
        try:
            for _ in range(100):
                if updates:
                    break
                await asyncio.sleep(0.05)
            assert updates
            await asyncio.wait_for(close_workload_api(world.server, world.socket_path), 5)
            assert await in_thread(failed.wait, 10)
        finally:
            handle.cancel()
    assert "UNAVAILABLE" in str(errors[0])
    assert not os.path.exists(world.socket_path)


async def test_unrelated_cache_changes_do_not_repeat_the_svid(world):
    world.add_entry()
    async with raw(world) as stub:
        async with stub.FetchX509SVID.open(metadata=HEADER) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            await stream.recv_message()
            world.add_entry("spiffe://example.org/other", selectors=[uid_selector(os.getuid() + 4242)])
            await world.cache.publish()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.recv_message(), 0.3)
            await stream.cancel()


async def test_svid_stream_pushes_a_new_bundle_and_repeated_calls_agree(world):
    from tests.unit.helpers.workload_world import CA, make_bundle

    world.add_entry()
    async with raw(world) as stub:
        async with stub.FetchX509SVID.open(metadata=HEADER) as first:
            await first.send_message(pb.X509SVIDRequest(), end=True)
            before = await first.recv_message()
            # A second caller with the same identity gets the same bytes (the response is reused).
            async with stub.FetchX509SVID.open(metadata=HEADER) as second:
                await second.send_message(pb.X509SVIDRequest(), end=True)
                assert (await second.recv_message()).SerializeToString() == before.SerializeToString()
                await second.cancel()
            # The bundle is replaced (a new root): the open stream gets it, with the same SVID.
            new_root = CA("next root")
            old = world.cache.own_bundle()
            world.cache.bundles[TD_ID] = make_bundle(TD_ID, [*old.x509_authorities, new_root.cert], {})
            await world.cache.publish()
            after = await asyncio.wait_for(first.recv_message(), 5)
            new_der = new_root.cert.public_bytes(serialization.Encoding.DER)
            assert after.svids[0].bundle == before.svids[0].bundle + new_der
            assert after.svids[0].x509_svid == before.svids[0].x509_svid
            assert after.svids[0].x509_svid_key == before.svids[0].x509_svid_key
            await first.cancel()


async def test_caller_whose_uid_matches_no_entry_is_denied(world):
    world.add_entry(selectors=[uid_selector(os.getuid() + 4242)])
    async with raw(world) as stub:
        for method, req in ((stub.FetchX509SVID, pb.X509SVIDRequest()),
                            (stub.FetchX509Bundles, pb.X509BundlesRequest()),
                            (stub.FetchJWTBundles, pb.JWTBundlesRequest())):
            with pytest.raises(GRPCError) as err:
                async with method.open(metadata=HEADER) as stream:
                    await stream.send_message(req, end=True)
                    await stream.recv_message()
            assert err.value.status == Status.PERMISSION_DENIED
            assert err.value.message == "no identity issued"
        with pytest.raises(GRPCError) as err:
            await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]), metadata=HEADER)
        assert err.value.status == Status.PERMISSION_DENIED


async def test_stream_ends_with_permission_denied_when_the_entry_goes_away(world):
    entry = world.add_entry()
    async with raw(world) as stub:
        with pytest.raises(GRPCError) as err:
            async with stub.FetchX509SVID.open(metadata=HEADER) as stream:
                await stream.send_message(pb.X509SVIDRequest(), end=True)
                assert (await stream.recv_message()).svids
                del world.cache.entries[entry.id]
                await world.cache.publish()
                await asyncio.wait_for(stream.recv_message(), 5)
    assert err.value.status == Status.PERMISSION_DENIED


async def test_missing_security_header_is_invalid_argument(world):
    world.add_entry()
    async with raw(world) as stub:
        with pytest.raises(GRPCError) as err:
            async with stub.FetchX509SVID.open() as stream:
                await stream.send_message(pb.X509SVIDRequest(), end=True)
                await stream.recv_message()
        assert err.value.status == Status.INVALID_ARGUMENT
        assert err.value.message == "security header missing from request"
        for value in ("false", "TRUE"):
            with pytest.raises(GRPCError) as err:
                await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]), metadata={"workload.spiffe.io": value})
            assert err.value.status == Status.INVALID_ARGUMENT


# --- bundles ---------------------------------------------------------------------------------
async def test_fetch_x509_bundles_gives_own_and_federated_roots(world):
    world.add_entry(federates_with=[FEDERATED_TD])
    with client_for(world) as client:
        bundles = await in_thread(client.fetch_x509_bundles)
    own = bundles.get_bundle_for_trust_domain(PyTrustDomain("example.org"))
    partner = bundles.get_bundle_for_trust_domain(PyTrustDomain("partner.test"))
    assert [c.serial_number for c in own.x509_authorities] == [world.ca.cert.serial_number]
    assert [c.serial_number for c in partner.x509_authorities] == [world.partner.cert.serial_number]


async def test_bundle_streams_push_when_the_bundle_changes(world):
    from tests.unit.helpers.workload_world import CA, make_bundle

    world.add_entry()
    async with raw(world) as stub:
        async with stub.FetchX509Bundles.open(metadata=HEADER) as stream:
            await stream.send_message(pb.X509BundlesRequest(), end=True)
            first = await stream.recv_message()
            assert set(first.bundles) == {TD_ID}
            new_root = CA("second root").cert
            world.cache.bundles[TD_ID] = make_bundle(TD_ID, [world.ca.cert, new_root])
            await world.cache.publish()
            second = await asyncio.wait_for(stream.recv_message(), 5)
            await stream.cancel()
    assert len(second.bundles[TD_ID]) > len(first.bundles[TD_ID])


async def test_fetch_jwt_bundles_is_a_jwks_py_spiffe_reads(world):
    world.add_entry()
    with client_for(world) as client:
        bundles = await in_thread(client.fetch_jwt_bundles)
    own = bundles.get_bundle_for_trust_domain(PyTrustDomain("example.org"))
    key = own.get_jwt_authority("k1")
    assert key.public_numbers() == world.jwt_key.public_key().public_numbers()


# --- JWT-SVIDs -------------------------------------------------------------------------------
async def test_fetch_jwt_svid_for_an_audience(world):
    world.add_entry(hint="internal")
    with client_for(world) as client:
        svid = await in_thread(client.fetch_jwt_svid, {"db"})
    assert str(svid.spiffe_id) == WORKLOAD_ID
    assert svid.audience == {"db"}
    claims = pyjwt.decode(svid.token, world.jwt_key.public_key(), algorithms=["ES256"], audience="db")
    assert claims["sub"] == WORKLOAD_ID


async def test_fetch_jwt_svid_requires_audience_and_a_spiffe_id_of_the_caller(world):
    world.add_entry()
    world.add_entry("spiffe://example.org/second")
    async with raw(world) as stub:
        with pytest.raises(GRPCError) as err:
            await stub.FetchJWTSVID(pb.JWTSVIDRequest(), metadata=HEADER)
        assert (err.value.status, err.value.message) == (Status.INVALID_ARGUMENT, "audience must be specified")
        with pytest.raises(GRPCError) as err:
            await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"], spiffe_id="not-an-id"), metadata=HEADER)
        assert err.value.status == Status.INVALID_ARGUMENT
        with pytest.raises(GRPCError) as err:
            await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"], spiffe_id="spiffe://example.org/someone-else"),
                                    metadata=HEADER)
        assert err.value.status == Status.PERMISSION_DENIED
        both = await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]), metadata=HEADER)
        one = await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"], spiffe_id="spiffe://example.org/second"),
                                      metadata=HEADER)
    assert sorted(s.spiffe_id for s in both.svids) == ["spiffe://example.org/second", WORKLOAD_ID]
    assert [s.spiffe_id for s in one.svids] == ["spiffe://example.org/second"]


async def test_validate_jwt_svid_accepts_a_real_token_and_refuses_wrong_audience_or_forgery(world):
    world.add_entry()
    with client_for(world) as client:
        token = (await in_thread(client.fetch_jwt_svid, {"db"})).token
        ok = await in_thread(client.validate_jwt_svid, token, "db")
        assert str(ok.spiffe_id) == WORKLOAD_ID
        with pytest.raises(ValidateJwtSvidError):
            await in_thread(client.validate_jwt_svid, token, "not-db")
        forger = ec.generate_private_key(ec.SECP256R1())
        forged = pyjwt.encode({"sub": WORKLOAD_ID, "aud": "db", "exp": 2**31}, forger, algorithm="ES256",
                              headers={"kid": "k1"})
        with pytest.raises(ValidateJwtSvidError):
            await in_thread(client.validate_jwt_svid, forged, "db")


async def test_validate_returns_claims_and_names_the_reason_for_refusal(world):
    world.add_entry()
    async with raw(world) as stub:
        token = (await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]), metadata=HEADER)).svids[0].svid
        resp = await stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="db", svid=token), metadata=HEADER)
        assert resp.spiffe_id == WORKLOAD_ID
        assert list(resp.claims["aud"]) == ["db"]  # a single audience is returned as a list, as SPIRE does
        assert resp.claims["sub"] == WORKLOAD_ID
        for req, msg in ((pb.ValidateJWTSVIDRequest(svid=token), "audience must be specified"),
                         (pb.ValidateJWTSVIDRequest(audience="db"), "svid must be specified")):
            with pytest.raises(GRPCError) as err:
                await stub.ValidateJWTSVID(req, metadata=HEADER)
            assert (err.value.status, err.value.message) == (Status.INVALID_ARGUMENT, msg)
        with pytest.raises(GRPCError) as err:
            await stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="other", svid=token), metadata=HEADER)
        assert err.value.status == Status.INVALID_ARGUMENT and err.value.message


async def test_foreign_tokens_validate_with_federated_keys_and_lose_extra_claims(world):
    from tests.unit.helpers.workload_world import make_bundle

    partner_key = ec.generate_private_key(ec.SECP256R1())
    world.cache.bundles[FEDERATED_TD] = make_bundle(FEDERATED_TD, [world.partner.cert], {"p1": partner_key.public_key()})
    token = pyjwt.encode({"sub": "spiffe://partner.test/client", "aud": ["db"], "exp": 2**31, "role": "admin"},
                         partner_key, algorithm="ES256", headers={"kid": "p1"})
    req = pb.ValidateJWTSVIDRequest(audience="db", svid=token)
    world.add_entry()
    async with raw(world) as stub:
        with pytest.raises(GRPCError) as err:  # no entry of the caller federates with partner.test
            await stub.ValidateJWTSVID(req, metadata=HEADER)
        assert err.value.status == Status.INVALID_ARGUMENT
        assert 'no bundle found for trust domain "partner.test"' in err.value.message
        world.add_entry("spiffe://example.org/federated", federates_with=[FEDERATED_TD])
        resp = await stub.ValidateJWTSVID(req, metadata=HEADER)
    assert resp.spiffe_id == "spiffe://partner.test/client"
    assert sorted(resp.claims.keys()) == ["aud", "exp", "sub"]


async def test_jwt_minting_failure_is_unavailable(world):
    world.add_entry()

    async def broken(entry, audience):
        raise RuntimeError("agent is not connected to a server")

    world.cache.jwt_minter = broken
    async with raw(world) as stub:
        with pytest.raises(GRPCError) as err:
            await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]), metadata=HEADER)
    assert err.value.status == Status.UNAVAILABLE
    assert "could not fetch JWT-SVID" in err.value.message


# --- who is calling --------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
async def test_client_running_as_another_uid_gets_only_that_uids_identity(world):
    world.add_entry()  # the test's own uid
    world.add_entry("spiffe://example.org/nobody", selectors=[uid_selector(65534)])
    base = os.path.dirname(os.path.dirname(os.path.dirname(world.socket_path)))
    os.chmod(base, 0o755)  # let the other user reach the socket
    # Import as root (the interpreter may live where nobody can read), then become nobody and call.
    code = ("import os, sys; from spiffe import WorkloadApiClient; "
            "os.setgroups([]); os.setgid(65534); os.setuid(65534); "
            "c = WorkloadApiClient(sys.argv[1], default_timeout=10); "
            "print([str(s.spiffe_id) for s in c.fetch_x509_svids()])")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, f"unix://{world.socket_path}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "['spiffe://example.org/nobody']"


async def test_callers_are_pinned_when_the_connection_is_accepted(world):
    world.add_entry()
    async with raw(world) as stub:
        await stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["db"]), metadata=HEADER)
        [caller] = world.service.callers._by_conn.values()
        assert (caller.pid, caller.uid, caller.gid) == (os.getpid(), os.getuid(), os.getgid())
        assert caller.procfd >= 0
    for _ in range(50):
        if not world.service.callers._by_conn:
            break
        await asyncio.sleep(0.02)
    assert not world.service.callers._by_conn and caller.closed


def test_a_reused_pid_is_not_the_original_caller():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        caller = Caller.track(child.pid, os.getuid(), os.getgid())
        caller.is_alive()  # the same process: fine
    finally:
        child.kill()
        child.wait()
    with pytest.raises(CallerGone):
        caller.is_alive()
    caller.close()
    wrong_owner = Caller.track(os.getpid(), os.getuid() + 1, os.getgid())
    with pytest.raises(CallerGone, match="uid"):
        wrong_owner.is_alive()
    wrong_owner.close()


# --- pieces ----------------------------------------------------------------------------------
def test_duplicate_hints_keep_the_oldest_entry():
    a = Entry(id="a", spiffe_id="spiffe://example.org/a", hint="h", created_at=20)
    b = Entry(id="b", spiffe_id="spiffe://example.org/b", hint="h", created_at=10)
    c = Entry(id="c", spiffe_id="spiffe://example.org/c")
    assert filter_hints([a, b, c]) == [b, c]


class raw:
    """A grpclib client on the agent socket, without py-spiffe's header interceptor."""

    def __init__(self, w) -> None:
        self.channel = Channel(path=w.socket_path)

    async def __aenter__(self):
        return workload_grpc.SpiffeWorkloadAPIStub(self.channel)

    async def __aexit__(self, *exc):
        self.channel.close()


async def test_x509_response_is_reused_while_its_parts_stay_the_same(world):
    entry = world.add_entry(hint="internal", federates_with=[FEDERATED_TD])
    handler = world.service
    entries = handler._entries([uid_selector(os.getuid())])
    first = handler._x509_svid_response(entries)
    assert first is not None and handler._x509_svid_response(entries) is first  # federated too
    world.issue(entry)  # a new SVID: a new response
    assert handler._x509_svid_response(entries) is not first



async def test_cancelled_fetches_leave_no_reference_cycles(world):
    """py-spiffe cancels every FetchX509SVID after its first answer. Each such request must be
    freed when it ends, not left in a reference cycle for the collector's full passes (which,
    with thousands of them, stalled the Workload API): counted with the collector off."""
    from grpclib.server import Stream as ServerStream

    from tests.unit.helpers.collector import collector_off

    world.add_entry()
    calls = 20
    with collector_off(ServerStream) as alive:
        async with raw(world) as stub:
            for _ in range(calls):
                async with stub.FetchX509SVID.open(metadata=HEADER, timeout=30) as stream:
                    await stream.send_message(pb.X509SVIDRequest(), end=True)
                    assert (await stream.recv_message()).svids
                    await stream.cancel()
            for _ in range(100):  # the agent's handlers see the resets
                if not world.service._streams:
                    break
                await asyncio.sleep(0.01)
            assert not world.service._streams
            await asyncio.sleep(0.05)
            left = alive()
    assert left == 0, f"{left} of {calls} cancelled requests are kept alive by reference cycles"
