"""Built-in server plugins; importing this package registers them all."""

from .nodeattestor import join_token  # noqa: F401
from .keymanager import disk, memory  # noqa: F401
from .upstreamauthority import disk as upstream_disk  # noqa: F401
from ..datastore import plugin as datastore_plugin  # noqa: F401
