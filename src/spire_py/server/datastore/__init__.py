"""Server DataStore: registration entries, agents, bundles, join tokens, events.

Entries and selectors are common/registration.py's types, shared with the agent.

``SQLDataStore`` is the only implementation (plugin "sql"), over sqlite3, PostgreSQL
and MySQL (``dialects.py``), with the same schema and Alembic migrations.
"""

from .errors import (
    AlreadyExistsError,
    ConflictError,
    DataStoreError,
    InvalidArgumentError,
    NotFoundError,
)
from .models import AttestedNode, Bundle, FederationRelationship, JoinToken, JWTKey
from .plugin import SQLDataStorePlugin
from .store import SQLDataStore

__all__ = [
    "AlreadyExistsError",
    "AttestedNode",
    "Bundle",
    "ConflictError",
    "DataStoreError",
    "FederationRelationship",
    "InvalidArgumentError",
    "JWTKey",
    "JoinToken",
    "NotFoundError",
    "SQLDataStore",
    "SQLDataStorePlugin",
]
