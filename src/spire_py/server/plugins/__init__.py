"""Built-in server plugins: one line per plugin module. Importing this package imports each
module, whose ``@register("server")`` class files itself under its type and name.

Adding a plugin is its own module plus one line here (docs/plugins.md walks through one).
"""

from __future__ import annotations

import importlib

BUILTIN_PLUGINS = (
    "..datastore.plugin",             # DataStore "sql"
    ".keymanager.memory",             # KeyManager "memory"
    ".keymanager.disk",               # KeyManager "disk"
    ".nodeattestor.join_token",       # NodeAttestor "join_token"
    ".nodeattestor.x509pop",          # NodeAttestor "x509pop"
    ".nodeattestor.sshpop",           # NodeAttestor "sshpop"
    ".nodeattestor.aws_iid",          # NodeAttestor "aws_iid"
    ".nodeattestor.gcp_iit",          # NodeAttestor "gcp_iit"
    ".nodeattestor.azure_msi",        # NodeAttestor "azure_msi"
    ".nodeattestor.k8s_psat",         # NodeAttestor "k8s_psat"
    ".upstreamauthority.disk",        # UpstreamAuthority "disk"
    ".upstreamauthority.awssecret",   # UpstreamAuthority "awssecret"
    ".upstreamauthority.aws_pca",     # UpstreamAuthority "aws_pca"
    ".upstreamauthority.spire",       # UpstreamAuthority "spire"
    ".bundlepublisher.k8s_configmap", # BundlePublisher "k8s_configmap"
    ".notifier.k8sbundle",            # Notifier "k8sbundle"
)

for _module in BUILTIN_PLUGINS:
    importlib.import_module(_module, __name__)
