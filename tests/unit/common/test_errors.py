"""Every exception spire_py defines derives from common.errors.SpireError, and keeps the
standard base it had (ValueError, RuntimeError, ConnectionError), so callers that catch
either still do."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import spire_py
from spire_py.common.errors import SpireError
from spire_py.common.spiffeid import SpiffeIdError
from spire_py.common.tls import PeerAuthError
from spire_py.server.ca.errors import CAError, CARequestError, JournalError
from spire_py.server.datastore.errors import DataStoreError, NotFoundError


def _project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(spire_py.__path__, "spire_py."):
        if ".proto" in info.name or ".migrations" in info.name or info.name.endswith(("__main__", ".demo")):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__.startswith("spire_py.") and ".proto" not in obj.__module__):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_project_exception_derives_from_spire_error() -> None:
    found = _project_exceptions()
    assert len(found) > 30
    assert [name for name, cls in sorted(found.items()) if not issubclass(cls, SpireError)] == []


def test_standard_bases_are_kept() -> None:
    assert issubclass(SpiffeIdError, ValueError)
    assert issubclass(CARequestError, ValueError) and issubclass(JournalError, ValueError)
    assert issubclass(CAError, RuntimeError)
    assert issubclass(PeerAuthError, ConnectionError)
    assert issubclass(NotFoundError, DataStoreError)
