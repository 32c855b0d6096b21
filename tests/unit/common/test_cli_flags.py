"""Go flag semantics of our CLIs: -flag and --flag, =value, booleans, repeatable lists."""

import pytest

from spire_py.common.cli import FlagSet, UsageError


def flags() -> FlagSet:
    fs = FlagSet()
    fs.string("spiffeID", "", "")
    fs.int("ttl", 600, "")
    fs.bool("admin", False, "")
    fs.list("selector", "")
    fs.duration("timeout", 5, "")
    return fs


def test_single_and_double_dash_with_and_without_equals():
    values, rest, seen = flags().parse(
        ["-spiffeID", "spiffe://example.org/a", "--ttl=30", "--admin", "-selector", "unix:uid:0", "--selector=k8s:ns:x", "-timeout", "1m"]
    )
    assert values["spiffeID"] == "spiffe://example.org/a"
    assert values["ttl"] == 30
    assert values["admin"] is True
    assert values["selector"] == ["unix:uid:0", "k8s:ns:x"]
    assert values["timeout"] == 60
    assert rest == []
    assert seen == {"spiffeID", "ttl", "admin", "selector", "timeout"}


def test_defaults_and_positional_stop_parsing():
    values, rest, _ = flags().parse(["-admin=false", "pos", "-ttl", "1"])
    assert values["ttl"] == 600 and values["admin"] is False
    assert rest == ["pos", "-ttl", "1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-nope"], "flag provided but not defined: -nope"),
        (["-ttl"], "flag needs an argument: -ttl"),
        (["-ttl", "abc"], 'invalid value "abc" for flag -ttl'),
        (["-admin=maybe"], 'invalid boolean value "maybe"'),
        (["---ttl", "1"], "bad flag syntax"),
    ],
)
def test_usage_errors_are_one_clear_line(args, message):
    with pytest.raises(UsageError) as ei:
        flags().parse(args)
    assert message in str(ei.value)


def test_usage_prints_defaults_as_go_flag_does():
    fs = flags()
    fs.duration("interval", 90, "")
    fs.string("socketPath", "/tmp/api.sock", "")
    text = fs.usage()
    assert "(default 5s)" in text and "(default 1m30s)" in text
    assert '(default "/tmp/api.sock")' in text and "(default 600)" in text
    assert "-admin\n" in text and "default false" not in text  # Go omits zero defaults
