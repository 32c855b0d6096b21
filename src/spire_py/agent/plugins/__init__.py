"""Built-in agent plugins: one line per plugin module. Importing this package imports each
module, whose ``@register("agent")`` class files itself under its type and name.

Adding a plugin is its own module plus one line here (docs/plugins.md walks through one).
"""

from __future__ import annotations

import importlib

BUILTIN_PLUGINS = (
    ".keymanager.memory",             # KeyManager "memory"
    ".keymanager.disk",               # KeyManager "disk"
    ".nodeattestor.join_token",       # NodeAttestor "join_token"
    ".nodeattestor.x509pop",          # NodeAttestor "x509pop"
    ".nodeattestor.sshpop",           # NodeAttestor "sshpop"
    ".nodeattestor.aws_iid",          # NodeAttestor "aws_iid"
    ".nodeattestor.gcp_iit",          # NodeAttestor "gcp_iit"
    ".nodeattestor.azure_msi",        # NodeAttestor "azure_msi"
    ".nodeattestor.k8s_psat",         # NodeAttestor "k8s_psat"
    ".workloadattestor.unix",         # WorkloadAttestor "unix"
    ".workloadattestor.docker",       # WorkloadAttestor "docker"
    ".workloadattestor.systemd",      # WorkloadAttestor "systemd"
    ".workloadattestor.k8s",          # WorkloadAttestor "k8s"
)

for _module in BUILTIN_PLUGINS:
    importlib.import_module(_module, __name__)
