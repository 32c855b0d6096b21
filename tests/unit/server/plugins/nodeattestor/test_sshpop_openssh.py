"""sshpop with keys and certificates made by OpenSSH's own ssh-keygen, as operators make them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from spire_py.agent.plugins.nodeattestor.sshpop import SshPopAttestor as AgentSshPop
from spire_py.common.plugin import PluginContext
from spire_py.server.plugins.nodeattestor.base import AttestationError
from spire_py.server.plugins.nodeattestor.sshpop import SshPopAttestor as ServerSshPop

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
TD = "example.org"


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


def make_host(tmp_path: Path, ca_type: str, host_type: str, *, host_cert: bool = True) -> tuple[Path, Path, Path]:
    ca, host = tmp_path / "ca", tmp_path / "ssh_host_key"
    keygen("-t", ca_type, "-N", "", "-C", "ca@example.org", "-f", str(ca))
    keygen("-t", host_type, "-N", "", "-f", str(host))
    keygen("-s", str(ca), "-I", "node1", *(["-h"] if host_cert else []), "-n", "node1.example.org",
           "-V", "-5m:+1h", str(host) + ".pub")
    return Path(str(ca) + ".pub"), host, Path(str(host) + "-cert.pub")


@pytest.mark.parametrize("ca_type, host_type", [("rsa", "rsa"), ("ed25519", "ecdsa"), ("ecdsa", "ed25519")])
async def test_openssh_host_certificate_attests(tmp_path: Path, ca_type: str, host_type: str) -> None:
    ca_pub, key, cert = make_host(tmp_path, ca_type, host_type)
    server = ServerSshPop.configure({"cert_authorities_path": str(ca_pub), "canonical_domain": "example.org",
                                     "agent_path_template": "/sshpop/{{ .Hostname }}"}, PluginContext(TD))
    agent = AgentSshPop.configure({"host_key_path": str(key), "host_cert_path": str(cert)},
                                  PluginContext(TD, side="agent"))
    result = await server.attest(await agent.payload(), agent.respond)
    assert str(result.agent_id) == f"spiffe://{TD}/spire/agent/sshpop/node1"


async def test_openssh_user_certificate_is_refused(tmp_path: Path) -> None:
    ca_pub, key, cert = make_host(tmp_path, "ed25519", "ed25519", host_cert=False)
    server = ServerSshPop.configure({"cert_authorities": [ca_pub.read_text()]}, PluginContext(TD))
    agent = AgentSshPop.configure({"host_key_path": str(key), "host_cert_path": str(cert)},
                                  PluginContext(TD, side="agent"))
    with pytest.raises(AttestationError, match="certificate presented as a host key has type 1"):
        await server.attest(await agent.payload(), agent.respond)
