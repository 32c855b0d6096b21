"""Where the unit tests find the repository and their sample files, wherever the test sits."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository: tests/unit/helpers/paths.py
DATA = ROOT / "tests" / "unit" / "data"  # sample configs (data/conf) shared by the config tests
CONF_DATA = DATA / "conf"
