"""agent/rebootstrap.py: SPIRE's delay before rebootstrapping (reset by any secure exchange), its
modes with a node attestor that cannot re-attest, and what counts as an unknown authority."""

from __future__ import annotations

import logging
import ssl

import pytest

from spire_py.agent.attestor import AttestationFailed
from spire_py.agent.rebootstrap import NOT_ALLOWED, Rebootstrap, unknown_authority


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rebootstrap_waits_for_the_delay_of_continuous_disagreement(caplog):
    caplog.set_level(logging.INFO, logger="spire_py")
    clock = Clock()
    rb = Rebootstrap("auto", 600, clock)
    assert not rb.disagreed()
    clock.now += 599
    assert not rb.disagreed()
    rb.agreed()  # a secure connection in between: the clock restarts
    clock.now += 10
    assert not rb.disagreed()
    clock.now += 600
    assert rb.disagreed()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages[0] == (logging.INFO, "Trust Bundle and Server don't agree, ignoring for now")
    assert caplog.records[0].fields == {"time_left": "600s"}
    assert messages[-1] == (logging.WARNING, "Trust Bundle and Server don't agree, rebootstrapping")


def test_always_refuses_and_auto_disables_without_reattestation(caplog):
    with pytest.raises(AttestationFailed, match=NOT_ALLOWED):
        Rebootstrap("always").check_reattestable(False)
    Rebootstrap("always").check_reattestable(True)
    rb = Rebootstrap("auto")
    rb.check_reattestable(False)
    assert not rb.enabled
    assert NOT_ALLOWED + ". Disabling" in caplog.text
    never = Rebootstrap("never")
    never.check_reattestable(False)
    assert not never.enabled


def test_only_a_failed_verification_of_the_server_counts():
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get local issuer certificate")
    try:
        try:
            raise verify
        except ssl.SSLError as exc:
            raise ConnectionError("could not connect") from exc
    except ConnectionError as wrapped:
        assert unknown_authority(wrapped)
    assert not unknown_authority(ssl.SSLError(1, "tlsv1 alert unknown ca"))  # the server refused us
    assert not unknown_authority(ConnectionRefusedError())


def _verify_failure() -> Exception:
    """What attestation raises when the server's certificate does not chain to our bundle."""
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get local issuer certificate")
        except ssl.SSLError as exc:
            raise AttestationFailed(f"cannot reach server: {exc}") from None
    except AttestationFailed as failed:
        return failed


def _agent(tmp_path):  # type: ignore[no-untyped-def]
    from spire_py.agent.agent import SpireAgent
    from spire_py.agent.config import load_agent_config

    conf = tmp_path / "agent.conf"
    conf.write_text(f'agent {{\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n'
                    f' trust_bundle_path = "{tmp_path}/bundle.pem"\n data_dir = "{tmp_path}/data"\n'
                    ' rebootstrap_mode = "always"\n rebootstrap_delay = "1h"\n}\n'
                    'plugins {\n NodeAttestor "join_token" { plugin_data {} }\n'
                    ' KeyManager "memory" { plugin_data {} }\n WorkloadAttestor "unix" { plugin_data {} }\n}\n')
    return SpireAgent(load_agent_config(str(conf)))


async def test_an_agent_whose_reattestation_meets_an_unknown_server_rebootstraps_after_the_delay(tmp_path):
    from spire_py.agent.storage import AgentState

    agent = _agent(tmp_path)
    clock = Clock()
    agent.rebootstrap = Rebootstrap("always", 3600, clock)
    agent.state = AgentState([], "k", True)
    steps: list[str] = []

    async def reattest() -> None:
        steps.append("reattest")
        raise _verify_failure()

    async def rebootstrap() -> None:
        steps.append("rebootstrap")

    async def sync() -> None:
        steps.append("sync")

    agent._usable = lambda state: False  # type: ignore[method-assign]  # the SVID expired
    agent._reattest = reattest  # type: ignore[method-assign]
    agent._rebootstrap = rebootstrap  # type: ignore[method-assign]
    agent.sync_once = sync  # type: ignore[method-assign]
    with pytest.raises(AttestationFailed):
        await agent._sync_or_recover()  # within the delay: the failure stands
    clock.now += 3600
    await agent._sync_or_recover()
    assert steps == ["reattest", "reattest", "rebootstrap", "sync"]


async def test_a_rebootstrap_whose_attestation_failed_is_tried_again_at_the_next_sync(tmp_path):
    agent = _agent(tmp_path)
    steps: list[str] = []

    async def rebootstrap() -> None:
        steps.append("rebootstrap")
        agent.state = AgentState([], "k", True)

    async def sync() -> None:
        steps.append("sync")

    from spire_py.agent.storage import AgentState

    agent.state = None  # the last rebootstrap could not attest (the bootstrap bundle was still the old one)
    agent._usable = lambda state: True  # type: ignore[method-assign]
    agent._rebootstrap = rebootstrap  # type: ignore[method-assign]
    agent.sync_once = sync  # type: ignore[method-assign]
    await agent._sync_or_recover()
    assert steps == ["rebootstrap", "sync"]
