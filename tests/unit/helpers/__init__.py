"""Builders and harnesses the unit tests import by name (fixtures live in conftest.py files)."""
