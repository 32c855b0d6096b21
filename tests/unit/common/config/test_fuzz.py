"""Fuzzing the config loaders: mutated sample configs give a ConfigError or load, nothing else.

The samples (conf/ and tests/unit/data/conf) are mutated by byte flips, truncation,
inserted deep nesting, huge strings, values of the wrong type and shuffled lines,
then loaded in-process as spire-server/spire-agent validate does: the file, the
sections, then each plugin's own check; every built-in plugin also gets arbitrary
plugin_data. Inputs stay under 200 KB, so each case is
quick without a timer. Examples are derandomized: CI sees the same cases each run.
"""

import inspect
import json
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spire_py.agent.catalog import AgentCatalog
from spire_py.agent.config import agent_config_from
from spire_py.agent.plugins.context import AgentPluginContext
from spire_py.common.config import ConfigError, PluginSpec, load_file
from spire_py.common.daemon_config import configure_plugin
from spire_py.common.plugin import known_names, known_types, lookup
from spire_py.server.catalog import ServerCatalog
from spire_py.server.config import server_config_from
from spire_py.server.plugins.context import ServerPluginContext
from tests.unit.helpers.paths import ROOT

SAMPLES = {
    "server": [ROOT / "conf/server/server.conf", ROOT / "tests/unit/data/conf/server_full.conf",
               ROOT / "tests/unit/data/conf/server.json"],
    "agent": [ROOT / "conf/agent/agent.conf", ROOT / "tests/unit/data/conf/agent_full.conf",
              ROOT / "tests/unit/data/conf/agent.json"],
}
TEXTS = {side: [p.read_bytes() for p in paths] for side, paths in SAMPLES.items()}
LOADERS = {"server": server_config_from, "agent": agent_config_from}
CATALOGS = {"server": ServerCatalog, "agent": AgentCatalog}
CONTEXTS = {"server": ServerPluginContext, "agent": AgentPluginContext}

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_VALUE = re.compile(rb'(=\s*)("[^"\n]*"|\d+|true|false)')
WRONG_VALUES = [b"1", b"-1", b"0x7fffffffffffffffffff", b"1e400", b"true", b"[]", b"{}", b'["a", 1, true]',
                b'{ a = 1 }', b'""', b'"\\u0000"', b'"${HOME}"', b'"-1h"', b'"99999999999999999h"', b"null",
                b"9" * 5000, b'"\\ud800"']

SNIPPETS = [b"{", b"}", b"[", b"]", b'"', b"=", b":", b",", b"\n", b"\x00", b"\xff\xfe", "\ufeff".encode(), b"$",
            b"${", b"${HOME}", b"$$", b"<<EOF\n", b"<<-EOT\nx\nEOT\n", b"/*", b"*/", b"#", b"//", b"\\", b'"\\u00"',
            b"\x1b[31m",
            b'plugin_cmd = "/bin/true"', b'plugin_data_file = "/nonexistent"', b'join_token_file = "/"',
            b'enabled = false', b"server {}", b"plugins {}", b'KeyManager "memory" {}', b'unknown_section { a = 1 }',
            b"experimental { }", b'trust_domain = "spiffe://x/y"', b'federates_with "a" {}', b"1.5e9999"]


@st.composite
def mutation(draw, data: bytes) -> bytes:
    op = draw(st.sampled_from(["flip", "truncate", "nest", "huge", "wrong_type", "lines", "splice", "insert"]))
    at = draw(st.integers(0, len(data)))
    if op == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
        return data
    if op == "truncate":
        return data[:at]
    if op == "nest":
        depth = draw(st.sampled_from([2, 50, 99, 100, 101, 500, 3000]))
        opener, closer = draw(st.sampled_from([(b"{ a = ", b" }"), (b"[", b"]"), (b'{"a": ', b"}"), (b"a ", b"{}")]))
        return data[:at] + opener * depth + b"1" + closer * depth + data[at:]
    if op == "huge":
        if len(data) > 50_000:
            return data  # keep the input bounded
        size = draw(st.sampled_from([1_000, 20_000, 100_000]))
        char = draw(st.sampled_from([b"A", b"\\", b"$", b"{", b"\xc3\xa9", b"\n"]))
        return data[:at] + b'x = "' + char * (size // len(char)) + b'"\n' + data[at:]
    if op == "wrong_type":
        matches = list(_VALUE.finditer(data))
        if not matches:
            return data
        m = matches[draw(st.integers(0, len(matches) - 1))]
        return data[:m.start(2)] + draw(st.sampled_from(WRONG_VALUES)) + data[m.end(2):]
    if op == "lines":
        lines = data.split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "repeat", "swap"]))
        if how == "drop":
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    if op == "insert":  # HCL and JSON syntax, env references and odd characters
        return data[:at] + draw(st.sampled_from(SNIPPETS)) + data[at:]
    # splice: a piece of one place pasted at another
    end = draw(st.integers(at, min(len(data), at + 400)))
    to = draw(st.integers(0, len(data)))
    return data[:to] + data[at:end] + data[to:]


