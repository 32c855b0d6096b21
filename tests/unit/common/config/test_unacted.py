"""common/config/unacted.py is held to the code: a listed key is read by nothing, and
every other documented key is read by something.

"Read" means an attribute of the loaded config (``cfg.X``, ``self.config.X``,
``getattr(config, "X")``) used outside the config modules; keys below a block
(``health_checks.bind_port``) may be read from any name once the block is. When a
feature lands, its key must leave the list; a key added to a schema must be acted on
or listed.
"""

import ast
import re
from pathlib import Path

import pytest

from spire_py.agent.config import AGENT_SCHEMA, load_agent_config
from spire_py.common.config.schema import Block, BlockList, LabeledBlocks
from spire_py.common.config.sections import HEALTH_CHECKS_SCHEMA, TELEMETRY_SCHEMA
from spire_py.common.config.unacted import MESSAGE, UNACTED
from spire_py.server.config import SERVER_SCHEMA, load_server_config
from tests.unit.helpers.paths import CONF_DATA as DATA, ROOT

SRC = ROOT / "src" / "spire_py"

SCHEMAS = {
    "server": {"server": SERVER_SCHEMA, "health_checks": HEALTH_CHECKS_SCHEMA, "telemetry": TELEMETRY_SCHEMA},
    "agent": {"agent": AGENT_SCHEMA, "health_checks": HEALTH_CHECKS_SCHEMA, "telemetry": TELEMETRY_SCHEMA},
}

# Acted on by the config loader itself, so no other module needs to read them.
IN_CONFIG = {
    "server.default_svid_ttl": "the deprecated spelling of default_x509_svid_ttl, which it sets",
    "server.experimental.named_pipe_name": "refused: there are no named pipes off Windows",
    "server.experimental.auth_opa_policy_engine": "refused: no OPA engine",
    "server.experimental.require_pq_kem": "refused when true: the TLS stack cannot require a post-quantum KEM",
    "agent.experimental.require_pq_kem": "refused when true: the TLS stack cannot require a post-quantum KEM",
    "server.experimental.feature_flags": "checked as SPIRE's fflag.Load; wit-svid warned (no WIT-SVIDs)",
    "agent.experimental.feature_flags": "checked as SPIRE's fflag.Load (the agent reads no flag)",
    "agent.insecure_bootstrap": "lets the agent start without trust_bundle_*; it then trusts its first server",
    "agent.join_token_file": "read into join_token",
    "agent.retry_bootstrap": "ignored by SPIRE too; warned as deprecated",
    "agent.experimental.named_pipe_name": "refused: there are no named pipes off Windows",
    "agent.experimental.admin_named_pipe_name": "refused: there are no named pipes off Windows",
}

# Blocks whose keys are flattened onto the config object rather than read through it.
FLATTENED = {"server.experimental", "agent.experimental"}

_CONFIG_NAME = re.compile(r"(cfg|config)$", re.IGNORECASE)


def _config_modules(path: Path) -> bool:
    rel = path.relative_to(SRC).as_posix()
    return rel.startswith("common/config") or rel in ("server/config.py", "agent/config.py") or rel.startswith("proto/")


def _reads() -> tuple[dict[str, set[str]], set[str]]:
    """(attribute -> modules reading it from a config object, attributes read from anything)."""
    from_config: dict[str, set[str]] = {}
    anywhere: set[str] = set()
    for path in SRC.rglob("*.py"):
        if _config_modules(path):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name, owner = None, None
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                name, owner = node.attr, node.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                name, owner = node.args[1].value, node.args[0]
            if not isinstance(name, str):
                continue
            anywhere.add(name)
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if _CONFIG_NAME.search(owner_name):
                from_config.setdefault(name, set()).add(path.relative_to(SRC).as_posix())
    return from_config, anywhere


