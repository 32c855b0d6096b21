"""aws_iid: the attestation payload both sides share, and the instance identity document.

Wire compatible with SPIRE's ``pkg/common/plugin/aws``: the agent sends one JSON object
``{"document": DOC, "signature": SIG1024, "rsa2048": SIG2048}`` where DOC is the
instance identity document exactly as the metadata service served it (the signatures
cover those bytes), SIG1024 the base64 RSA-1024 PKCS#1 v1.5 signature and SIG2048 the
base64 body of a PKCS#7 SignedData (no PEM armour) signed by the region's RSA-2048 key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import SpireError
from .payload import json_object

PLUGIN_NAME = "aws_iid"
SELECTOR_TYPE = "aws_iid"
DEFAULT_AGENT_PATH_TEMPLATE = "/{{ .PluginName}}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"

# A document is a few hundred bytes; anything far larger is not one.
MAX_PAYLOAD_BYTES = 64 * 1024


class AWSIIDError(SpireError, ValueError):
    """A payload or document that cannot be read; the message says which part."""


@dataclass(frozen=True)
class AttestationData:
    document: str
    signature: str = ""   # RSA-1024, kept for older servers
    rsa2048: str = ""     # PKCS#7, what this server verifies


@dataclass(frozen=True)
class InstanceIdentityDocument:
    """The fields of the document that attestation uses (the rest is ignored, as in Go)."""

    account_id: str
    region: str
    instance_id: str
    image_id: str
    availability_zone: str


def marshal_attestation_data(data: AttestationData) -> bytes:
    return json.dumps({"document": data.document, "signature": data.signature,
                       "rsa2048": data.rsa2048}).encode()


def _string(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AWSIIDError(f"failed to unmarshal {what}: {key} must be a string")
    return value


def unmarshal_attestation_data(payload: bytes) -> AttestationData:
    what = "the attestation data"
    obj = json_object(payload, f"failed to unmarshal {what}", AWSIIDError, MAX_PAYLOAD_BYTES)
    return AttestationData(_string(obj, "document", what), _string(obj, "signature", what),
                           _string(obj, "rsa2048", what))


def parse_document(document: str) -> InstanceIdentityDocument:
    what = "the IID"
    obj = json_object(document, f"failed to unmarshal {what}", AWSIIDError)
    return InstanceIdentityDocument(
        account_id=_string(obj, "accountId", what),
        region=_string(obj, "region", what),
        instance_id=_string(obj, "instanceId", what),
        image_id=_string(obj, "imageId", what),
        availability_zone=_string(obj, "availabilityZone", what),
    )
