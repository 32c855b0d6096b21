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
