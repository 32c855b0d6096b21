"""API fixtures: ``server``, a spire-server started in the test's loop (sqlite, join_token,
memory key manager), reached over real gRPC (tests/unit/helpers/inprocess_server.py)."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from tests.unit.helpers.inprocess_server import Handle, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Handle]:
    async with running_server(tmp_path) as h:
        yield h
