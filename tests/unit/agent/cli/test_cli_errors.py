"""spire-agent's error lines as SPIRE prints them: the Workload API commands print the bare
message, the admin-socket commands (debug, logger) print ``Error: ``, healthcheck says
``Agent is unhealthy: ...``; and the admin commands' pretty output."""

from __future__ import annotations

from pathlib import Path

import pytest

from spire_py.agent.cli.admin import print_info
from spire_py.agent.cli.main import app
from spire_py.common.cli import Context
from spire_py.proto.spire.api.agent.debug.v1 import debug_pb2


def dial_error(path: Path) -> str:
    return ('rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: '
            f'dial unix {path}: connect: no such file or directory"')


@pytest.fixture
def gone(tmp_path: Path) -> Path:
    return tmp_path / "gone.sock"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = app.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_admin_commands_have_spires_names() -> None:
    assert {" ".join(k) for k in app.commands} >= {"debug getinfo", "logger get", "logger set", "logger reset"}


@pytest.mark.parametrize(("argv", "message"), [
    (("api", "fetch", "jwt"), "audience must be specified"),
    (("api", "validate", "jwt"), "audience must be specified"),
    (("api", "validate", "jwt", "-audience", "db"), "svid must be specified"),
])
def test_workload_api_commands_print_the_bare_message(capsys, gone, argv, message) -> None:
    assert run(capsys, *argv, "-socketPath", str(gone)) == (1, "", message + "\n")


def test_workload_api_dial_failure_is_grpc_gos_text_alone(capsys, gone) -> None:
    assert run(capsys, "api", "fetch", "x509", "-socketPath", str(gone)) == (1, "", dial_error(gone) + "\n")
    code, _, err = run(capsys, "api", "fetch", "jwt", "-audience", "db", "-socketPath", str(gone))
    assert (code, err) == (1, dial_error(gone) + "\n")


def test_healthcheck_on_a_dead_socket(capsys, gone) -> None:
    assert run(capsys, "healthcheck", "-socketPath", str(gone)) == (
        1, "", "Agent is unhealthy: unable to determine health\n")
    assert run(capsys, "healthcheck", "-socketPath", str(gone), "-verbose") == (
        1, "Checking agent health...\n",
        f"Failed to check health: {dial_error(gone)}\nAgent is unhealthy: unable to determine health\n")


@pytest.mark.parametrize(("argv", "prefix"), [
    (("logger", "get"), "error fetching logger: "),
    (("logger", "set", "-level", "debug"), "failed to set log level: "),
    (("logger", "reset"), "failed to reset logger: "),
    (("debug", "getinfo"), ""),
])
def test_admin_commands_on_a_dead_socket(capsys, gone, argv, prefix) -> None:
    assert run(capsys, *argv, "-socketPath", str(gone)) == (1, "", f"Error: {prefix}{dial_error(gone)}\n")


def test_logger_set_checks_the_level_first(capsys, gone) -> None:
    assert run(capsys, "logger", "set", "-socketPath", str(gone)) == (1, "", "Error: a value (-level) must be set\n")
    assert run(capsys, "logger", "set", "-level", "Loud", "-socketPath", str(gone)) == (
        1, "", 'Error: the value "Loud" is not a valid setting\n')


def test_admin_socket_default_is_spires() -> None:
    from spire_py.common.cli import FlagSet

    fs = FlagSet()
    app.commands[("logger", "get")].setup(fs)
    assert fs.flags["socketPath"].default == "/tmp/spire-agent/private/admin.sock"


def test_debug_getinfo_pretty_output(capsys) -> None:
    resp = debug_pb2.GetInfoResponse(uptime=3725, last_sync_success=1767225600, cached_x509_svids_count=3,
                                     cached_jwt_svids_count=1)
    leaf = resp.svid_chain.add(expires_at=1767229200, subject="O=SPIRE,C=US")
    leaf.id.trust_domain, leaf.id.path = "example.org", "/spire/agent/join_token/t"
    resp.svid_chain.add(expires_at=1798761600, subject="O=SPIFFE,C=US")
    print_info(Context({}, [], set()), resp)
    assert capsys.readouterr().out == (
        "Agent Debug Info:\n"
        "  Uptime:                          1h2m5s\n"
        "  Last Sync Success:               2026-01-01T00:00:00Z\n"
        "  Cached X.509 SVIDs:              3\n"
        "  Cached JWT SVIDs:                1\n"
        "  Cached SVID Store X.509 SVIDs:   0\n"
        "  SVID Chain:\n"
        "    [0] SPIFFE ID:  spiffe://example.org/spire/agent/join_token/t\n"
        "        Subject:    O=SPIRE,C=US\n"
        "        Expires At: 2026-01-01T01:00:00Z\n"
        "    [1] SPIFFE ID:  (none)\n"
        "        Subject:    O=SPIFFE,C=US\n"
        "        Expires At: 2027-01-01T00:00:00Z\n")


def test_debug_getinfo_before_any_sync(capsys) -> None:
    print_info(Context({}, [], set()), debug_pb2.GetInfoResponse())
    assert "  Last Sync Success:               (never)\n" in capsys.readouterr().out
