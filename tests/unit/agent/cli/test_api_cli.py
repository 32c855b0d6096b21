"""spire-agent api fetch / validate / watch against a served agent socket, with SPIRE's outputs."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_py.agent.cli.main import app

from tests.unit.helpers.workload_world import FEDERATED_TD, WORKLOAD_ID, uid_selector


def cli(*argv: str) -> int:
    return app.main(list(argv))


def go_time(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def test_commands_are_registered_with_spire_names():
    assert {" ".join(k) for k in app.commands} >= {
        "api fetch", "api fetch x509", "api fetch jwt", "api validate jwt", "api watch"}


def test_fetch_x509_pretty_prints_like_spire(threaded_world, capsys):
    w = threaded_world.world
    entry = w.add_entry(hint="internal", federates_with=[FEDERATED_TD])
    leaf = w.cache.svids[entry.id].chain[0]
    assert cli("api", "fetch", "x509", "-socketPath", w.socket_path) == 0
    out = capsys.readouterr().out
    assert re.match(r"Received 1 svid after [0-9.]+(ms|µs|s)\n\n", out)
    assert (f"SPIFFE ID:\t\t{WORKLOAD_ID}\nHint:\t\t\tinternal\n"
            f"SVID Valid After:\t{go_time(leaf.not_valid_before_utc)}\n"
            f"SVID Valid Until:\t{go_time(leaf.not_valid_after_utc)}\n"
            f"CA #1 Valid After:\t{go_time(w.ca.cert.not_valid_before_utc)}\n") in out
    assert f"[{FEDERATED_TD}] CA #1 Valid Until:\t{go_time(w.partner.cert.not_valid_after_utc)}\n" in out
    assert out.endswith("\n\n")


def test_fetch_alias_and_write_files_with_spire_names_and_modes(threaded_world, capsys, tmp_path):
    w = threaded_world.world
    entry = w.add_entry(federates_with=[FEDERATED_TD])
    assert cli("api", "fetch", "-socketPath", w.socket_path, "-write", str(tmp_path), "-silent") == 0
    out = capsys.readouterr().out
    assert "Received" not in out
    assert f"Writing SVID #0 to file {tmp_path}/svid.0.pem.\n" in out
    assert f"Writing federated bundle #0 for trust domain {FEDERATED_TD} to file {tmp_path}/federated_bundle.0.0.pem." in out
    svid = w.cache.svids[entry.id]
    assert x509.load_pem_x509_certificates((tmp_path / "svid.0.pem").read_bytes()) == svid.chain
    assert x509.load_pem_x509_certificates((tmp_path / "bundle.0.pem").read_bytes()) == [w.ca.cert]
    assert x509.load_pem_x509_certificates((tmp_path / "federated_bundle.0.0.pem").read_bytes()) == [w.partner.cert]
    key = serialization.load_pem_private_key((tmp_path / "svid.0.key").read_bytes(), None)
    assert key.public_key().public_numbers() == svid.key.public_key().public_numbers()
    assert stat.S_IMODE(os.stat(tmp_path / "svid.0.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "svid.0.pem").st_mode) == 0o644


def test_fetch_x509_json_is_the_protojson_response(threaded_world, capsys):
    w = threaded_world.world
    w.add_entry()
    assert cli("api", "fetch", "x509", "-socketPath", w.socket_path, "-output", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc) == ["crl", "federated_bundles", "svids"]
    assert doc["crl"] == [] and doc["federated_bundles"] == {}
    assert doc["svids"][0]["spiffe_id"] == WORKLOAD_ID
    assert sorted(doc["svids"][0]) == ["bundle", "hint", "spiffe_id", "x509_svid", "x509_svid_key"]


def test_fetch_x509_json_escapes_html_like_go(threaded_world, capsys):
    # Go's encoding/json writes <, > and & as \u003c, \u003e and \u0026; spire-server does the same.
    w = threaded_world.world
    w.add_entry(hint="<a&b>")
    assert cli("api", "fetch", "x509", "-socketPath", w.socket_path, "-output", "json") == 0
    out = capsys.readouterr().out
    assert '"hint":"\\u003ca\\u0026b\\u003e"' in out
    assert not {"<", ">", "&"} & set(out)
    assert json.loads(out)["svids"][0]["hint"] == "<a&b>"


def test_fetch_x509_without_identity_fails_with_the_rpc_error(threaded_world, capsys):
    w = threaded_world.world
    w.add_entry(selectors=[uid_selector(os.getuid() + 4242)])
    assert cli("api", "fetch", "x509", "-socketPath", w.socket_path) == 1
    err = capsys.readouterr().err
    assert "rpc error: code = PermissionDenied desc = no identity issued" in err
    assert len(err.strip().splitlines()) == 1


def test_timeout_while_the_svid_is_not_minted_yet(threaded_world, capsys):
    w = threaded_world.world
    entry = w.add_entry()
    del w.cache.svids[entry.id]  # entry synced, SVID still being signed: the stream waits
    assert cli("api", "fetch", "x509", "-socketPath", w.socket_path, "-timeout", "200ms") == 1
    assert "rpc error: code = DeadlineExceeded desc = context deadline exceeded" in capsys.readouterr().err


def test_missing_socket_is_one_line_error(tmp_path, capsys):
    assert cli("api", "fetch", "x509", "-socketPath", str(tmp_path / "nope.sock")) == 1
    err = capsys.readouterr().err.strip()
    assert "connect: no such file or directory" in err and "\n" not in err


def test_fetch_jwt_prints_token_hint_and_bundle(threaded_world, capsys):
    w = threaded_world.world
    w.add_entry(hint="internal")
    assert cli("api", "fetch", "jwt", "-socketPath", w.socket_path, "-audience", "db,cache") == 0
    out = capsys.readouterr().out
    token = re.search(rf"token\({re.escape(WORKLOAD_ID)}\):\n\t(\S+)\n", out).group(1)
    assert sorted(json.loads(_jwt_payload(token))["aud"]) == ["cache", "db"]
    assert f"hint({WORKLOAD_ID}):\n\tinternal\n" in out
    assert "bundle(spiffe://example.org):\n\t{" in out


def test_fetch_jwt_needs_an_audience(threaded_world, capsys):
    assert cli("api", "fetch", "jwt", "-socketPath", threaded_world.world.socket_path) == 1
    assert "audience must be specified" in capsys.readouterr().err


def test_fetch_jwt_json_is_an_array_of_svids_then_bundles(threaded_world, capsys):
    w = threaded_world.world
    w.add_entry()
    assert cli("api", "fetch", "jwt", "-socketPath", w.socket_path, "-audience", "db", "-output", "json") == 0
    svids, bundles = json.loads(capsys.readouterr().out)
    assert svids["svids"][0]["spiffe_id"] == WORKLOAD_ID
    assert "spiffe://example.org" in bundles["bundles"]


def test_validate_jwt_valid_and_invalid(threaded_world, capsys):
    w = threaded_world.world
    w.add_entry()
    assert cli("api", "fetch", "jwt", "-socketPath", w.socket_path, "-audience", "db") == 0
    token = re.search(r"token\(.*\):\n\t(\S+)\n", capsys.readouterr().out).group(1)
    assert cli("api", "validate", "jwt", "-socketPath", w.socket_path, "-audience", "db", "-svid", token) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"SVID is valid.\nSPIFFE ID : {WORKLOAD_ID}\nClaims    : {{")
    assert '"aud":["db"]' in out
    assert cli("api", "validate", "jwt", "-socketPath", w.socket_path, "-audience", "other", "-svid", token) == 1
    assert "SVID is not valid: " in capsys.readouterr().err
    assert cli("api", "validate", "jwt", "-socketPath", w.socket_path, "-audience", "db") == 1
    assert "svid must be specified" in capsys.readouterr().err


def test_watch_prints_updates_until_interrupted(threaded_world):
    w = threaded_world.world
    entry = w.add_entry()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    code = "import sys; from spire_py.agent.cli.main import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "api", "watch", "-socketPath", w.socket_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = _read_until(proc, "CA #1 Valid Until")
        assert "Received 1 svid after" in first and WORKLOAD_ID in first
        rotated = w.issue(entry)
        threaded_world.run(w.cache.publish())
        second = _read_until(proc, "CA #1 Valid Until")
        assert go_time(rotated.chain[0].not_valid_after_utc) in second
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def _read_until(proc, marker: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    buf = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        buf += line
        if marker in line:
            return buf
    pytest.fail(f"no {marker!r} in watch output: {buf!r}")


def _jwt_payload(token: str) -> bytes:
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
