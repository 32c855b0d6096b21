"""Nested SPIRE end to end: root server → nested server → a workload of the nested server's agent.

The nested server is a workload of an agent of the root server (join_token), with a
``-downstream`` entry; its UpstreamAuthority "spire" takes that SVID from the agent's socket
and has the root sign its intermediate. A workload of the nested server's own agent gets an
SVID that verifies against the root's bundle (and a JWT-SVID whose key the nested server
published to the root), and keeps being served when the nested intermediate is rotated
(localauthority prepare/activate on the nested server); a root CA prepared upstream reaches
the nested workloads' bundle.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import jwt as pyjwt
from cryptography import x509

from spire_py.common.x509util import verify_chain
from tests.integration.helpers.harness import ME, TD, AgentHandle, ServerHandle, fetch, svid_for, wait_for

NESTED_ID = f"spiffe://{TD}/nested"
WORKLOAD_ID = f"spiffe://{TD}/workload"


def _agent_id(token: str) -> str:
    return f"spiffe://{TD}/spire/agent/join_token/{token}"


def _root_bundle(root: ServerHandle) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(root.cli("bundle", "show").stdout.encode())


def _verifies_to_root(doc: dict[str, Any], roots: list[x509.Certificate]) -> list[x509.Certificate]:
    chain = x509.load_pem_x509_certificates(doc["chain"].encode())
    verify_chain(chain[0], chain[1:], roots, None)
    return chain


def _jwt_verifies_to_root(token: str, doc: dict[str, Any]) -> None:
    """``doc``: the root's bundle in SPIFFE format (bundle show -format spiffe)."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in doc["keys"] if k.get("kid") == kid]
    key = pyjwt.PyJWK(jwk)
    pyjwt.decode(token, key.key, algorithms=[key.algorithm_name], audience="test-audience")


def test_a_nested_server_s_workload_chains_to_the_root_and_survives_a_nested_rotation(
        make_server: Callable[..., ServerHandle], start_agent: Callable[..., AgentHandle]) -> None:
    root = make_server()
    token = root.token()
    root_agent = start_agent(root, token=token)
    root.cli("entry", "create", "-parentID", _agent_id(token), "-spiffeID", NESTED_ID,
             "-selector", f"unix:uid:{ME}", "-downstream")
    svid_for(root_agent.socket, NESTED_ID)  # the nested server can get its SVID before it starts

    nested = make_server(
        extra_server='default_x509_svid_ttl = "10s"\n    agent_ttl = "1h"',
        extra_plugins=f'''UpstreamAuthority "spire" {{
        plugin_data {{
            server_address = "127.0.0.1"
            server_port = "{root.port}"
            workload_api_socket = "{root_agent.socket}"
        }}
    }}''')
    # The nested bundle is the root's: the root CA, and the root's JWT keys with the nested one.
    roots = _root_bundle(root)
    root_jwks = json.loads(root.cli("bundle", "show", "-format", "spiffe").stdout)
    assert root_jwks["spiffe_sequence"] >= 2  # created by the CA, bumped by the root's and the nested JWT keys
    assert {c.fingerprint(c.signature_hash_algorithm) for c in roots} <= {  # type: ignore[arg-type]
        c.fingerprint(c.signature_hash_algorithm)  # type: ignore[arg-type]
        for c in x509.load_pem_x509_certificates(nested.cli("bundle", "show").stdout.encode())}

    nested_token = nested.token()
    nested_agent = start_agent(nested, token=nested_token)
    nested.cli("entry", "create", "-parentID", _agent_id(nested_token), "-spiffeID", WORKLOAD_ID,
               "-selector", f"unix:uid:{ME}")
    doc = svid_for(nested_agent.socket, WORKLOAD_ID)
    chain = _verifies_to_root(doc, roots)
    assert len(chain) == 2 and chain[1].issuer in {c.subject for c in roots}
    assert re.search(r"OU=DOWNSTREAM-1", chain[1].subject.rfc4514_string())
    _jwt_verifies_to_root(doc["jwt"], root_jwks)

    # The nested entry is listed by `entry show` on the root (downstream entries are not hidden).
    assert NESTED_ID in root.cli("entry", "show").stdout
    assert "Found 1 entry" in root.cli("entry", "show", "-downstream").stdout

    # The nested intermediate is rotated by hand (localauthority prepare/activate: the root signs
    # the new one); the workload is then served an SVID under it that still verifies to the root.
    root_skid = roots[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    shown = nested.cli("localauthority", "x509", "show").stdout
    assert f"  Upstream authority Subject Key ID: {root_skid}" in shown
    taint = nested.cli("localauthority", "x509", "taint", "-authorityID", "x", check=False)
    assert taint.stderr == ("Error: could not taint X.509 authority: rpc error: code = FailedPrecondition desc = "
                            "local authority can't be tainted if there is an upstream authority\n")
    prepared = re.search(r"Authority ID: (\S+)", nested.cli("localauthority", "x509", "prepare").stdout)
    assert prepared
    nested.cli("localauthority", "x509", "activate", "-authorityID", prepared.group(1))
    # The root signed both intermediates: it cannot be tainted while it signs the active one.
    up = nested.cli("upstreamauthority", "taint", "-subjectKeyID", root_skid.upper(), check=False)
    assert up.stderr == ("Error: could not taint X.509 upstream authority: rpc error: code = InvalidArgument desc = "
                         "provided subject key id is not valid: unable to use upstream authority singing current "
                         "authority\n")
    first_ca = chain[1].serial_number
    rotated: dict[str, Any] = {}

    def new_intermediate() -> bool:
        got = fetch(nested_agent.socket)
        if got and got["spiffe_id"] == WORKLOAD_ID:
            c = x509.load_pem_x509_certificates(got["chain"].encode())
            if len(c) == 2 and c[1].serial_number != first_ca:
                rotated.update(got)
                return True
        return False

    wait_for(new_intermediate, 30, "an SVID under the rotated nested intermediate", interval=0.5)
    _verifies_to_root(rotated, roots)
    _jwt_verifies_to_root(rotated["jwt"], root_jwks)

    # A new root CA prepared upstream reaches the nested workloads' bundle (the plugin polls the
    # root's bundle, the nested CA manager merges it, the nested agent syncs it).
    new_root = re.search(r"Authority ID: (\S+)", root.cli("localauthority", "x509", "prepare").stdout)
    assert new_root

    def nested_workload_trusts_new_root() -> bool:
        got = fetch(nested_agent.socket)
        return bool(got) and new_root.group(1) in {  # type: ignore[union-attr]
            c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
            for c in x509.load_pem_x509_certificates(got["bundle"].encode())}  # type: ignore[index]

    wait_for(nested_workload_trusts_new_root, 40, "the upstream's new root in the nested workload's bundle",
             interval=0.5)
    assert nested.proc.alive() and root.proc.alive()
