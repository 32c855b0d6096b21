"""Agent fixtures: ``world`` (a served Workload API socket on the test's loop) and
``threaded_world`` (the same on its own loop, for synchronous clients such as the CLI).

The PKI, cache and socket they serve are built by tests/unit/helpers/workload_world.py.
"""

from __future__ import annotations

import shutil

import pytest

from spire_py.agent.workloadapi.server import close_workload_api, serve_workload_api
from tests.unit.helpers.workload_world import ThreadedWorld, new_world, short_dir


@pytest.fixture
async def world():
    base = short_dir()
    w = new_world(base)
    w.server = await serve_workload_api(w.socket_path, w.service)
    try:
        yield w
    finally:
        await close_workload_api(w.server, w.socket_path)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def threaded_world():
    tw = ThreadedWorld()
    try:
        yield tw
    finally:
        tw.close()
