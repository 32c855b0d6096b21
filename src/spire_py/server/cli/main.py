"""spire-server: the command tree, as SPIRE's."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ... import __version__
from ...common.cli import App

app = App("spire-server", __version__)

# Each module adds its commands to ``app``.
from . import run  # noqa: E402,F401

for _name in ("healthcheck", "token", "entry", "bundle", "agent", "mint"):
    try:
        __import__(f"{__package__}.{_name}")
    except ModuleNotFoundError as exc:  # a command group not built yet must not break the others
        if exc.name != f"{__package__}.{_name}":
            raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    return app.main(argv)


if __name__ == "__main__":
    sys.exit(main())