FROM_CONFIG, ANYWHERE = _reads()
# SPIRE spells some keys in PascalCase (telemetry's MetricPrefix, DogStatsd); the attribute that
# carries one is its snake_case (metric_prefix, dogstatsd).
ANYWHERE_FOLDED = {a.replace("_", "").lower() for a in ANYWHERE}


def _keys(schema, prefix, depth=0):
    """(dotted key, depth below the top-level config object) for every key of a schema."""
    for name, f in schema.fields.items():
        key = f"{prefix}.{name}"
        yield key, depth, f
        if isinstance(f.kind, (Block, BlockList, LabeledBlocks)):
            yield from _keys(f.kind.schema, key, depth if key in FLATTENED else depth + 1)


def all_keys(side):
    for section, schema in SCHEMAS[side].items():
        if section == side:
            yield from _keys(schema, section)
        else:  # a whole section is read as one attribute
            yield section, 0, None
            yield from _keys(schema, section, 1)


def _covered(key, side):
    """The key, or a block above it, is listed, being built, or acted on by the loader."""
    listed = {u.key for u in UNACTED[side]}
    parts = key.split(".")
    return any(".".join(parts[:i]) in listed | set(IN_CONFIG) for i in range(1, len(parts) + 1))


@pytest.mark.parametrize("side", ["server", "agent"])
def test_every_listed_key_is_a_real_key(side):
    known = {key for key, _, _ in all_keys(side)}
    for item in UNACTED[side]:
        assert item.key in known, item.key
        assert item.key not in IN_CONFIG, item.key


@pytest.mark.parametrize("side", ["server", "agent"])
def test_nothing_reads_a_listed_key(side):
    for item in UNACTED[side]:
        assert item.attr not in FROM_CONFIG, (
            f"{item.key} is read by {sorted(FROM_CONFIG[item.attr])}: take it off common/config/unacted.py")


@pytest.mark.parametrize("side", ["server", "agent"])
def test_every_key_not_listed_is_read(side):
    keys = list(all_keys(side))
    unread = []
    for key, depth, f in keys:
        if key in FLATTENED or _covered(key, side):
            continue
        below = [k for k, _, _ in keys if k.startswith(key + ".")]
        if below and all(_covered(k, side) for k in below):
            continue  # a block whose keys are each listed (agent.sds)
        attr = key.rsplit(".", 1)[-1]
        read = attr in FROM_CONFIG if depth == 0 else attr.replace("_", "").lower() in ANYWHERE_FOLDED
        if not read:
            unread.append(key)
    assert unread == [], f"nothing acts on {unread}: act on them or list them in common/config/unacted.py"


def test_the_sample_full_configs_warn_once_per_unacted_key_set():
    server = load_server_config(str(DATA / "server_full.conf"))
    warned = [w.split(": ")[1] for w in server.warnings if w.endswith(MESSAGE)]
    assert warned == sorted(set(warned), key=warned.index)  # once each
    assert {"server.profiling_enabled", "server.experimental.event_timeout"} <= set(warned)
    assert not any(w.startswith("telemetry") for w in warned)  # Prometheus tls acts since the telemetry work
    assert "server.bind_port" not in warned
    assert not any(w.startswith("server.federation") for w in warned)  # acted on since the federation work

    agent = load_agent_config(str(DATA / "agent_full.conf"))
    warned = [w.split(": ")[1] for w in agent.warnings if w.endswith(MESSAGE)]
    assert {"agent.experimental.broker", "agent.profiling_enabled"} <= set(warned)
    assert "agent.rebootstrap_mode" not in warned  # acted on since the rebootstrap work
    assert not any(w.startswith("agent.sds.") for w in warned)  # honoured by the SDS API
    assert "agent.experimental.use_sync_authorized_entries" not in warned  # set to its default, true


def test_warnings_come_in_file_order_with_their_lines():
    agent = load_agent_config(str(DATA / "agent_full.conf"))
    lines = [int(w.split(":")[1]) for w in agent.warnings if w.endswith(MESSAGE)]
    assert lines == sorted(lines)
