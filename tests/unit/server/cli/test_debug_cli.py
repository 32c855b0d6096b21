"""spire-server debug getinfo against an in-process server: SPIRE's pretty layout
(cmd/spire-server/cli/debug) and -output json."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from spire_py.server.cli.main import app
from tests.unit.helpers.inprocess_server import TD, Handle, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Handle]:
    async with running_server(tmp_path) as h:
        yield h


async def _cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(app.main, list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_getinfo_prints_spire_s_layout(server: Handle, capsys: Any) -> None:
    await server.attest_agent("cli-debug")
    code, out, err = await _cli(capsys, "debug", "getinfo", "-socketPath", server.server.config.socket_path)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Server Debug Info:"
    assert re.fullmatch(r"  Uptime:                  (\d+m)?\d+s", lines[1])
    assert lines[2:5] == ["  Registered Agents:       1", "  Registration Entries:    0",
                          "  Federated Bundles:       0"]
    assert lines[5] == "  SVID Chain:"
    assert lines[6] == f"    [0] SPIFFE ID:  spiffe://{TD}/spire/server"
    assert lines[7].startswith("        Subject:    ")
    assert re.fullmatch(r"        Expires At: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[8])


async def test_getinfo_json_is_the_response_message(server: Handle, capsys: Any) -> None:
    code, out, _ = await _cli(capsys, "debug", "getinfo", "-socketPath", server.server.config.socket_path, "-output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["svid_chain"][0]["id"] == {"trust_domain": TD, "path": "/spire/server"}
    assert doc["agents_count"] == 0
