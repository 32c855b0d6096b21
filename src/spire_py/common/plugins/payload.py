"""Attestation payloads and documents that are JSON objects: read once, bounded, and every
failure an error of the attestor's own kind whose message starts with what was being read."""

from __future__ import annotations

import json
from typing import Any, Optional, Union


def json_object(data: Union[bytes, str], prefix: str, error: type[Exception],
                limit: Optional[int] = None) -> dict[str, Any]:
    """``data`` as a JSON object; anything else raises ``error(f"{prefix}: ...")``."""
    if limit is not None and len(data) > limit:
        raise error(f"{prefix}: larger than {limit} bytes")
    try:
        obj = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise error(f"{prefix}: {exc}") from None
    if not isinstance(obj, dict):
        raise error(f"{prefix}: not a JSON object")
    return obj
