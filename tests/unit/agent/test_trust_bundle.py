"""The agent's bootstrap bundle: every configured source fails closed; only insecure_bootstrap skips it."""

from __future__ import annotations

import http.server
import os
import shutil
import socketserver
import tempfile
import threading
import urllib.parse
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization

from spire_py.agent.attestor import AttestationFailed
from spire_py.agent.trust_bundle import fetch_from_workload_api, load_bootstrap_roots
from spire_py.common.spiffeid import TrustDomain

from tests.unit.helpers.workload_world import TD


def config(**kw):
    base = dict(trust_domain="example.org", server_address="spire-server.example", server_port=8081,
                trust_bundle_path="", trust_bundle_url="", trust_bundle_unix_socket="",
                trust_bundle_spiffe_workload_api="", trust_bundle_format="pem", insecure_bootstrap=False)
    base.update(kw)
    return SimpleNamespace(**base)


# --- trust_bundle_spiffe_workload_api ----------------------------------------------------------
async def test_bundle_comes_from_a_served_workload_api(world):  # noqa: F811
    world.add_entry()  # the caller (this process) has an identity there
    roots = await load_bootstrap_roots(config(trust_bundle_spiffe_workload_api=f"unix://{world.socket_path}"), TD)
    assert roots == [world.ca.cert]


async def test_missing_workload_api_socket_refuses():
    missing = "unix:///tmp/spire-py-no-such-dir/api.sock"
    with pytest.raises(AttestationFailed, match="unable to fetch trust bundle from SPIFFE Workload API "
                                                "unix:///tmp/spire-py-no-such-dir/api.sock"):
        await load_bootstrap_roots(config(trust_bundle_spiffe_workload_api=missing), TD)


async def test_workload_api_that_denies_the_caller_refuses(world):  # noqa: F811
    # No entry for this process: the Workload API answers PermissionDenied, not a bundle.
    with pytest.raises(AttestationFailed, match="no identity issued"):
        await fetch_from_workload_api(f"unix://{world.socket_path}", TD)


async def test_workload_api_without_our_trust_domain_refuses(world):  # noqa: F811
    world.add_entry()
    with pytest.raises(AttestationFailed, match='did not provide a trust bundle for trust domain "other.org"'):
        await fetch_from_workload_api(f"unix://{world.socket_path}", TrustDomain("other.org"))


# --- trust_bundle_url over trust_bundle_unix_socket ---------------------------------------------
class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def bundle_socket(world):  # noqa: F811
    """A plain HTTP bundle endpoint on a Unix socket; records the query it was asked."""
    d = tempfile.mkdtemp(prefix="tb-", dir="/tmp")
    path = os.path.join(d, "bundle.sock")
    pem = world.ca.cert.public_bytes(serialization.Encoding.PEM)
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            seen.append({"path": url.path, **dict(urllib.parse.parse_qsl(url.query))})
            status, body = (200, pem) if url.path == "/bundle.pem" else (404, b"no")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:  # a Unix peer has no host
            return "unix"

        def log_message(self, *args) -> None:
            pass

    server = _Server(path, Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield SimpleNamespace(path=path, seen=seen)
    server.shutdown()
    server.server_close()
    shutil.rmtree(d, ignore_errors=True)


async def test_bundle_url_is_fetched_over_the_unix_socket_with_spires_parameters(world, bundle_socket):  # noqa: F811
    cfg = config(trust_bundle_url="http://bundles.local/bundle.pem?team=a", trust_bundle_unix_socket=bundle_socket.path)
    assert await load_bootstrap_roots(cfg, TD) == [world.ca.cert]
    [asked] = bundle_socket.seen
    assert asked["path"] == "/bundle.pem" and asked["team"] == "a"
    assert asked["spire-attest-mode"] == "bootstrap"
    assert asked["spiffe-trust-domain"] == "example.org"
    assert (asked["spire-server-address"], asked["spire-server-port"]) == ("spire-server.example", "8081")


async def test_bundle_url_error_status_over_the_unix_socket_refuses(bundle_socket):
    cfg = config(trust_bundle_url="http://bundles.local/missing.pem", trust_bundle_unix_socket=bundle_socket.path)
    with pytest.raises(AttestationFailed, match="error downloading trust bundle: 404"):
        await load_bootstrap_roots(cfg, TD)


async def test_missing_bundle_unix_socket_refuses():
    cfg = config(trust_bundle_url="http://bundles.local/bundle.pem", trust_bundle_unix_socket="/tmp/spire-py-none.sock")
    with pytest.raises(AttestationFailed, match="unable to fetch trust bundle URL"):
        await load_bootstrap_roots(cfg, TD)


# --- no source ---------------------------------------------------------------------------------
async def test_only_insecure_bootstrap_goes_without_a_bundle():
    assert await load_bootstrap_roots(config(insecure_bootstrap=True), TD) is None
    with pytest.raises(AttestationFailed, match="insecure_bootstrap is not set"):
        await load_bootstrap_roots(config(), TD)


async def test_unreadable_bundle_file_refuses(tmp_path):
    with pytest.raises(AttestationFailed, match="could not load trust bundle"):
        await load_bootstrap_roots(config(trust_bundle_path=str(tmp_path / "none.pem")), TD)
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(AttestationFailed):
        await load_bootstrap_roots(config(trust_bundle_path=str(empty)), TD)
