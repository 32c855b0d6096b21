"""What an attacker's gRPC client looks like: raw bytes on the wire, no certificate, trusting anything."""

from __future__ import annotations

import ssl
from typing import Any

from grpclib.encoding.proto import ProtoCodec


class RawCodec(ProtoCodec):
    """Sends bytes as they are (a message object is encoded as usual); answers stay decoded."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message if isinstance(message, bytes) else super().encode(message, message_type)


class RawReplyCodec(RawCodec):
    """Like RawCodec, and hands back answers as bytes: only their status matters."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


def anonymous_tls() -> ssl.SSLContext:
    """A TLS client that presents no certificate and does not check the server's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx
