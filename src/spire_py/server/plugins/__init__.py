"""Built-in server plugins; importing this package registers them all."""

from ..datastore import plugin as datastore_plugin  # noqa: F401
from .keymanager import disk, memory  # noqa: F401
from .nodeattestor import join_token, sshpop, x509pop  # noqa: F401
from .upstreamauthority import disk as upstream_disk  # noqa: F401
