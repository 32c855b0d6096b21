"""JWT authorities as the standard JWKS document the Workload API hands out.

SPIRE marshals these with ``StandardJWKS`` and without X.509 authorities: a plain
``{"keys": [...]}`` with ``kty``/``kid`` and the key parameters, no ``use`` and no
SPIFFE bundle fields, indented by four spaces (go-jose field order).
"""

from __future__ import annotations

import json

from ...common.bundle import Bundle, jwk_params


def jwks_json(bundle: Bundle) -> bytes:
    keys = []
    for kid, key in sorted(bundle.jwt_keys().items()):
        params = jwk_params(key)
        keys.append({"kty": params.pop("kty"), "kid": kid, **params})
    return json.dumps({"keys": keys}, indent=4).encode()
