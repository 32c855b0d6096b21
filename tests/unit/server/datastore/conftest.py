"""DataStore fixtures: ``store`` on every configured backend, ``backend`` and ``fresh_backend``.

The builders and the scratch-database plumbing are in tests/unit/helpers/datastore.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from spire_py.server.datastore import SQLDataStore
from tests.unit.helpers.datastore import BACKENDS, reset_server_db, open_store, server_conn


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """An empty database (schema kept on postgres/mysql when it is at head)."""
    kind: str = request.param
    if kind != "sqlite3":
        reset_server_db(kind, server_conn(kind), drop=False)
    return kind


@pytest.fixture(params=BACKENDS)
def fresh_backend(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A database with no tables at all, for the migration tests."""
    kind: str = request.param
    if kind != "sqlite3":
        reset_server_db(kind, server_conn(kind))
    return kind


@pytest.fixture
def store(backend: str, tmp_path: os.PathLike[str]) -> Iterator[SQLDataStore]:
    s = open_store(backend, tmp_path)
    yield s
    s.close()
