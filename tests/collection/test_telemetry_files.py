"""The collection's telemetry: the Grafana dashboard and Prometheus alert rules only query
metrics spire_py emits, and the roles' telemetry variables render a block both daemons load."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from spire_py.common.telemetry.names import prometheus_names
from spire_py.proto.workload import workload_grpc
from spire_py.server.api.policy import POLICY

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "files" / "telemetry"
WORKLOAD_METHODS = tuple(f"/SpiffeWorkloadAPI/{m}" for m in dir(workload_grpc.SpiffeWorkloadAPIBase) if m[0].isupper())
HEALTH = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")
EMITTED = (prometheus_names("server", "spire_server", tuple(POLICY) + HEALTH)
           | prometheus_names("agent", "spire_agent", WORKLOAD_METHODS + HEALTH))

_NAME = re.compile(r"\bspire_(?:server|agent)_[a-z0-9_]+\b")
_REGEX = re.compile(r'__name__=~"([^"]+)"')


def _exprs():
    dash = json.loads((FILES / "spire-grafana-dashboard.json").read_text())
    for panel in dash["panels"]:
        for target in panel["targets"]:
            yield f"dashboard: {panel['title']}", target["expr"]
    rules = yaml.safe_load((FILES / "spire-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            yield f"alert: {rule['alert']}", rule["expr"]


EXPRS = list(_exprs())


def test_the_files_hold_queries():
    assert len(EXPRS) > 10
    assert {"alert: SpireX509CAExpiringSoon", "alert: SpireCARotationFailed", "alert: SpireAgentSyncFailing"} <= {
        where for where, _ in EXPRS}


@pytest.mark.parametrize("where,expr", EXPRS, ids=[w for w, _ in EXPRS])
def test_every_queried_metric_is_one_we_emit(where, expr):
    names = set(_NAME.findall(_REGEX.sub("", expr)))
    assert names - EMITTED == set(), f"{where} queries metrics nothing emits"
    for pattern in _REGEX.findall(expr):
        assert any(re.fullmatch(pattern, n) for n in EMITTED), f"{where}: {pattern} matches nothing we emit"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules():
    subprocess.run(["promtool", "check", "rules", str(FILES / "spire-alerts.yml")], check=True)


# --- the roles' telemetry variables ---------------------------------------------------------
def _role_config(side: str, **overrides):
    pytest.importorskip("ansible")
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    loader = DataLoader()
    variables = {"spire_install_dir": "/opt/spire", "groups": {"spire_servers": ["s1"]},
                 "spire_agent_attestation": "join_token"}
    for part in ("defaults", "vars"):
        variables.update(loader.load_from_file(str(ROOT / "roles" / side / part / "main.yml"), trusted_as_template=True))
    variables.update(overrides)
    templar = Templar(loader=loader, variables=variables)
    return json.loads(json.dumps(templar.template(variables[f"spire_{side}_effective_config"])))


def test_no_telemetry_variables_no_telemetry_block():
    assert _role_config("server").get("telemetry") is None
    assert _role_config("agent").get("telemetry") is None


@pytest.mark.parametrize("side", ["server", "agent"])
def test_telemetry_variables_render_a_block_the_daemon_loads(side, tmp_path):
    from ansible_collections.spire_py.spire.plugins.filter.to_hcl import render_hcl

    cfg = _role_config(side, **{
        f"spire_{side}_telemetry_prometheus_port": 9988,
        f"spire_{side}_telemetry_statsd": [{"address": "127.0.0.1:8125"}],
        f"spire_{side}_telemetry_m3": [{"address": "127.0.0.1:9052", "env": "prod"}],
        f"spire_{side}_telemetry_inmem": True,
        f"spire_{side}_telemetry_extra": {"BlockedPrefixes": [f"spire_{side}.rpc.health"]},
    })
    assert cfg["telemetry"]["Prometheus"] == {"host": "localhost", "port": 9988}
    assert "DogStatsd" not in cfg["telemetry"]
    conf = tmp_path / f"{side}.conf"
    conf.write_text(render_hcl(cfg))
    if side == "server":
        from spire_py.server.config import load_server_config as load
    else:
        from spire_py.agent.config import load_agent_config as load
    tel = load(str(conf)).telemetry
    assert tel.prometheus.port == 9988 and tel.inmem
    assert [s.address for s in tel.statsd] == ["127.0.0.1:8125"]
    assert [(s.address, s.env) for s in tel.m3] == [("127.0.0.1:9052", "prod")]
    assert tel.blocked_prefixes == [f"spire_{side}.rpc.health"]
