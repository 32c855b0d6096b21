"""rebootstrap_mode / rebootstrap_delay end to end: a server reinstalled with a new CA is trusted
again once the bootstrap bundle names it (mode always, x509pop re-attests), and a node attestor
that cannot re-attest is refused by mode always, as SPIRE's agent does. Real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_py.common.x509util import verify_chain

from tests.integration.helpers.harness import TD, WORKLOAD, wait_for
from tests.integration.helpers.pki import make_ca, make_node_cert, sha1_fingerprint

UID = os.getuid()


def fetch(sock: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, WORKLOAD, str(UID), sock, "fetch"], capture_output=True, text=True,
                          timeout=60)


def test_an_agent_rebootstraps_to_a_reinstalled_server_after_the_delay(make_server, start_agent, tmp_path: Path):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca("Node CA")
    (pki / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    node = make_node_cert(ca, "node1")
    cert, key = node.write(pki, "node1")
    server_plugin = f'NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_path = "{pki / "ca.pem"}" }} }}'
    agent_id = f"spiffe://{TD}/spire/agent/x509pop/{sha1_fingerprint(node.cert)}"

    first = make_server(extra_plugins=server_plugin)
    agent = start_agent(first, extra_agent='rebootstrap_mode = "always"\n    rebootstrap_delay = "2s"',
                        node_attestor=f'NodeAttestor "x509pop" {{ plugin_data {{ certificate_path = "{cert}" '
                                      f'private_key_path = "{key}" }} }}')
    bootstrap_bundle = first.dir / "bundle.pem"  # the agent's trust_bundle_path
    assert str(bootstrap_bundle) in agent.conf.read_text()

    # The server is reinstalled: same address, new data directory, new CA.
    first.proc.stop()
    second = make_server(extra_plugins=server_plugin, port=first.port)
    second.cli("entry", "create", "-parentID", agent_id, "-spiffeID", f"spiffe://{TD}/web",
               "-selector", f"unix:uid:{UID}")
    new_roots = second.cli("bundle", "show", "-format", "pem").stdout
    bootstrap_bundle.write_text(new_roots)  # the operator publishes the new bundle

    try:
        wait_for(lambda: fetch(agent.socket).returncode == 0, 90, "a workload SVID from the reinstalled server")
    except AssertionError:
        logs = "\n".join(ln for ln in agent.proc.logs().splitlines() if "No identity issued" not in ln)
        raise AssertionError("agent log:\n" + logs[:8000]) from None
    logs = agent.proc.logs()
    assert "Trust Bundle and Server don't agree, ignoring for now" in logs
    assert "Trust Bundle and Server don't agree, rebootstrapping" in logs
    got = json.loads(fetch(agent.socket).stdout)
    chain = x509.load_pem_x509_certificates(got["chain"].encode())
    verify_chain(chain[0], chain[1:], x509.load_pem_x509_certificates(new_roots.encode()))
    assert agent.proc.alive()


def test_mode_always_refuses_a_node_attestor_that_cannot_reattest(spire_server, start_agent):
    agent = start_agent(spire_server, spire_server.token(), extra_agent='rebootstrap_mode = "always"', wait=False)
    wait_for(lambda: not agent.proc.alive(), 60, "the agent to refuse to run")
    assert agent.proc.stop() == 1
    assert ("you have requested rebootstrap support but the NodeAttestor plugin or the spire server "
            "configuration is not allowing it") in agent.proc.logs()