class Case(tuple):
    """(side, bytes), shown short: a failing example is reported without megabytes of text."""

    def __repr__(self):
        side, data = self
        return f"Case(({side!r}, {data[:300]!r}{'...' if len(data) > 300 else ''}))  # {len(data)} bytes"


@st.composite
def mutated_config(draw):
    side = draw(st.sampled_from(["server", "agent"]))
    data = draw(st.sampled_from(TEXTS[side]))
    for _ in range(draw(st.integers(1, 3))):
        data = draw(mutation(data))
    return Case((side, data))


def json_values(text=st.text(max_size=30)):
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), text)
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(text, inner, max_size=4)),
                        max_leaves=12)


# What parse_text lets through to plugins: no NUL anywhere (it refuses those).
NO_NUL = st.text(st.characters(blacklist_characters="\x00"), max_size=30)


@st.composite
def json_with_wrong_value(draw):
    """A JSON sample with one value anywhere replaced by an arbitrary JSON value."""
    side = draw(st.sampled_from(["server", "agent"]))
    doc = json.loads(TEXTS[side][2])
    node = doc
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        if not isinstance(node[key], (dict, list)) or not node[key]:
            node[key] = draw(json_values())
            break
        node = node[key]
    else:
        if isinstance(node, dict):
            node[draw(st.text(max_size=12))] = draw(json_values())
    return Case((side, json.dumps(doc).encode()))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    # Relative paths in the samples (./.data) resolve here, never in the checkout.
    here = os.getcwd()
    path = tmp_path_factory.mktemp("fuzz")
    os.chdir(path)
    yield path
    os.chdir(here)


def validate(workdir: Path, side: str, data: bytes, expand_env: bool = False) -> None:
    """What validate does, in-process: the file, the sections, each plugin's own check."""
    assert len(data) < 200_000
    path = workdir / f"{side}.conf"
    path.write_bytes(data)
    raw, source = load_file(str(path), expand_env)
    cfg = LOADERS[side](raw, source)
    CATALOGS[side](cfg).check()


def load_like_validate(workdir: Path, side: str, data: bytes, expand_env: bool = False) -> None:
    """ConfigError is the one way to fail, and its text is one line, as the CLIs print it."""
    try:
        validate(workdir, side, data, expand_env)
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text and "\x1b" not in text, text
        text.encode("utf-8")  # printable as it is: no lone surrogate


@FUZZ
@given(case=mutated_config(), expand_env=st.booleans())
def test_mutated_sample_configs_load_or_raise_config_error(workdir, case, expand_env):
    load_like_validate(workdir, *case, expand_env=expand_env)


@settings(FUZZ, max_examples=100)
@given(case=json_with_wrong_value())
def test_json_configs_with_any_value_anywhere_load_or_raise_config_error(workdir, case):
    load_like_validate(workdir, *case)


@pytest.mark.parametrize("side", ["server", "agent"])
def test_the_embedded_default_configs_pass_unmutated(workdir, side):
    # The fuzz starts from files that are valid; the full samples name files that only exist in production.
    validate(workdir, side, TEXTS[side][0])


def _plugin_keys(cls) -> list[str]:
    """Names a plugin may read: the identifier-like string literals of its module."""
    source = inspect.getsource(sys.modules[cls.__module__])
    return sorted(set(re.findall(r'"([a-z][a-z0-9_]{1,40})"', source)))


PLUGINS = {(side, ptype, name): _plugin_keys(lookup(side, ptype, name)) for side in ("server", "agent")
           for ptype in known_types(side) for name in known_names(side, ptype)}
PATHS = ["", "/nonexistent", "/dev/null", "/", ".", "sqlite3", "postgres", "mysql", "file::memory:", "-1", "0"]


@st.composite
def plugin_data(draw):
    side, ptype, name = draw(st.sampled_from(sorted(PLUGINS)))
    keys = st.sampled_from(PLUGINS[side, ptype, name]) | NO_NUL
    values = st.sampled_from(PATHS) | json_values(NO_NUL)
    return side, ptype, name, draw(st.dictionaries(keys, values, max_size=6))


@settings(FUZZ, max_examples=80)
@given(case=plugin_data())
def test_every_builtin_plugin_checks_any_plugin_data_with_a_config_error(workdir, case):
    side, ptype, name, data = case
    spec = PluginSpec(ptype, name, data, line=3)
    ctx = CONTEXTS[side](trust_domain="example.org", data_dir=str(workdir), side=side)
    try:
        configure_plugin(side, spec, ctx, None, check_only=True)
    except ConfigError as exc:
        assert f"plugins.{ptype}.{name}" in str(exc) and "\n" not in str(exc)
