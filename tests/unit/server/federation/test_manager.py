"""The federation manager: relationships from the config and the datastore, SPIRE's refresh
intervals, a fetched bundle stored only when it changed, the server's own endpoint and its
SVID rotation."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from spire_py.common.config.federation import FederatesWithConfig
from spire_py.common.spiffeid import SpiffeId, TrustDomain
from spire_py.server.datastore import Bundle, FederationRelationship, SQLDataStore
from spire_py.server.federation.client import SpiffeAuth, fetch_bundle
from spire_py.server.federation.manager import FederationManager, next_refresh, to_record
from tests.unit.helpers.federation import bundle_of, make_ca, make_svid, serving_endpoint
from tests.unit.helpers.inprocess_server import running_server


@pytest.mark.parametrize("hint, expected", [(0, 300.0), (10, 15.0), (60, 15.0), (400, 100.0)])
def test_next_refresh_is_a_quarter_of_the_hint_with_spire_s_bounds(hint: int, expected: float) -> None:
    assert next_refresh(Bundle("spiffe://x.test", refresh_hint=hint)) == expected


def test_next_refresh_without_a_bundle_is_a_minute() -> None:
    assert next_refresh(None) == 60.0


async def _db(fn: Any, *args: Any) -> Any:
    return fn(*args)


async def test_config_and_datastore_relationships_are_managed_and_bundles_stored_on_change(tmp_path: Path) -> None:
    store = SQLDataStore("sqlite3", str(tmp_path / "ds.sqlite3"))
    ca = make_ca()
    served = [bundle_of("cfg.test", ca.cert, sequence=1)]
    changes: list[int] = []
    try:
        async with serving_endpoint(served, make_svid(ca, "spiffe://cfg.test/spire/server")) as ep:
            url = f"https://127.0.0.1:{ep.port}"
            store.set_bundle(to_record(bundle_of("cfg.test", ca.cert)))  # the operator's bootstrap bundle
            store.create_federation_relationship(FederationRelationship("api.test", "https://127.0.0.1:1", "https_web"))
            configured = {"cfg.test": FederatesWithConfig(url, "https_spiffe", "spiffe://cfg.test/spire/server")}
            m = FederationManager(store, _db, configured, lambda: changes.append(1))
            idle = asyncio.Event()
            m._run_updater = lambda td: idle.wait()  # type: ignore[method-assign,assignment,return-value]  # no background fetches here
            assert await m.refresh_bundle_for("cfg.test")
            assert not await m.refresh_bundle_for("unknown.test")
            stored = store.fetch_bundle("spiffe://cfg.test")
            assert stored is not None and stored.sequence_number == 1 and stored.refresh_hint == 300
            assert changes == [1]
            assert await m.refresh_bundle_for("cfg.test")
            assert changes == [1]  # the same bundle again: not stored, nobody told
            assert sorted(m._tasks) == ["api.test", "cfg.test"]
            store.delete_federation_relationship("api.test")
            await m.reload()
            assert sorted(m._tasks) == ["cfg.test"]
            for t in m._tasks.values():
                t.cancel()
    finally:
        store.close()


async def test_https_spiffe_without_a_bundle_cannot_authenticate(tmp_path: Path) -> None:
    store = SQLDataStore("sqlite3", str(tmp_path / "ds.sqlite3"))
    try:
        m = FederationManager(store, _db, {"x.test": FederatesWithConfig("https://127.0.0.1:1", "https_spiffe",
                                                                          "spiffe://x.test/spire/server")}, lambda: None)
        with pytest.raises(Exception, match="local copy of bundle not found"):
            await m.refresh_bundle_for("x.test")
        for t in m._tasks.values():
            t.cancel()
    finally:
        store.close()


def _leaf_of(port: int) -> x509.Certificate:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    import socket

    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_the_server_serves_its_bundle_with_its_svid_and_rotates_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fed = f'federation {{ bundle_endpoint {{ address = "127.0.0.1" port = {port} profile "https_spiffe" {{}} }} }}'
    async with running_server(tmp_path, fed) as h:
        own = h.datastore.fetch_bundle("spiffe://example.org")
        roots = tuple(x509.load_der_x509_certificate(d) for d in own.x509_authorities)
        endpoint_id = SpiffeId.parse("spiffe://example.org/spire/server")
        got = await fetch_bundle(TrustDomain.parse("example.org"), f"https://127.0.0.1:{port}", SpiffeAuth(endpoint_id, roots))
        assert got.x509_authorities == list(roots) and got.refresh_hint == 300
        first = await asyncio.to_thread(_leaf_of, port)
        h.server._rotate_server_svid()
        second = await asyncio.to_thread(_leaf_of, port)
        assert first.serial_number != second.serial_number
        assert second == h.server._svid_chain[0]


async def test_the_updater_counts_fetches_and_updates_by_trust_domain(tmp_path: Path) -> None:
    from spire_py.common.telemetry.metrics import NULL, Metrics, set_current
    from spire_py.common.telemetry.names import BUNDLE_MANAGER_FETCH, BUNDLE_MANAGER_UPDATE

    store = SQLDataStore("sqlite3", str(tmp_path / "ds.sqlite3"))
    ca = make_ca()
    metrics = Metrics("")
    set_current(metrics)
    try:
        async with serving_endpoint([bundle_of("cfg.test", ca.cert)], make_svid(ca, "spiffe://cfg.test/spire/server")) as ep:
            store.set_bundle(to_record(bundle_of("cfg.test", ca.cert, sequence=0)))
            stored = asyncio.Event()
            m = FederationManager(store, _db, {"cfg.test": FederatesWithConfig(
                f"https://127.0.0.1:{ep.port}", "https_spiffe", "spiffe://cfg.test/spire/server")}, stored.set)
            await m.reload()  # starts the updater, which fetches at once
            await asyncio.wait_for(stored.wait(), 10)
            for t in m._tasks.values():
                t.cancel()
        by_key = {(s.key, s.labels): s.value for s in metrics.series()}
        assert by_key[(BUNDLE_MANAGER_UPDATE, (("trust_domain_id", "cfg.test"),))] == 1
        assert any(k[0][:3] == BUNDLE_MANAGER_FETCH for k in by_key)
    finally:
        set_current(NULL)
        store.close()
