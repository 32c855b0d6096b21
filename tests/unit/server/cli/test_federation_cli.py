"""spire-server federation create|update|delete|list|show|refresh against an in-process
server: SPIRE's flags, JSON data file, pretty output, errors and -output json."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from spire_py.server.cli.main import app
from tests.unit.helpers.federation import make_ca
from tests.unit.helpers.inprocess_server import Handle, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Handle]:
    async with running_server(tmp_path) as h:
        yield h


async def _cli(capsys: Any, server: Handle, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(app.main, [*argv, "-socketPath", server.server.config.socket_path])
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_create_list_show_update_delete_print_as_spire(server: Handle, capsys: Any, tmp_path: Path) -> None:
    bundle = tmp_path / "other.pem"
    bundle.write_bytes(make_ca().write(tmp_path, "other")[0].read_bytes())
    code, out, err = await _cli(capsys, server, "federation", "create", "-trustDomain", "other.test",
                                "-bundleEndpointURL", "https://127.0.0.1:8443", "-bundleEndpointProfile", "https_spiffe",
                                "-endpointSpiffeID", "spiffe://other.test/spire/server",
                                "-trustDomainBundlePath", str(bundle))
    assert (code, err) == (0, "")
    assert out == ("\nTrust domain              : other.test\n"
                   "Bundle endpoint URL       : https://127.0.0.1:8443\n"
                   "Bundle endpoint profile   : https_spiffe\n"
                   "Endpoint SPIFFE ID        : spiffe://other.test/spire/server\n")
    data = tmp_path / "rels.json"
    data.write_text(json.dumps({"federationRelationships": [
        {"trustDomain": "web.test", "bundleEndpointURL": "https://web.test/bundle", "bundleEndpointProfile": "https_web"}]}))
    code, out, _ = await _cli(capsys, server, "federation", "create", "-data", str(data))
    assert code == 0 and "Bundle endpoint profile   : https_web\n" in out

    code, out, _ = await _cli(capsys, server, "federation", "list")
    assert code == 0 and out.startswith("Found 2 federation relationships\n\nTrust domain              : other.test\n")
    code, out, _ = await _cli(capsys, server, "federation", "show", "-trustDomain", "web.test")
    assert out == ("Found a federation relationship with trust domain web.test:\n\n"
                   "Trust domain              : web.test\nBundle endpoint URL       : https://web.test/bundle\n"
                   "Bundle endpoint profile   : https_web\n")
    code, out, _ = await _cli(capsys, server, "federation", "show", "-trustDomain", "web.test", "-output", "json")
    assert json.loads(out) == {"trust_domain": "web.test", "bundle_endpoint_url": "https://web.test/bundle", "https_web": {}}

    code, out, _ = await _cli(capsys, server, "federation", "update", "-trustDomain", "web.test",
                              "-bundleEndpointURL", "https://moved.test", "-bundleEndpointProfile", "https_web")
    assert code == 0 and "Bundle endpoint URL       : https://moved.test\n" in out
    code, out, _ = await _cli(capsys, server, "federation", "delete", "-id", "web.test")
    assert (code, out) == (0, "federation relationship deleted.\n")
    code, out, err = await _cli(capsys, server, "federation", "delete", "-id", "web.test")
    assert code == 1 and err == 'Error: failed to delete federation relationship "web.test": federation relationship not found\n'


async def test_failed_creates_go_to_stderr_with_the_code(server: Handle, capsys: Any) -> None:
    code, out, err = await _cli(capsys, server, "federation", "create", "-trustDomain", "example.org",
                                "-bundleEndpointURL", "https://x.test", "-bundleEndpointProfile", "https_web")
    assert code == 1 and out == "\n"  # SPIRE's blank line goes to stdout, the report to stderr
    assert err == ("Failed to create the following federation relationship (code: InvalidArgument, msg: "
                   '"unable to create federation relationship for server trust domain"):\n'
                   "Trust domain              : example.org\nBundle endpoint URL       : https://x.test\n"
                   "Bundle endpoint profile   : https_web\n"
                   "Error: failed to create one or more federation relationships\n")


@pytest.mark.parametrize("argv, message", [
    (["create"], "Error: trust domain is required\n"),
    (["create", "-trustDomain", "a.test"], "Error: bundle endpoint URL is required\n"),
    (["create", "-trustDomain", "a.test", "-bundleEndpointURL", "https://a"], 'Error: unknown bundle endpoint profile type: ""\n'),
    (["create", "-trustDomain", "a.test", "-bundleEndpointURL", "https://a", "-bundleEndpointProfile", "https_spiffe"],
     "Error: endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set\n"),
    (["create", "-data", "x.json", "-trustDomain", "a.test"],
     "Error: cannot use other flags to specify relationship fields when 'data' flag is set\n"),
    (["delete"], "Error: id is required\n"),
    (["refresh"], "Error: id is required\n"),
    (["show"], "Error: a trust domain name is required\n"),
    (["refresh", "-id", "nobody.test"], 'Error: there is no federation relationship with trust domain "nobody.test"\n'),
    (["show", "-trustDomain", "nobody.test"],
     "Error: error showing federation relationship: rpc error: code = NotFound desc = federation relationship does not exist\n"),
])
async def test_argument_and_lookup_errors_use_spire_s_wording(server: Handle, capsys: Any, argv: list[str], message: str) -> None:
    code, out, err = await _cli(capsys, server, "federation", *argv)
    assert (code, err) == (1, message)


async def test_list_json_and_empty_pretty(server: Handle, capsys: Any) -> None:
    code, out, _ = await _cli(capsys, server, "federation", "list")
    assert out == "Found 0 federation relationships\n"
    code, out, _ = await _cli(capsys, server, "federation", "list", "-output", "json")
    assert json.loads(out) == {"federation_relationships": [], "next_page_token": ""}
