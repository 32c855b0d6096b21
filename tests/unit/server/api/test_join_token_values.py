"""Join token values: a token is the last segment of the agent ID it attests to, so
CreateJoinToken refuses what cannot be one SPIFFE ID path segment, and attestation
answers used, expired and unusable tokens with SPIRE's status codes and messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_py.common.spiffeid import TrustDomain
from spire_py.common.tls import spiffe_id_of
from spire_py.proto.spire.api.server.agent.v1 import agent_pb2
from spire_py.proto.spire.api.types import spiffeid_pb2
from spire_py.server.datastore import JoinToken
from spire_py.server.plugins.nodeattestor.join_token import InvalidJoinToken, check_token, join_token_id
from tests.unit.helpers.inprocess_server import TD, running_server

CHARS = "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
# (value, go-spiffe's reason): what spiffeid.FromSegments says of each as a path segment.
BAD_VALUES = [
    ("a/b", CHARS),
    ("../x", CHARS),
    ("..", "path cannot contain dot segments"),
    (".", "path cannot contain dot segments"),
    (" x", CHARS),
    ("x ", CHARS),
    ("x\n", CHARS),
    ("tök", CHARS),
    ("日本", CHARS),
    ("a%2Fb", CHARS),
    ("a?b", CHARS),
]
USED = "failed to attest: join token does not exist or has already been used"


# --- the value check on its own --------------------------------------------------------

@pytest.mark.parametrize("value,reason", BAD_VALUES)
def test_a_value_that_is_not_one_path_segment_is_refused_with_go_spiffe_wording(value: str, reason: str) -> None:
    with pytest.raises(InvalidJoinToken) as exc:
        check_token(value)
    assert str(exc.value).endswith(f": {reason}")
    assert str(exc.value).startswith("invalid path segment ")


def test_an_empty_value_is_an_empty_segment() -> None:
    with pytest.raises(InvalidJoinToken, match="path cannot contain empty segments"):
        check_token("")


def test_a_value_longer_than_the_datastore_column_is_refused() -> None:
    check_token("a" * 255)
    with pytest.raises(InvalidJoinToken, match="token is longer than 255 characters"):
        check_token("a" * 256)


def test_a_valid_value_is_the_last_segment_of_the_agent_id() -> None:
    sid = join_token_id(TrustDomain(TD), "Ab-0_9.z")
    assert str(sid) == f"spiffe://{TD}/spire/agent/join_token/Ab-0_9.z"


# --- CreateJoinToken over gRPC -----------------------------------------------------------

async def test_create_join_token_refuses_values_that_cannot_be_an_agent_id_segment(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        api = srv.agent_api()
        for value, reason in BAD_VALUES + [("a" * 256, "token is longer than 255 characters")]:
            with pytest.raises(GRPCError) as exc:
                await api.CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600, token=value))
            assert exc.value.status == Status.INVALID_ARGUMENT, value
            assert exc.value.message.startswith("invalid join token: "), value
            assert exc.value.message.endswith(reason), value
            assert srv.datastore.fetch_join_token(value) is None, f"{value!r} was stored"


async def test_create_join_token_refuses_an_alias_in_the_reserved_namespace(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        api = srv.agent_api()
        for path in ("/spire/server", "/spire/agent/x509pop/abc"):
            with pytest.raises(GRPCError) as exc:
                await api.CreateJoinToken(agent_pb2.CreateJoinTokenRequest(
                    ttl=600, token="tok-alias", agent_id=spiffeid_pb2.SPIFFEID(trust_domain=TD, path=path)))
            assert exc.value.status == Status.INVALID_ARGUMENT
            assert exc.value.message == (f'invalid agent ID: "spiffe://{TD}{path}" is not a workload in trust domain '
                                         f'"{TD}"; path is in the reserved namespace')
        assert srv.datastore.fetch_join_token("tok-alias") is None


async def test_a_chosen_token_attests_to_its_agent_id_and_is_single_use(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        made = await srv.agent_api().CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600, token="node-1.a_B"))
        assert made.value == "node-1.a_B"
        resp, _ = await srv.attest_join_token(b"node-1.a_B")
        leaf = x509.load_der_x509_certificate(resp.result.svid.cert_chain[0])
        assert str(spiffe_id_of(leaf)) == f"spiffe://{TD}/spire/agent/join_token/node-1.a_B"
        assert resp.result.reattestable is False

        with pytest.raises(GRPCError) as exc:
            await srv.attest_join_token(b"node-1.a_B")
        assert (exc.value.status, exc.value.message) == (Status.INVALID_ARGUMENT, USED)


async def test_attestation_refusals_carry_spire_codes_and_messages(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        ds = srv.datastore
        ds.create_join_token(JoinToken("expired-1", int(time.time()) - 60))
        ds.create_join_token(JoinToken("kept-1", int(time.time()) + 600))
        cases = [
            (b"expired-1", Status.INVALID_ARGUMENT, "join token expired"),
            # An expired token is used up by the attempt, as SPIRE deletes it before the expiry check.
            (b"expired-1", Status.INVALID_ARGUMENT, USED),
            (b"never-made", Status.INVALID_ARGUMENT, USED),
            (b"a" * 10_000, Status.INVALID_ARGUMENT, USED),
            # The payload is the token verbatim: no trimming, as SPIRE.
            (b"kept-1\n", Status.INVALID_ARGUMENT, USED),
            (b"", Status.INVALID_ARGUMENT, "malformed param: missing attestation data payload"),
        ]
        for payload, status, message in cases:
            with pytest.raises(GRPCError) as exc:
                await srv.attest_join_token(payload)
            assert (exc.value.status, exc.value.message) == (status, message), payload[:20]
        assert ds.count_attested_nodes() == 0
        assert ds.fetch_join_token("kept-1") is not None


async def test_a_stored_token_that_cannot_form_an_agent_id_is_burnt_not_attested(tmp_path: Path) -> None:
    # Tokens stored before values were checked (or written straight to the database).
    async with running_server(tmp_path) as srv:
        ds = srv.datastore
        for value in ("a/b", "../x", " x"):
            ds.create_join_token(JoinToken(value, int(time.time()) + 600))
            with pytest.raises(GRPCError) as exc:
                await srv.attest_join_token(value.encode())
            assert exc.value.status == Status.INTERNAL, value
            assert exc.value.message.startswith("failed to create join token ID: invalid path segment "), value
            assert ds.fetch_join_token(value) is None, value
        assert ds.count_attested_nodes() == 0
