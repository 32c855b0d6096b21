"""BundlePublisher: puts the server's trust bundle somewhere relying parties read it, as SPIRE's
plugin type. The server calls ``publish_bundle`` at start and whenever the bundle changes
(``server/bundle_publishing.py``); a publisher skips a bundle it already published."""

from __future__ import annotations

from ....common.bundle import Bundle
from ....common.errors import SpireError
from ....common.plugin import Plugin


class PublishError(SpireError):
    """The bundle could not be published (the next change or refresh tries again)."""


class BundlePublisher(Plugin):
    TYPE = "BundlePublisher"

    async def publish_bundle(self, bundle: Bundle) -> None:
        raise NotImplementedError


FORMATS = ("spiffe", "jwks", "pem")


def format_bundle(bundle: Bundle, fmt: str) -> bytes:
    """SPIRE's bundle formats: ``spiffe`` (the SPIFFE bundle JWKS, X.509 and JWT authorities),
    ``jwks`` (the same keys without the SPIFFE parameters) and ``pem`` (X.509 authorities only)."""
    if fmt == "pem":
        return bundle.to_pem()
    doc = bundle.to_jwks()
    if fmt == "jwks":
        doc = {"keys": [{k: v for k, v in key.items() if k != "use"} for key in doc["keys"]]}
    elif fmt != "spiffe":
        raise PublishError(f'bundle format "{fmt}" is not supported')
    import json

    return json.dumps(doc, indent=4).encode()
