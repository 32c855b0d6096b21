"""What the server CA raises: it cannot work (CAError), it refuses a request (CARequestError,
an InvalidArgument for the API), or its stored journal cannot be read (JournalError)."""

from __future__ import annotations

from ...common.errors import SpireError


class CAError(SpireError, RuntimeError):
    """The CA cannot prepare or use an authority; the message says why."""


class CARequestError(SpireError, ValueError):
    """A signing request the CA refuses (bad SPIFFE ID, empty audience, bad key)."""


class JournalError(SpireError, ValueError):
    """The stored journal cannot be read."""
