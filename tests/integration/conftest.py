"""Integration fixtures: real ``spire-server``/``spire-agent`` processes and scratch databases.

``spire_server`` is one server with a sqlite datastore; ``make_server(...)`` starts more
(another DataStore block, bind address, port); ``start_agent(server, token=...)`` starts
an agent against one; ``make_database(kind)`` creates a scratch database. Everything is
stopped or dropped at teardown. The processes and config writers are in
helpers/harness.py, the databases in helpers/databases.py, test PKI in helpers/pki.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.integration.helpers.databases import Database, database_factory
from tests.integration.helpers.harness import AgentHandle, ServerHandle, agent_factory, server_factory


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerHandle]]:
    with server_factory(tmp_path) as factory:
        yield factory


@pytest.fixture
def spire_server(make_server: Callable[..., ServerHandle]) -> ServerHandle:
    return make_server()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentHandle]]:
    with agent_factory(tmp_path) as factory:
        yield factory


@pytest.fixture
def make_database(tmp_path: Path) -> Iterator[Callable[[str], Database]]:
    with database_factory(tmp_path) as factory:
        yield factory
