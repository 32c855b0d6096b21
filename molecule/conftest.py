"""What every fleet scenario's verify step shares.

Molecule runs pytest with testinfra's podman backend (``--connection=podman``) and passes the
scenario's inventory (``--ansible-inventory``). The inventory says which hosts are servers and
agents and what each workload must receive (``fleet_expected_svids``), so one set of checks in
``molecule/_shared/tests`` serves every scenario. Tests take ``server``, ``agent`` or
``fleet_host`` (a host name, one test per host) and the session-wide ``fleet``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shlex
import subprocess
import time
from functools import cached_property
from typing import Any, Optional

import pytest
import testinfra
from cryptography import x509

SERVER_SOCKET = "/run/spire-server/private/api.sock"
AGENT_SOCKET = "/run/spire/agent/public/api.sock"
WORKLOAD_USER = "workload"
WORKLOAD_UID = 2001


class Fleet:
    """The scenario's hosts, read from its Ansible inventory."""

    def __init__(self, inventory: str) -> None:
        out = subprocess.run(["ansible-inventory", "-i", inventory, "--list"], check=True,
                             capture_output=True, text=True).stdout
        data = json.loads(out)
        self.hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})
        self.groups = {name: sorted(body.get("hosts", [])) for name, body in data.items()
                       if isinstance(body, dict) and name != "_meta"}
        self._hosts: dict[str, Any] = {}

    @cached_property
    def servers(self) -> list[str]:
        return self.groups.get("spire_servers", [])

    @cached_property
    def agents(self) -> list[str]:
        return self.groups.get("spire_agents", [])

    def var(self, host: str, name: str, default: Any = None) -> Any:
        return self.hostvars.get(host, {}).get(name, default)

    def host(self, name: str) -> Any:
        if name not in self._hosts:
            self._hosts[name] = testinfra.get_host(f"podman://{name}")
        return self._hosts[name]

    def expected_svids(self, agent: str) -> list[str]:
        return sorted(self.var(agent, "fleet_expected_svids", {}).get(agent, []))


def _inventory(config: pytest.Config) -> str:
    path = config.getoption("ansible_inventory", None) or os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        raise pytest.UsageError("the fleet tests need the scenario inventory (--ansible-inventory)")
    return str(path)


_FLEET: Optional[Fleet] = None


def get_fleet(config: pytest.Config) -> Fleet:
    global _FLEET
    if _FLEET is None:
        _FLEET = Fleet(_inventory(config))
    return _FLEET


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fleet = get_fleet(metafunc.config)
    for arg, names in (("server", fleet.servers), ("agent", fleet.agents),
                       ("fleet_host", fleet.servers + fleet.agents)):
        if arg in metafunc.fixturenames:
            metafunc.parametrize(arg, names, ids=names)


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest) -> Fleet:
    return get_fleet(request.config)


# ------------------------------------------------------------------------------ workload helpers
def as_workload(command: list[str]) -> str:
    return "runuser -u %s -- %s" % (WORKLOAD_USER, " ".join(shlex.quote(c) for c in command))


def fetch_x509(h: Any, user_cmd: bool = True, wait: float = 60.0) -> dict[str, Any]:
    """X509SVIDResponse as JSON from the Workload API, retried while entries propagate."""
    cmd = ["spire-agent", "api", "fetch", "x509", "-socketPath", AGENT_SOCKET, "-output", "json"]
    deadline = time.monotonic() + wait
    while True:
        r = h.run(as_workload(cmd) if user_cmd else " ".join(cmd))
        if r.rc == 0:
            return json.loads(r.stdout)
        if time.monotonic() > deadline:
            raise AssertionError(f"api fetch x509 failed (rc={r.rc}): {r.stderr.strip() or r.stdout.strip()}")
        time.sleep(2)


def fetch_jwt(h: Any, audience: str, wait: float = 60.0) -> dict[str, Any]:
    cmd = ["spire-agent", "api", "fetch", "jwt", "-socketPath", AGENT_SOCKET, "-audience", audience,
           "-output", "json"]
    deadline = time.monotonic() + wait
    while True:
        r = h.run(as_workload(cmd))
        if r.rc == 0:
            svids, _bundles = json.loads(r.stdout)
            return svids
        if time.monotonic() > deadline:
            raise AssertionError(f"api fetch jwt failed (rc={r.rc}): {r.stderr.strip() or r.stdout.strip()}")
        time.sleep(2)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def der_certs(b64: str) -> list[x509.Certificate]:
    """Certificates concatenated in DER, as the Workload API sends chains and bundles."""
    data = base64.b64decode(b64)
    certs, i = [], 0
    while i < len(data):
        assert data[i] == 0x30, f"not a DER SEQUENCE at byte {i}"
        size = data[i + 1]
        head = 2
        if size & 0x80:
            head += size & 0x7F
            size = int.from_bytes(data[i + 2:i + head], "big")
        certs.append(x509.load_der_x509_certificate(data[i:i + head + size]))
        i += head + size
    return certs


def check_x509_svid(svid: dict[str, Any]) -> x509.Certificate:
    """The leaf names the SPIFFE ID, is valid now and chains to the bundle that came with it."""
    chain = der_certs(svid["x509_svid"])
    bundle = der_certs(svid["bundle"])
    leaf = chain[0]
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [svid["spiffe_id"]], f"URI SANs {uris} for {svid['spiffe_id']}"
    now = dt.datetime.now(dt.timezone.utc)
    assert leaf.not_valid_before_utc <= now + dt.timedelta(minutes=1) and now < leaf.not_valid_after_utc, \
        f"{svid['spiffe_id']} not valid now: {leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc}"
    for i, cert in enumerate(chain[:-1]):
        cert.verify_directly_issued_by(chain[i + 1])
    top = chain[-1]
    assert top in bundle or any(_issued_by(top, ca) for ca in bundle), \
        f"{svid['spiffe_id']} does not chain to the bundle it came with"
    return leaf


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not this CA"
        return False
