"""k8s_psat (agent): SPIRE's payload from the projected token file, config refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spire_py.agent.plugins.nodeattestor.base import AgentAttestationError
from spire_py.agent.plugins.nodeattestor.k8s_psat import PSATAttestor
from spire_py.common.plugin import PluginConfigError, PluginContext

CTX = PluginContext("example.org", side="agent")


async def test_payload_is_the_cluster_and_the_token_as_read(tmp_path: Path) -> None:
    token = tmp_path / "spire-agent"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    a = PSATAttestor.configure({"cluster": "prod", "token_path": str(token)}, CTX)
    assert json.loads(await a.payload()) == {"cluster": "prod", "token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}
    token.write_text("rotated")  # the kubelet rotates the file: every attestation reads it again
    assert json.loads(await a.payload())["token"] == "rotated"


def test_token_path_defaults_to_spires() -> None:
    assert PSATAttestor.configure({"cluster": "prod"}, CTX).token_path == "/var/run/secrets/tokens/spire-agent"


def test_cluster_is_required() -> None:
    with pytest.raises(PluginConfigError, match="missing required cluster block"):
        PSATAttestor.check_config({"token_path": "/t"}, CTX)


async def test_missing_or_empty_token_file_fails(tmp_path: Path) -> None:
    a = PSATAttestor.configure({"cluster": "prod", "token_path": str(tmp_path / "nope")}, CTX)
    with pytest.raises(AgentAttestationError, match="unable to load token from .*nope"):
        await a.payload()
    (tmp_path / "empty").write_text("")
    a = PSATAttestor.configure({"cluster": "prod", "token_path": str(tmp_path / "empty")}, CTX)
    with pytest.raises(AgentAttestationError, match="is empty"):
        await a.payload()
