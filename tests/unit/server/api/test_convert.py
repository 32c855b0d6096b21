"""server/api/convert.py conversions that no handler reaches over gRPC (the rest are
tested through the services in test_*_api.py)."""

from __future__ import annotations

import pytest

from spire_py.server.api import convert


def test_parse_id_names_the_field_it_refuses() -> None:
    assert str(convert.parse_id("spiffe://example.org/w", "SPIFFE ID")) == "spiffe://example.org/w"
    with pytest.raises(convert.InvalidInput) as exc:
        convert.parse_id("spiffe://example.org/a//b", "SPIFFE ID")
    assert str(exc.value).startswith("invalid SPIFFE ID: ")
    assert str(exc.value).endswith("path cannot contain empty segments")
