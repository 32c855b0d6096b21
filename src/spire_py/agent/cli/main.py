"""spire-agent: the command tree of commands.py, as SPIRE's."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ... import __version__
from ...common.cli import App
from .commands import COMMANDS

app = App("spire-agent", __version__, COMMANDS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return app.main(argv)


if __name__ == "__main__":
    sys.exit(main())
