"""spire_py: a SPIRE-compatible SPIFFE Runtime Environment."""

__version__ = "0.1.0"
