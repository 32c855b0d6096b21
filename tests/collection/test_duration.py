import pytest

from ansible_collections.spire_py.spire.plugins.module_utils.duration import parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), (90, 90), ("720h", 720 * 3600), ("30d", 30 * 86400), ("1h30m", 5400), ("1d12h", 129600),
    ("45s", 45), ("0", 0),
])
def test_parse_duration_accepts_spire_durations_days_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "1h 30m", "-5", "1.5h", True])
def test_parse_duration_rejects_anything_else(text):
    with pytest.raises(ValueError):
        parse_duration(text)
