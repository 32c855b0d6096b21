"""What the server asks of an UpstreamAuthority: to sign its intermediate CA, as SPIRE's plugin type."""

from __future__ import annotations

from typing import Any, Optional, Protocol, Union, runtime_checkable

from cryptography import x509

from ....common.spiffeid import TrustDomain


@runtime_checkable
class UpstreamAuthority(Protocol):
    def mint_x509_ca(
        self,
        csr_or_public_key: Any,
        trust_domain: Union[TrustDomain, str, None] = None,
        ttl: float = 0,
        now: Optional[float] = None,
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        """(new CA followed by the upstream chain, upstream roots)."""
        ...

    async def close(self) -> None: ...
