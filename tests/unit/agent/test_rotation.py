"""availability_target: X.509-SVIDs (the agent's and the workloads') are renewed once they have
no more than the target left, unless their lifetime leaves under 12 h beyond it (SPIRE's
rotationutil); otherwise, and besides, at half life."""

from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_py.agent.agent import SpireAgent
from spire_py.agent.cache import CachedSVID, WorkloadCache
from spire_py.agent.config import load_agent_config
from spire_py.agent.rotation import FALLBACK_WARNING, RotationStrategy
from spire_py.agent.storage import AgentState
from spire_py.agent.sync import mint_svids
from spire_py.common.registration import Entry, Selector
from spire_py.common.spiffeid import TrustDomain
from spire_py.proto.spire.api.server.svid.v1 import svid_pb2

H = 3600.0
AGENT = "spiffe://example.org/spire/agent/join_token/t"


def no_jitter() -> float:
    return 0.0


def test_without_a_target_svids_rotate_at_half_life():
    rs = RotationStrategy(None, no_jitter)
    assert not rs.should_rotate(now=0, not_before=-35 * H, not_after=37 * H)  # 72 h lifetime, 37 h left
    assert rs.should_rotate(now=0, not_before=-36 * H, not_after=36 * H)
    assert rs.should_rotate(now=0, not_before=-72 * H, not_after=0)  # expired


def test_a_target_rotates_when_only_that_much_is_left():
    rs = RotationStrategy(48 * H, no_jitter)
    assert not rs.should_rotate(now=0, not_before=-23 * H, not_after=49 * H)
    assert rs.should_rotate(now=0, not_before=-24 * H, not_after=48 * H)  # half life would wait for 36 h left
    assert not rs.falls_back(72 * H)


def test_the_target_is_jittered_by_up_to_ten_minutes_earlier():
    rs = RotationStrategy(48 * H, lambda: 0.999)
    assert rs.should_rotate(now=0, not_before=-24 * H + 590, not_after=48 * H + 590)
    assert not rs.should_rotate(now=0, not_before=-24 * H + 700, not_after=48 * H + 700)


def test_a_lifetime_leaving_12h_or_less_beyond_the_target_falls_back_to_half_life():
    rs = RotationStrategy(48 * H, no_jitter)
    assert rs.falls_back(60 * H) and not rs.falls_back(60 * H + 1)
    assert not rs.should_rotate(now=0, not_before=-20 * H, not_after=40 * H)  # 40 h left < target, but falls back
    assert rs.should_rotate(now=0, not_before=-30 * H, not_after=30 * H)
    assert not RotationStrategy(None).falls_back(1)


class Signer:
    """BatchNewX509SVID over a real CA, signing SVIDs valid for ``lifetime`` seconds."""

    def __init__(self, lifetime: float) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
        self.root = self.cert(self.key.public_key(), "", -60, 10 * 24 * H, ca=True)
        self.lifetime = lifetime
        self.signed: list[str] = []
        self.svid = self

    def cert(self, public_key, spiffe_id: str, start: float, end: float, ca: bool = False) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(self.name if ca else x509.Name([])).issuer_name(self.name)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(now + dt.timedelta(seconds=start)).not_valid_after(now + dt.timedelta(seconds=end)))
        if ca:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        else:
            b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
        return b.sign(self.key, hashes.SHA256())

    async def BatchNewX509SVID(self, req, timeout=None):
        resp = svid_pb2.BatchNewX509SVIDResponse()
        for p in req.params:
            leaf = self.cert(x509.load_der_x509_csr(p.csr).public_key(), "spiffe://example.org/w", -60, self.lifetime)
            self.signed.append(p.entry_id)
            resp.results.add().svid.cert_chain.append(leaf.public_bytes(serialization.Encoding.DER))
        return resp


def cache_with_svid(signer: Signer, start: float, end: float) -> WorkloadCache:
    """One workload entry whose cached SVID was valid from ``start`` to ``end`` seconds from now."""
    cache = WorkloadCache(TrustDomain("example.org"), agent_id=AGENT)
    e = Entry(id="e1", spiffe_id="spiffe://example.org/w", parent_id=AGENT, selectors=[Selector("unix", "uid:1")])
    cache.entries[e.id] = e
    key = ec.generate_private_key(ec.SECP256R1())
    cache.svids[e.id] = CachedSVID(e.id, e.spiffe_id, [signer.cert(key.public_key(), e.spiffe_id, start, end)], key)
    return cache


async def test_a_workload_svid_is_re_signed_once_the_target_is_reached():
    # 72 h SVID with 42 h left: not yet at half life, but within a 48 h availability target.
    for target, resigned in ((None, []), (48 * H, ["e1"])):
        signer = Signer(72 * H)
        cache = cache_with_svid(signer, -30 * H, 42 * H)
        await mint_svids(signer, cache, cache.entries, {"e1": 0}, [signer.root], "ec-p256",  # type: ignore[arg-type]
                         RotationStrategy(target))
        assert signer.signed == resigned


async def test_an_svid_too_short_for_the_target_is_logged_as_falling_back(caplog):
    caplog.set_level(logging.WARNING, logger="spire_py")
    signer = Signer(24 * H)
    cache = WorkloadCache(TrustDomain("example.org"), agent_id=AGENT)
    cache.entries["e1"] = Entry(id="e1", spiffe_id="spiffe://example.org/w", parent_id=AGENT,
                                selectors=[Selector("unix", "uid:1")])
    cache.subscribed_entry_ids = lambda: {"e1"}  # type: ignore[method-assign]
    await mint_svids(signer, cache, cache.entries, {}, [signer.root], "ec-p256",  # type: ignore[arg-type]
                     RotationStrategy(24 * H))
    assert signer.signed == ["e1"]
    warned = [r for r in caplog.records if r.getMessage() == FALLBACK_WARNING]
    assert len(warned) == 1 and warned[0].fields == {"spiffe_id": "spiffe://example.org/w", "entry_id": "e1"}


def test_the_agent_renews_its_own_svid_by_the_configured_target(tmp_path):
    conf = tmp_path / "agent.conf"
    body = ('agent {\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n insecure_bootstrap = true\n'
            f' data_dir = "{tmp_path}/data"\n%s}}\nplugins {{\n NodeAttestor "join_token" {{ plugin_data {{}} }}\n'
            ' KeyManager "memory" { plugin_data {} }\n WorkloadAttestor "unix" { plugin_data {} }\n}\n')
    signer = Signer(0)
    key = ec.generate_private_key(ec.SECP256R1())
    svid = [signer.cert(key.public_key(), AGENT, -30 * H, 42 * H)]  # 72 h, 42 h left
    for target_line, due in (("", False), (' availability_target = "48h"\n', True)):
        conf.write_text(body.replace("%s", target_line))
        agent = SpireAgent(load_agent_config(str(conf)))
        agent.state = AgentState(svid, "k", False)
        assert agent._renew_due() is due
