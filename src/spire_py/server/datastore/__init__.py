"""Server DataStore: registration entries, agents, bundles, join tokens, events.

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
from .models import (
    MATCH_ANY,
    MATCH_EXACT,
    MATCH_SUBSET,
    MATCH_SUPERSET,
    AttestedNode,
    Bundle,
    Entry,
    JoinToken,
    JWTKey,
    Selector,
)
from .plugin import SQLDataStorePlugin
from .store import SQLDataStore

__all__ = [
    "AlreadyExistsError",
    "AttestedNode",
    "Bundle",
    "ConflictError",
    "DataStoreError",
    "Entry",
    "InvalidArgumentError",
    "JWTKey",
    "JoinToken",
    "MATCH_ANY",
    "MATCH_EXACT",
    "MATCH_SUBSET",
    "MATCH_SUPERSET",
    "NotFoundError",
    "SQLDataStore",
    "SQLDataStorePlugin",
    "Selector",
]
