# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
name: to_hcl
short_description: Render a dict as HCL, as SPIRE's server.conf and agent.conf are written
version_added: "0.1.0"
author:
  - spire_py maintainers (@spire-py)
description:
  - Renders nested dicts as HCL blocks, scalars and lists of scalars as C(key = value),
    and lists of dicts as repeated blocks, with every string quoted and escaped, so
    inventory values never need hand-written quoting.
  - >-
    Dicts at the paths matched by O(labeled) have labels as keys. With the default,
    C(plugins.DataStore.sql.plugin_data) renders as C(plugins { DataStore "sql" { plugin_data { ... } } }).
  - Keys with a C(null) value are left out. Strings with newlines become heredocs
    (C(<<EOT)); other control characters are refused.
options:
  _input:
    description: The configuration, a dict of top-level blocks (C(server), C(agent), C(plugins), ...).
    type: dict
    required: true
  labeled:
    description:
      - Dotted paths (shell-style wildcards allowed) of dicts whose keys are block labels.
    type: list
    elements: str
    default: ["plugins.*", "server.federation.federates_with"]
  indent:
    description: Spaces per nesting level.
    type: int
    default: 4
"""

EXAMPLES = r"""
- name: Template a server.conf
  ansible.builtin.copy:
    content: "{{ {'server': {'trust_domain': 'example.org', 'bind_port': 8081},
                  'plugins': {'KeyManager': {'memory': {'plugin_data': {}}}}} | spire_py.spire.to_hcl }}"
    dest: /tmp/server.conf
    mode: "0644"
# server {
#     trust_domain = "example.org"
#     bind_port = 8081
# }
#
# plugins {
#     KeyManager "memory" {
#         plugin_data {}
#     }
# }
"""

RETURN = r"""
_value:
  description: The HCL text, ending with a newline.
  type: str
"""

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

DEFAULT_LABELED = ("plugins.*", "server.federation.federates_with")
_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class HCLError(ValueError):
    pass


def _is_list(value):
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _key(name):
    name = str(name)
    return name if _BARE_KEY.match(name) else _quote(name)


def _quote(text):
    if "\n" in text or _CONTROL.search(text):
        raise HCLError("%r: newlines and control characters are only allowed in a value of their own" % (text,))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scalar(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, str):
        return _quote(value)
    if _is_list(value):
        return "[" + ", ".join(_scalar(v, where) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join("%s = %s" % (_key(k), _scalar(v, where)) for k, v in value.items() if v is not None) + " }"
    raise HCLError("%s: cannot render a value of type %s" % (where, type(value).__name__))


def _heredoc(text):
    body = text[:-1] if text.endswith("\n") else text
    if _CONTROL.search(body):
        raise HCLError("control characters cannot be rendered in HCL")
    tag = "EOT"
    while tag in body.split("\n"):
        tag += "X"
    return "<<%s\n%s\n%s" % (tag, body, tag)


class _Renderer:
    def __init__(self, labeled, indent):
        self.labeled = list(labeled)
        self.pad = " " * indent

    def is_labeled(self, path):
        # Wildcards match within one path segment: "plugins.*" is plugins.DataStore, not deeper.
        for pattern in self.labeled:
            parts = pattern.split(".")
            if len(parts) == len(path) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(path, parts)):
                return True
        return False

    def body(self, mapping, path, depth, labels=()):
        lines = []
        for name, value in mapping.items():
            if value is None:
                continue
            name = str(name)
            here = path + (name,)
            where = ".".join(here)
            if isinstance(value, Mapping):
                if self.is_labeled(here):
                    for label, inner in value.items():
                        if inner is None:
                            continue
                        if not isinstance(inner, Mapping):
                            raise HCLError("%s.%s: a labeled block must be a dict" % (where, label))
                        lines.extend(self.block(name, (str(label),), inner, here + (str(label),), depth))
                else:
                    lines.extend(self.block(name, (), value, here, depth))
            elif _is_list(value) and value and all(isinstance(v, Mapping) for v in value):
                for item in value:
                    lines.extend(self.block(name, (), item, here, depth))
            elif isinstance(value, str) and "\n" in value:
                lines.append("%s%s = %s" % (self.pad * depth, _key(name), _heredoc(value)))
            else:
                lines.append("%s%s = %s" % (self.pad * depth, _key(name), _scalar(value, where)))
        return lines

    def block(self, name, labels, mapping, path, depth):
        head = self.pad * depth + " ".join([_key(name)] + [_quote(label) for label in labels])
        inner = self.body(mapping, path, depth + 1)
        if not inner:
            return [head + " {}"]
        return [head + " {"] + inner + [self.pad * depth + "}"]


def render_hcl(data, labeled=DEFAULT_LABELED, indent=4):
    if not isinstance(data, Mapping):
        raise HCLError("to_hcl expects a dict, got %s" % type(data).__name__)
    renderer = _Renderer(labeled, indent)
    chunks = []
    for name, value in data.items():
        if value is None:
            continue
        lines = renderer.body({name: value}, (), 0)
        if lines:
            chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + "\n"


def to_hcl(data, labeled=None, indent=4):
    try:
        return render_hcl(data, DEFAULT_LABELED if labeled is None else labeled, indent)
    except HCLError as exc:
        raise AnsibleFilterError("to_hcl: %s" % exc)


class FilterModule:
    def filters(self):
        return {"to_hcl": to_hcl}
