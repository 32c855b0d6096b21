"""SPIFFE IDs and trust domains refuse what the SPIFFE ID spec refuses, including a trailing newline."""

from __future__ import annotations

import pytest

from spire_py.common.spiffeid import SpiffeId, SpiffeIdError, TrustDomain


@pytest.mark.parametrize("text", [
    "spiffe://example.org/x\n", "spiffe://example.org\n/x", "spiffe://example.org/a/\nb", "spiffe://Example.org/x",
    "spiffe://example.org/a//b", "spiffe://example.org/../x", "spiffe://example.org/a b", "spiffe://example.org/é",
    "https://example.org/x", "spiffe://example.org/x/",
])
def test_invalid_ids_are_refused(text: str) -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(text)


@pytest.mark.parametrize("name", ["example.org\n", "\nexample.org", "exa mple.org", "EXAMPLE.org", ""])
def test_invalid_trust_domains_are_refused(name: str) -> None:
    with pytest.raises(SpiffeIdError):
        TrustDomain(name)


def test_valid_ids_round_trip() -> None:
    sid = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/a-b_c.d")
    assert str(sid) == "spiffe://example.org/spire/agent/join_token/a-b_c.d"
    assert sid.trust_domain == TrustDomain("example.org")


def test_parsed_ids_are_remembered_but_invalid_ones_raise_every_time():
    from spire_py.common import spiffeid

    a = SpiffeId.parse("spiffe://example.org/remembered")
    assert SpiffeId.parse("spiffe://example.org/remembered") is a  # immutable: shared
    assert spiffeid._parsed.cache_info().maxsize == 8192  # bounded
    for _ in range(2):
        with pytest.raises(SpiffeIdError):
            SpiffeId.parse("spiffe://example.org/../escape")
