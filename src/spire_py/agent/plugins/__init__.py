"""Built-in agent plugins; importing this package registers them all."""

from .keymanager import disk, memory  # noqa: F401
from .nodeattestor import join_token, sshpop, x509pop  # noqa: F401
from .workloadattestor import unix  # noqa: F401
