"""SPIFFE IDs and trust domains as value objects that validate on construction.

Rules follow the SPIFFE ID specification: scheme ``spiffe``, a lowercase trust
domain of ``[a-z0-9._-]``, a path of segments of ``[a-zA-Z0-9._-]`` with no
empty, ``.`` or ``..`` segment, no query, fragment, port or user info.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .errors import SpireError

_TD_RE = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_LEN = 2048


class SpiffeIdError(SpireError, ValueError):
    """An invalid SPIFFE ID or trust domain; the message names the input."""


def _check_path(path: str, what: str) -> None:
    if not path:
        return
    if not path.startswith("/"):
        raise SpiffeIdError(f'{what} "{path}": path must start with "/"')
    for seg in path[1:].split("/"):
        if seg == "":
            raise SpiffeIdError(f'{what} "{path}": path cannot contain empty segments')
        if seg in (".", ".."):
            raise SpiffeIdError(f'{what} "{path}": path cannot contain dot segments')
        if not _SEGMENT_RE.fullmatch(seg):
            raise SpiffeIdError(
                f'{what} "{path}": path segment characters are limited to letters, numbers, dots, dashes, and underscores'
            )


@dataclass(frozen=True, order=True)
class TrustDomain:
    name: str

    def __post_init__(self) -> None:
        if not self.name:
            raise SpiffeIdError("trust domain is missing")
        if not _TD_RE.fullmatch(self.name):
            raise SpiffeIdError(
                f'trust domain "{self.name}": characters are limited to lowercase letters, numbers, dots, dashes, and underscores'
            )

    @classmethod
    def parse(cls, value: str) -> "TrustDomain":
        """Accept a bare name (``example.org``) or a SPIFFE ID (``spiffe://example.org[/...]``)."""
        if "://" in value:
            return SpiffeId.parse(value).trust_domain
        return cls(value)

    def id_string(self) -> str:
        return unchecked_id_string(self.name)

    def __str__(self) -> str:
        return self.name

    def id(self, path: str = "") -> "SpiffeId":
        return SpiffeId(self, path)


@dataclass(frozen=True, order=True)
class SpiffeId:
    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        _check_path(self.path, "SPIFFE ID path")

    @classmethod
    def parse(cls, value: str) -> "SpiffeId":
        if cls is SpiffeId and type(value) is str:
            return _parsed(value)
        return cls._parse(value)

    @classmethod
    def _parse(cls, value: str) -> "SpiffeId":
        if not isinstance(value, str) or not value:
            raise SpiffeIdError("SPIFFE ID is empty")
        if len(value) > _MAX_LEN:
            raise SpiffeIdError(f"SPIFFE ID is longer than {_MAX_LEN} characters")
        if not value.startswith("spiffe://"):
            if "://" in value:
                raise SpiffeIdError(f'"{value}": scheme is missing or invalid')
            raise SpiffeIdError(f'"{value}": scheme is missing or invalid')
        rest = value[len("spiffe://"):]
        if "?" in rest or "#" in rest:
            raise SpiffeIdError(f'"{value}": query and fragment are not allowed')
        slash = rest.find("/")
        td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        if not td:
            raise SpiffeIdError(f'"{value}": trust domain is missing')
        if ":" in td or "@" in td:
            raise SpiffeIdError(f'"{value}": port and user info are not allowed')
        try:
            trust_domain = TrustDomain(td)
        except SpiffeIdError as exc:
            raise SpiffeIdError(f'"{value}": {exc}') from None
        try:
            return cls(trust_domain, path)
        except SpiffeIdError:
            _check_path(path, f'SPIFFE ID "{value}"')
            raise

    @classmethod
    def from_parts(cls, trust_domain: str, path: str) -> "SpiffeId":
        return cls(TrustDomain(trust_domain), path)

    def member_of(self, td: TrustDomain) -> bool:
        return self.trust_domain == td

    def __str__(self) -> str:
        return unchecked_id_string(self.trust_domain.name, self.path)


# IDs are parsed again and again (every entry at every sync, every SVID signed): the valid ones
# are remembered, boundedly. A SpiffeId is immutable, so sharing one is safe; invalid input is
# never remembered and raises each time.
@functools.lru_cache(maxsize=8192)
def _parsed(value: str) -> SpiffeId:
    return SpiffeId._parse(value)


def unchecked_id_string(trust_domain: str, path: str = "") -> str:
    """``spiffe://<trust_domain><path>`` as given, not validated: for quoting what a peer sent."""
    return f"spiffe://{trust_domain}{path}"


def server_id(td: TrustDomain) -> SpiffeId:
    return SpiffeId(td, "/spire/server")


def agent_id(td: TrustDomain, attestor: str, *parts: str) -> SpiffeId:
    return SpiffeId(td, "/spire/agent/" + "/".join((attestor,) + parts))


def is_agent_id(sid: SpiffeId) -> bool:
    return sid.path.startswith("/spire/agent/")


def is_reserved_path(sid: SpiffeId) -> bool:
    return sid.path == "/spire" or sid.path.startswith("/spire/")
