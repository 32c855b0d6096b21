"""spire-server as an operator meets it: config checking, durability, CA persistence,
UpstreamAuthority disk with an openssl-made root, health endpoints, token expiry."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509

from spire_py.common.x509util import verify_chain
from tests.integration.helpers.harness import SERVER, TD, free_port, run, wait_for


def test_validate_accepts_the_embedded_default_config() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = run([SERVER, "validate", "-config", str(root / "conf/server/server.conf")])
    assert "valid" in proc.stdout


def test_validate_names_file_line_and_key_of_a_bad_value(tmp_path: Path) -> None:
    conf = tmp_path / "server.conf"
    conf.write_text('server {\n  trust_domain = "example.org"\n  bind_port = "not-a-port"\n}\n'
                    'plugins {\n  DataStore "sql" { plugin_data { database_type = "sqlite3"\n'
                    '  connection_string = "x.db" } }\n  KeyManager "memory" { plugin_data {} }\n}\n')
    proc = run([SERVER, "validate", "-config", str(conf)], check=False)
    assert proc.returncode == 1
    assert f"{conf}:3:" in proc.stderr and "bind_port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_reports_hcl_syntax_error_with_line(tmp_path: Path) -> None:
    conf = tmp_path / "server.conf"
    conf.write_text('server {\n  trust_domain = "example.org"\n  bind_port = \n}\n')
    proc = run([SERVER, "validate", "-config", str(conf)], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert str(conf) in proc.stderr


def test_unknown_plugin_names_the_known_ones(tmp_path: Path) -> None:
    conf = tmp_path / "server.conf"
    conf.write_text('server {\n  trust_domain = "example.org"\n}\nplugins {\n'
                    '  DataStore "sql" { plugin_data { database_type = "sqlite3"\n connection_string = "x.db" } }\n'
                    '  KeyManager "vault" { plugin_data {} }\n}\n')
    for cmd in ("validate", "run"):
        proc = subprocess.run([SERVER, cmd, "-config", str(conf)], capture_output=True, text=True, timeout=30,
                              cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert 'unknown KeyManager plugin "vault"' in proc.stderr
        assert "disk, memory" in proc.stderr
        assert f"{conf}:7" in proc.stderr
    assert not (tmp_path / "x.db").exists(), "a refused config must not create the database"


def test_kill9_after_entry_create_loses_no_entry(spire_server) -> None:
    ids = []
    for i in range(5):
        out = spire_server.cli("entry", "create", "-parentID", f"spiffe://{TD}/node", "-spiffeID",
                               f"spiffe://{TD}/w{i}", "-selector", f"unix:uid:{1000 + i}", "-output", "json").stdout
        ids.append(json.loads(out)["results"][0]["entry"]["id"])
    spire_server.proc.kill9()
    spire_server.restart()
    shown = json.loads(spire_server.cli("entry", "show", "-output", "json").stdout)
    assert sorted(e["id"] for e in shown["entries"]) == sorted(ids)


def test_expired_join_token_is_refused(spire_server, start_agent) -> None:
    token = spire_server.token("-ttl", "1")
    time.sleep(2.5)
    agent = start_agent(spire_server, token, wait=False)
    wait_for(lambda: not agent.proc.alive(), 30, "the agent to give up")
    assert agent.proc.stop() == 1
    assert "join token expired" in agent.proc.logs()


def _roots(server) -> list[bytes]:
    return sorted(c.fingerprint(c.signature_hash_algorithm) for c in
                  x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode()))


def test_disk_keymanager_keeps_the_ca_across_restart(make_server) -> None:
    server = make_server(keymanager='KeyManager "disk" { plugin_data { keys_path = "{dir}/keys.json" } }')
    before = _roots(server)
    minted = server.cli("x509", "mint", "-spiffeID", f"spiffe://{TD}/before").stdout
    server.proc.stop()
    server.restart()
    assert _roots(server) == before
    chain = x509.load_pem_x509_certificates(minted.split("Private key:")[0].encode()) if "Private key:" in minted \
        else x509.load_pem_x509_certificates(minted.encode())
    roots = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    leaf = next(c for c in chain if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    verify_chain(leaf, [], roots)


def test_upstream_authority_disk_with_openssl_made_root(make_server, tmp_path: Path) -> None:
    key, crt = tmp_path / "root.key", tmp_path / "root.crt"
    # The command of SPIRE's UpstreamAuthority "disk" docs.
    subprocess.run(["openssl", "req", "-subj", "/C=/ST=/L=/O=/CN=acme.com", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-x509", "-days", "365", "-out", str(crt),
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                   check=True, capture_output=True)
    server = make_server(extra_plugins=f'UpstreamAuthority "disk" {{ plugin_data {{ cert_file_path = "{crt}"\n'
                                       f'key_file_path = "{key}" }} }}')
    upstream = x509.load_pem_x509_certificate(crt.read_bytes())
    roots = x509.load_pem_x509_certificates(server.cli("bundle", "show", "-format", "pem").stdout.encode())
    assert [r.fingerprint(r.signature_hash_algorithm) for r in roots] == [
        upstream.fingerprint(upstream.signature_hash_algorithm)]
    out = server.cli("x509", "mint", "-spiffeID", f"spiffe://{TD}/w").stdout
    certs = x509.load_pem_x509_certificates(out.encode())
    leaf, rest = certs[0], [c for c in certs[1:] if c != upstream]
    path = verify_chain(leaf, rest, [upstream])
    assert path[-1] == upstream and len(path) == 3


def _http(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_health_checks_listener_serves_live_and_ready(make_server) -> None:
    port = free_port()
    server = make_server(extra_top=f'health_checks {{\n listener_enabled = true\n bind_address = "127.0.0.1"\n'
                                   f' bind_port = "{port}"\n live_path = "/live"\n ready_path = "/ready"\n}}\n')
    assert _http(port, "/live") == 200
    assert _http(port, "/ready") == 200
    assert _http(port, "/nope") == 404
    assert server.healthy()


def test_admin_socket_is_group_only(spire_server) -> None:
    import os
    import stat

    mode = stat.S_IMODE(os.stat(spire_server.socket).st_mode)
    assert mode == 0o770
    assert stat.S_ISSOCK(os.stat(spire_server.socket).st_mode)
