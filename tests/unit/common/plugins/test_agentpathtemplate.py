"""Agent path templates: the Go text/template subset that SPIRE's attestors render."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from spire_py.common.plugins.agentpathtemplate import AgentPathTemplate, TemplateError, make_agent_id
from spire_py.common.spiffeid import TrustDomain

DATA: dict[str, Any] = {
    "PluginName": "x509pop",
    "Fingerprint": "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33",
    "TrustDomain": "example.org",
    "SerialNumberHex": "0a1b",
    "Subject": {"CommonName": "Node-1", "Organization": ["Acme", "Ops"]},
    "ValidPrincipals": ["node1.example.org", "node1"],
    "URISanSelectors": {"datacenter": "us-east-1"},
    "Serial": 42,
}


def render(text: str) -> str:
    return AgentPathTemplate.parse(text).render(DATA)


@pytest.mark.parametrize("text, expected", [
    ("/{{ .PluginName }}/{{ .Fingerprint }}", "/x509pop/0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"),
    ("/{{ .PluginName}}/{{.Fingerprint}}", "/x509pop/0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"),
    ("/cn/{{ .Subject.CommonName }}", "/cn/Node-1"),
    ("/dc/{{ .URISanSelectors.datacenter }}", "/dc/us-east-1"),
    ("/static/{{ index .ValidPrincipals 0 }}", "/static/node1.example.org"),
    ("/{{ .Subject.CommonName | lower }}", "/node-1"),
    ("/{{ .Subject.CommonName | lower | replace \"-\" \"_\" }}", "/node_1"),
    ("/{{ trimSuffix \".example.org\" (index .ValidPrincipals 0) }}", "/node1"),
    ("/{{ printf \"%s-%d\" .TrustDomain .Serial }}", "/example.org-42"),
    ("/{{ .Serial }}/{{ .Subject.Organization }}", "/42/[Acme Ops]"),
    ("/a {{- \"/b\" -}} /c", "/a/b/c"),
    ("/x{{/* a comment */}}/y", "/x/y"),
    ("/{{ `raw` }}", "/raw"),
    ("/{{ .Subject.CommonName | trunc 4 | upper }}", "/NODE"),
    ("/{{ default \"none\" .SerialNumberHex }}", "/0a1b"),
    ("/{{ sha1sum .PluginName | trunc 8 }}", "/" + hashlib.sha1(b"x509pop").hexdigest()[:8]),
])
def test_supported_forms_render_as_go_would(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize("text, message", [
    ("/{{ .Fingerprint", "unclosed action"),
    ("/{{ }}", "missing value"),
    ("/{{ if .X }}x{{ end }}", '"if" actions are not supported'),
    ("/{{ range .ValidPrincipals }}{{ . }}{{ end }}", '"range" actions are not supported'),
    ("/{{ $x := .PluginName }}", "variables"),
    ("/{{ env \"HOME\" }}", 'function "env" is not supported'),
    ("/{{ .PluginName .Fingerprint }}", "can't give argument to non-function"),
    ("/{{ .PluginName | .Fingerprint }}", "non-function in pipeline"),
    ("/{{ .PluginName ) }}", "unexpected"),
    ("/{{ # }}", "unexpected"),
])
def test_unsupported_or_broken_templates_fail_at_parse(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        AgentPathTemplate.parse(text)


@pytest.mark.parametrize("text, message", [
    ("/{{ .Nope }}", 'no field or map key "Nope"'),
    ("/{{ .URISanSelectors.missing }}", 'no field or map key "missing"'),
    ("/{{ .PluginName.Sub }}", "can't evaluate field Sub"),
    ("/{{ index .ValidPrincipals 5 }}", "error calling index"),
    ("/{{ lower }}", "error calling lower"),
])
def test_missing_fields_fail_at_render_like_missingkey_error(text: str, message: str) -> None:
    template = AgentPathTemplate.parse(text)
    with pytest.raises(TemplateError, match=message):
        template.render(DATA)


def test_agent_id_is_the_rendered_path_under_spire_agent() -> None:
    sid = make_agent_id(TrustDomain("example.org"), AgentPathTemplate.parse("/{{ .PluginName }}/{{ .Fingerprint }}"), DATA)
    assert str(sid) == "spiffe://example.org/spire/agent/x509pop/0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"


@pytest.mark.parametrize("text, message", [
    ("{{ .PluginName }}/x", 'must start with "/"'),
    ("/{{ .PluginName }}//x", "empty segments"),
    ("/{{ .Subject.Organization }}", "invalid agent path"),
])
def test_rendered_path_must_be_a_valid_spiffe_path(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        make_agent_id(TrustDomain("example.org"), AgentPathTemplate.parse(text), DATA)
