"""experimental.use_sync_authorized_entries = false: the agent fetches its entries with the older
GetAuthorizedEntries (all of them each sync) instead of SyncAuthorizedEntries, as SPIRE's agent
does, and workloads get their SVIDs as usual. Real server and agent processes."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.helpers.harness import TD, WORKLOAD, wait_for


def fetch_ok(sock: str) -> bool:
    proc = subprocess.run([sys.executable, WORKLOAD, str(os.getuid()), sock, "fetch"], capture_output=True,
                          text=True, timeout=30)
    return proc.returncode == 0


def test_with_sync_authorized_entries_off_the_agent_uses_get_authorized_entries(make_server, start_agent):
    server = make_server(extra_server="audit_log_enabled = true")
    token = server.token()
    server.cli("entry", "create", "-parentID", f"spiffe://{TD}/spire/agent/join_token/{token}",
               "-spiffeID", f"spiffe://{TD}/me", "-selector", f"unix:uid:{os.getuid()}")
    agent = start_agent(server, token, extra_agent="experimental { use_sync_authorized_entries = false }")
    wait_for(lambda: fetch_ok(agent.socket), 60, "an SVID through GetAuthorizedEntries")
    audit = [line for line in server.proc.logs().splitlines() if "type=audit" in line]
    assert any("Entry/GetAuthorizedEntries" in line and "status=success" in line for line in audit)
    assert not any("SyncAuthorizedEntries" in line for line in audit)
    assert "use_sync_authorized_entries is deprecated" in agent.proc.logs()
