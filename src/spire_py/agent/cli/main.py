"""spire-agent: the command tree, as SPIRE's."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ... import __version__
from ...common.cli import App

app = App("spire-agent", __version__)

from . import run  # noqa: E402,F401

try:
    from . import api as _api  # noqa: E402

    _api.register(app)
except ModuleNotFoundError as exc:  # the api commands are optional until built
    if exc.name != f"{__package__}.api":
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    return app.main(argv)


if __name__ == "__main__":
    sys.exit(main())
