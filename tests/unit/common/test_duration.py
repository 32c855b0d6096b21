"""Go durations as SPIRE's config and flags write them."""

import pytest

from spire_py.common.duration import DurationError, format_duration, parse_duration, parse_duration_ns


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("1h", 3600),
        ("30m", 1800),
        ("90s", 90),
        ("1h30m", 5400),
        ("2h45m10s", 9910),
        ("500ms", 0.5),
        ("1.5h", 5400),
        (".5s", 0.5),
        ("0", 0),
        ("-1h", -3600),
        ("+5m", 300),
        ("168h", 604800),
        ("1us", 1e-06),
        ("1µs", 1e-06),
        ("1000000ns", 0.001),
    ],
)
def test_parses_go_durations_to_seconds(text, seconds):
    assert parse_duration(text) == seconds


def test_whole_seconds_are_ints_and_fractions_floats():
    assert isinstance(parse_duration("1h"), int)
    assert isinstance(parse_duration("1500ms"), float)


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "expected a number with a unit"),
        ("3600", "missing unit"),
        ("1d", 'unknown unit "d"'),
        ("1h 30m", "unknown unit"),
        ("h", "expected a number"),
        (".", "expected a number"),
    ],
)
def test_invalid_durations_name_the_value(text, why):
    with pytest.raises(DurationError) as exc:
        parse_duration(text)
    assert f'"{text}"' in str(exc.value)
    assert why in str(exc.value)


def test_duration_error_is_a_value_error():
    assert issubclass(DurationError, ValueError)


def test_numbers_are_already_seconds():
    assert parse_duration(3600) == 3600
    assert parse_duration(1.5) == 1.5
    with pytest.raises(DurationError):
        parse_duration(True)  # type: ignore[arg-type]


def test_bare_integer_strings_are_seconds_only_when_asked():
    assert parse_duration("3600", bare_seconds=True) == 3600
    assert parse_duration("1h", bare_seconds=True) == 3600
    with pytest.raises(DurationError):
        parse_duration("3600")


def test_out_of_range_is_refused():
    with pytest.raises(DurationError, match="out of range"):
        parse_duration("3000000h")


@pytest.mark.parametrize(
    "seconds,go",
    [(0, "0s"), (3600, "1h0m0s"), (90, "1m30s"), (0.5, "500ms"), (1.5, "1.5s"), (9910, "2h45m10s"),
     (-3600, "-1h0m0s"), (1e-06, "1µs"), (3600.25, "1h0m0.25s")],
)
def test_formats_like_go(seconds, go):
    assert format_duration(seconds) == go


def test_compact_format_trims_zero_tails_like_spire_messages():
    assert format_duration(3600, compact=True) == "1h"
    assert format_duration(5400, compact=True) == "1h30m"
    assert format_duration(300, compact=True) == "5m"
    assert format_duration(90, compact=True) == "1m30s"


@pytest.mark.parametrize("text", ["1h", "1h30m", "2h45m10s", "500ms", "1.5s", "10m", "0s"])
def test_format_parse_round_trip(text):
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_nanosecond_precision_is_exact():
    assert parse_duration_ns("1.000000001s") == 1_000_000_001
