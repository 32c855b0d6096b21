"""Real server and agent processes for integration tests (their fixtures are in
tests/integration/conftest.py; tests/collection/conftest.py loads this file by path).

``server_factory`` starts ``spire-server run`` on a free loopback port with its own
socket, data dir and sqlite database; ``agent_factory`` starts ``spire-agent run``
against it. Processes are killed when the factory's context exits, whatever happens.
A server's ``datastore=...`` swaps in another DataStore block (databases.py has
PostgreSQL/MySQL ones); ``bind_address``/``port`` and the agent's
``server_address``/``prefix`` serve the HA tests. ``WORKLOAD`` is the workload script
(workload.py, run as another uid) and ``fetch``/``svid_for`` drive it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

BIN = Path(sys.executable).parent
SERVER = str(BIN / "spire-server")
AGENT = str(BIN / "spire-agent")
TD = "example.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_dir(tmp_path: Path, name: str) -> Path:
    """Unix socket paths are limited to ~107 bytes: keep sockets under /tmp."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=f"spire-{name}-", dir="/tmp"))
    d.chmod(0o755)  # workloads running as other uids must reach the agent socket below it
    return d


def run(args: list[str], check: bool = True, input: Optional[str] = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition", interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Proc:
    args: list[str]
    log_path: Path
    proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> "Proc":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class ServerHandle:
    dir: Path
    conf: Path
    socket: str
    port: int
    proc: Proc
    extra_conf: str = ""
    bind_address: str = "127.0.0.1"

    def cli(self, *args: str, check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        words = []
        rest = list(args)
        while rest and not rest[0].startswith("-"):
            words.append(rest.pop(0))
        return run([SERVER, *words, "-socketPath", self.socket, *rest], check=check, input=input)

    def healthy(self) -> bool:
        return self.cli("healthcheck", check=False).returncode == 0

    def restart(self) -> None:
        self.proc = Proc(self.proc.args, self.proc.log_path).start()
        wait_for(self.healthy, 60, "server healthcheck")

    def token(self, *args: str) -> str:
        out = self.cli("token", "generate", *args).stdout
        m = re.search(r"Token: (\S+)", out)
        assert m, out
        return m.group(1)

    def bundle_path(self) -> Path:
        p = self.dir / "bundle.pem"
        p.write_text(self.cli("bundle", "show", "-format", "pem").stdout)
        return p


def sqlite_datastore(d: Path) -> str:
    return f"""DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{d}/data/datastore.sqlite3"
        }}
    }}"""


def server_conf(d: Path, sock: str, port: int, extra_server: str = "", extra_plugins: str = "",
                keymanager: str = 'KeyManager "memory" { plugin_data {} }', extra_top: str = "",
                datastore: Optional[str] = None, bind_address: str = "127.0.0.1") -> str:
    return f"""
server {{
    bind_address = "{bind_address}"
    bind_port = "{port}"
    socket_path = "{sock}"
    trust_domain = "{TD}"
    data_dir = "{d}/data"
    log_level = "DEBUG"
    {extra_server}
}}

plugins {{
    {datastore or sqlite_datastore(d)}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    {keymanager}
    {extra_plugins}
}}
{extra_top}
"""


def assert_validates_and_creates_nothing(cli: str, conf: Path) -> None:
    """``<cli> validate`` accepts ``conf`` in SPIRE's words and creates nothing beside it."""
    proc = run([cli, "validate", "-config", str(conf)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    daemon = "server" if cli == SERVER else "agent"
    assert f"SPIRE {daemon} configuration file is valid." in proc.stdout
    assert not (conf.parent / "data").exists()


def server_conf_file(d: Path, plugins: str) -> Path:
    """``d``/server.conf: the default test server with ``plugins`` added (for ``validate``)."""
    conf = d / "server.conf"
    conf.write_text(server_conf(d, f"{d}/api.sock", 8081, extra_plugins=plugins))
    return conf


@contextmanager
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerHandle]]:
    """``make_server``: each call starts one more server; all are stopped at exit."""
    started: list[ServerHandle] = []

    def factory(extra_server: str = "", extra_plugins: str = "", keymanager: Optional[str] = None,
                extra_top: str = "", datastore: Optional[str] = None, bind_address: str = "127.0.0.1",
                port: Optional[int] = None) -> ServerHandle:
        d = short_dir(tmp_path, "server")
        sock = str(d / "api.sock")
        port = port or free_port()
        conf = d / "server.conf"
        kw = {} if keymanager is None else {"keymanager": keymanager.replace("{dir}", str(d))}
        conf.write_text(server_conf(d, sock, port, extra_server, extra_plugins, extra_top=extra_top, datastore=datastore,
                                    bind_address=bind_address, **kw))
        proc = Proc([SERVER, "run", "-config", str(conf)], d / "server.log").start()
        h = ServerHandle(d, conf, sock, port, proc, bind_address=bind_address)
        started.append(h)
        try:
            wait_for(lambda: h.healthy() or not proc.alive(), 60, "server healthcheck")
        except AssertionError:
            raise AssertionError("server did not become healthy:\n" + proc.logs())
        assert proc.alive(), "server exited:\n" + proc.logs()
        return h

    try:
        yield factory
    finally:
        for h in started:
            h.proc.stop()
            shutil.rmtree(h.dir, ignore_errors=True)


@dataclass
class AgentHandle:
    dir: Path
    conf: Path
    socket: str
    proc: Proc
    args: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        words = []
        rest = list(args)
        while rest and not rest[0].startswith("-"):
            words.append(rest.pop(0))
        return run([AGENT, *words, "-socketPath", self.socket, *rest], check=check)

    def healthy(self) -> bool:
        return self.cli("healthcheck", check=False).returncode == 0

    def restart(self, extra_args: tuple[str, ...] = ()) -> None:
        self.proc = Proc([*self.prefix, AGENT, "run", "-config", str(self.conf), *extra_args],
                         self.proc.log_path).start()
        wait_for(lambda: self.healthy() or not self.proc.alive(), 60, "agent healthcheck")
        assert self.proc.alive(), "agent exited:\n" + self.proc.logs()


def agent_conf(d: Path, server: ServerHandle, sock: str, bundle: Path, extra_agent: str = "",
               node_attestor: str = 'NodeAttestor "join_token" { plugin_data {} }',
               keymanager: Optional[str] = None, server_address: Optional[str] = None,
               extra_plugins: str = "") -> str:
    km = keymanager or f'KeyManager "disk" {{ plugin_data {{ directory = "{d}/data" }} }}'
    return f"""
agent {{
    data_dir = "{d}/data"
    log_level = "DEBUG"
    server_address = "{server_address or server.bind_address}"
    server_port = "{server.port}"
    socket_path = "{sock}"
    trust_bundle_path = "{bundle}"
    trust_domain = "{TD}"
    experimental {{
        sync_interval = "1s"
    }}
    {extra_agent}
}}

plugins {{
    {node_attestor}
    {km}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
    {extra_plugins}
}}
"""


@contextmanager
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentHandle]]:
    """``start_agent``: each call starts one more agent; all are stopped at exit."""
    started: list[AgentHandle] = []

    def factory(server: ServerHandle, token: Optional[str] = None, extra_agent: str = "",
                node_attestor: Optional[str] = None, wait: bool = True, keymanager: Optional[str] = None,
                server_address: Optional[str] = None, prefix: tuple[str, ...] = (),
                extra_plugins: str = "") -> AgentHandle:
        d = short_dir(tmp_path, "agent")
        sock = str(d / "public" / "api.sock")
        conf = d / "agent.conf"
        kw = {"node_attestor": node_attestor} if node_attestor else {}
        conf.write_text(agent_conf(d, server, sock, server.bundle_path(), extra_agent, keymanager=keymanager,
                                   server_address=server_address, extra_plugins=extra_plugins, **kw))
        args = [AGENT, "run", "-config", str(conf)] + (["-joinToken", token] if token else [])
        proc = Proc([*prefix, *args], d / "agent.log").start()
        h = AgentHandle(d, conf, sock, proc, args, prefix=list(prefix))
        started.append(h)
        if wait:
            try:
                wait_for(lambda: h.healthy() or not proc.alive(), 60, "agent healthcheck")
            except AssertionError:
                raise AssertionError("agent did not become healthy:\n" + proc.logs())
            assert proc.alive(), "agent exited:\n" + proc.logs()
        return h

    try:
        yield factory
    finally:
        for h in started:
            h.proc.stop()
            shutil.rmtree(h.dir, ignore_errors=True)


# Workloads: helpers/workload.py runs py-spiffe against an agent socket as a given uid.
WORKLOAD = str(Path(__file__).with_name("workload.py"))
ME = os.getuid()


def fetch(sock: str) -> dict[str, Any] | None:
    proc = subprocess.run([sys.executable, WORKLOAD, str(ME), sock, "fetch"], capture_output=True, text=True,
                          timeout=60)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def svid_for(sock: str, spiffe_id: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the workload's default SVID is ``spiffe_id``; return what it fetched."""
    got: dict[str, Any] = {}

    def ready() -> bool:
        doc = fetch(sock)
        if doc and doc["spiffe_id"] == spiffe_id:
            got.update(doc)
            return True
        return False

    wait_for(ready, timeout, f"SVID {spiffe_id}", interval=0.5)
    return got


def serial(doc: dict[str, Any]) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificates(doc["chain"].encode())[0].serial_number


def entry_create(server: Any, parent: str, spiffe: str, *extra: str) -> str:
    out = server.cli("entry", "create", "-parentID", parent, "-spiffeID", spiffe, "-output", "json", *extra).stdout
    return str(json.loads(out)["results"][0]["entry"]["id"])
