"""NodeAttestor "join_token" (server): single-use, expiring tokens made by the admin API.

The token becomes the last path segment of the agent ID
(``spiffe://<td>/spire/agent/join_token/<token>``), so a token value must be a
valid SPIFFE ID path segment; SPIRE builds that ID with go-spiffe's
``FromSegments`` and uses its wording, which this module keeps.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Optional

from grpclib.const import Status

from ....common import log
from ....common.errors import SpireError
from ....common.plugin import NoConfig, PluginContext, register
from ....common.spiffeid import SpiffeId, TrustDomain, agent_id
from ...datastore.api import DataStore
from ...datastore.schema import TOKEN_LEN
from ..context import datastore_of
from .base import AttestationError, AttestResult, Challenge, NodeAttestor

_log = log.get("join_token")

# fullmatch, not match with "$": "$" also matches before a trailing newline.
_SEGMENT = re.compile(r"[a-zA-Z0-9._-]+")


class InvalidJoinToken(SpireError, ValueError):
    """A token value that cannot be an agent ID path segment; the message names it."""


class JoinTokenRefused(AttestationError):
    """An attestation refused with SPIRE's own message, which the agent API passes on as is."""


def _quote(value: str) -> str:
    # Close to Go's %q: printable characters as they are, control characters escaped.
    return json.dumps(value, ensure_ascii=False)


def check_token(token: str) -> None:
    """Refuse what go-spiffe's FromSegments refuses for one segment, and what the datastore cannot hold."""
    if token == "":
        reason = "path cannot contain empty segments"
    elif token in (".", ".."):
        reason = "path cannot contain dot segments"
    elif not _SEGMENT.fullmatch(token):
        reason = "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    elif len(token) > TOKEN_LEN:
        raise InvalidJoinToken(f"token is longer than {TOKEN_LEN} characters")
    else:
        return
    raise InvalidJoinToken(f"invalid path segment {_quote(token)}: {reason}")


def join_token_id(td: TrustDomain, token: str) -> SpiffeId:
    """The agent ID a token attests to; InvalidJoinToken when the token cannot be one segment of it."""
    check_token(token)
    return agent_id(td, "join_token", token)


@register("server")
class JoinTokenAttestor(NodeAttestor):
    NAME = "join_token"

    def __init__(self, trust_domain: TrustDomain, datastore: Optional[DataStore]) -> None:
        self.trust_domain = trust_domain
        self.datastore = datastore

    @classmethod
    def from_config(cls, config: NoConfig, ctx: PluginContext) -> "JoinTokenAttestor":
        return cls(TrustDomain(ctx.trust_domain), datastore_of(ctx))

    async def attest(self, payload: bytes, challenge: Challenge) -> AttestResult:
        """As SPIRE's attestJoinToken: the payload is the token, verbatim (no trimming)."""
        if not payload:
            raise JoinTokenRefused("malformed param: missing attestation data payload", Status.INVALID_ARGUMENT)
        token = payload.decode("utf-8", "replace")
        # Taking the token deletes it in the same transaction: a token attests exactly once,
        # expired or not. One longer than the column cannot exist; no need to ask the database.
        taken = None
        if len(token) <= TOKEN_LEN:
            taken = await asyncio.to_thread(self.datastore.take_join_token, token)  # type: ignore[union-attr]
        if taken is None:
            raise JoinTokenRefused("failed to attest: join token does not exist or has already been used",
                                   Status.INVALID_ARGUMENT)
        if taken.expires_at < int(time.time()):
            raise JoinTokenRefused("join token expired", Status.INVALID_ARGUMENT)
        try:
            sid = join_token_id(self.trust_domain, token)
        except InvalidJoinToken as exc:
            # Only a token stored before values were checked at creation gets here.
            _log.error("Join token cannot form an agent ID", extra=log.fields(error=str(exc)))
            raise JoinTokenRefused(f"failed to create join token ID: {exc}", Status.INTERNAL) from None
        return AttestResult(sid, [], can_reattest=False)
