"""`make demo`: server and agent on the embedded default configs, one workload, its SVIDs.

Runs in a fresh temporary directory (the default configs use relative data
paths, as SPIRE's do), on a free loopback port and private sockets, and removes
everything when done — so it can run twice in a row, or beside a real SPIRE.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509

from .common import spiffeid
from .common.spiffeid import TrustDomain

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TD = "example.org"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], cwd: str) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _wait(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def _ok(args: list[str], cwd: str) -> bool:
    return subprocess.run(args, cwd=cwd, capture_output=True, timeout=30).returncode == 0


def main() -> int:
    work = tempfile.mkdtemp(prefix="spire-py-demo-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server_sock = os.path.join(work, "server.sock")
        agent_sock = os.path.join(work, "agent", "api.sock")
        port = str(_free_port())
        server = [str(BIN / "spire-server")]
        agent = [str(BIN / "spire-agent")]
        print(f"== spire_py demo in {work}")

        slog = Path(work, "server.log")
        procs.append(subprocess.Popen(
            server + ["run", "-config", str(ROOT / "conf/server/server.conf"), "-socketPath", server_sock,
                      "-serverPort", port, "-logLevel", "INFO"],
            cwd=work, stdout=slog.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait("spire-server", lambda: _ok(server + ["healthcheck", "-socketPath", server_sock], work), procs[0], slog)
        print("== server is healthy (embedded conf/server/server.conf: sqlite3, join_token, memory KeyManager)")

        out = _run(server + ["token", "generate", "-socketPath", server_sock, "-ttl", "600"], work)
        token = re.search(r"Token: (\S+)", out).group(1)  # type: ignore[union-attr]
        agent_id = str(spiffeid.agent_id(TrustDomain(TD), "join_token", token))
        print(f"== join token generated; the agent will be {agent_id}")

        uid = os.getuid()
        workload_id = str(TrustDomain(TD).id(f"/demo/uid-{uid}"))
        _run(server + ["entry", "create", "-socketPath", server_sock, "-parentID", agent_id,
                       "-spiffeID", workload_id, "-selector", f"unix:uid:{uid}", "-x509SVIDTTL", "300"], work)
        print(f"== registered {workload_id} for unix:uid:{uid}")

        alog = Path(work, "agent.log")
        procs.append(subprocess.Popen(
            agent + ["run", "-config", str(ROOT / "conf/agent/agent.conf"), "-socketPath", agent_sock,
                     "-serverPort", port, "-joinToken", token, "-logLevel", "INFO"],
            cwd=work, stdout=alog.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait("spire-agent", lambda: _ok(agent + ["healthcheck", "-socketPath", agent_sock], work), procs[1], alog)
        print("== agent attested and healthy")

        svid_dir = os.path.join(work, "svid")
        os.makedirs(svid_dir)
        fetch = agent + ["api", "fetch", "x509", "-socketPath", agent_sock, "-write", svid_dir]
        _wait("the X.509-SVID", lambda: _ok(fetch, work), procs[1], alog)
        print(_run(agent + ["api", "fetch", "x509", "-socketPath", agent_sock], work))
        chain = x509.load_pem_x509_certificates(Path(svid_dir, "svid.0.pem").read_bytes())
        roots = x509.load_pem_x509_certificates(Path(svid_dir, "bundle.0.pem").read_bytes())
        print("== X.509-SVID chain:")
        for c in chain + roots:
            uri = ""
            try:
                san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                uri = ", ".join(san.get_values_for_type(x509.UniformResourceIdentifier))
            except x509.ExtensionNotFound:
                pass
            print(f"   subject={c.subject.rfc4514_string()!s:40} uri={uri:45} expires={c.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z")

        print(_run(agent + ["api", "fetch", "jwt", "-socketPath", agent_sock, "-audience", "demo"], work))
        print("== done: stopping agent and server")
        return 0
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
