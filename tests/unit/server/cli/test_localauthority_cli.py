"""spire-server localauthority x509|jwt ... and upstreamauthority taint|revoke against an
in-process server: SPIRE's pretty output (authoritycommon) and error lines, word for word."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from spire_py.server.cli.main import app
from tests.unit.helpers.inprocess_server import Handle, running_server

EXPIRES = r"  Expires at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Handle]:
    async with running_server(tmp_path) as h:
        yield h


async def _cli(server: Handle, capsys: Any, *argv: str) -> tuple[int, str, str]:
    rest = list(argv)
    words = []
    while rest and not rest[0].startswith("-"):
        words.append(rest.pop(0))
    code = await asyncio.to_thread(app.main, [*words, "-socketPath", server.server.config.socket_path, *rest])
    out = capsys.readouterr()
    return code, out.out, out.err


def _state(lines: list[str], x509: bool = True) -> str:
    m = re.fullmatch(r"  Authority ID: (\S+)", lines[0])
    assert m, lines
    assert re.fullmatch(EXPIRES, lines[1]), lines[1]
    if x509:
        assert lines[2] == "  Upstream authority ID: No upstream authority"
    return m.group(1)


async def test_x509_show_prepare_activate_taint_revoke(server: Handle, capsys: Any) -> None:
    code, out, err = await _cli(server, capsys, "localauthority", "x509", "show")
    lines = out.splitlines()
    assert (code, err, lines[0]) == (0, "", "Active X.509 authority:")
    first = _state(lines[1:4])
    assert lines[4:] == ["", "Prepared X.509 authority:", "  No prepared X.509 authority found", "",
                         "Old X.509 authority:", "  No old X.509 authority found"]

    code, out, _ = await _cli(server, capsys, "localauthority", "x509", "prepare")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "Prepared X.509 authority:" and len(lines) == 4
    second = _state(lines[1:])
    assert second != first

    assert await _cli(server, capsys, "localauthority", "x509", "activate") == (
        1, "", "Error: an authority ID is required\n")
    code, out, _ = await _cli(server, capsys, "localauthority", "x509", "activate", "-authorityID", second)
    assert code == 0 and out.splitlines()[0] == "Activated X.509 authority:"

    assert await _cli(server, capsys, "localauthority", "x509", "taint", "-authorityID", second) == (
        1, "", "Error: could not taint X.509 authority: rpc error: code = InvalidArgument "
               "desc = unable to taint current local authority\n")
    code, out, _ = await _cli(server, capsys, "localauthority", "x509", "taint", "-authorityID", first)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "Tainted X.509 authority:" and _state(lines[1:]) == first

    code, out, _ = await _cli(server, capsys, "localauthority", "x509", "show", "-output", "json")
    doc = json.loads(out)
    assert doc["active"]["authority_id"] == second and doc["old"]["authority_id"] == first
    assert "prepared" not in doc

    code, out, _ = await _cli(server, capsys, "localauthority", "x509", "revoke", "-authorityID", first)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "Revoked X.509 authority:" and lines[1] == f"  Authority ID: {first}"
    # A revoke answer carries no expiry: Go prints the zero Unix time.
    assert lines[2] == f"  Expires at: {dt.datetime(1970, 1, 1):%Y-%m-%d %H:%M:%S} +0000 UTC"


async def test_jwt_show_and_prepare(server: Handle, capsys: Any) -> None:
    code, out, _ = await _cli(server, capsys, "localauthority", "jwt", "prepare")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "Prepared JWT authority:" and len(lines) == 3
    prepared = _state(lines[1:], x509=False)
    code, out, _ = await _cli(server, capsys, "localauthority", "jwt", "show")
    lines = out.splitlines()
    assert lines[0] == "Active JWT authority:"
    _state(lines[1:3], x509=False)
    assert lines[3:6] == ["", "Prepared JWT authority:", f"  Authority ID: {prepared}"]
    assert lines[7:] == ["", "Old JWT authority:", "  No old JWT authority found"]


async def test_upstreamauthority_needs_its_flag_and_an_upstream(server: Handle, capsys: Any) -> None:
    assert await _cli(server, capsys, "upstreamauthority", "taint") == (
        1, "", "Error: the Subject Key ID of the X.509 upstream authority is required\n")
    assert await _cli(server, capsys, "upstreamauthority", "revoke", "-subjectKeyID", "ab") == (
        1, "", "Error: could not revoke X.509 upstream authority: rpc error: code = FailedPrecondition "
               "desc = upstream authority is not configured\n")
