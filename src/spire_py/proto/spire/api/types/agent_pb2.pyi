from spire_py.proto.spire.api.types import selector_pb2 as _selector_pb2
from spire_py.proto.spire.api.types import spiffeid_pb2 as _spiffeid_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Agent(_message.Message):
    __slots__ = ("id", "attestation_type", "x509svid_serial_number", "x509svid_expires_at", "selectors", "banned", "can_reattest", "agent_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    X509SVID_SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    X509SVID_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    CAN_REATTEST_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: _spiffeid_pb2.SPIFFEID
    attestation_type: str
    x509svid_serial_number: str
    x509svid_expires_at: int
    selectors: _containers.RepeatedCompositeFieldContainer[_selector_pb2.Selector]
    banned: bool
    can_reattest: bool
    agent_version: str
    def __init__(self, id: _Optional[_Union[_spiffeid_pb2.SPIFFEID, _Mapping]] = ..., attestation_type: _Optional[str] = ..., x509svid_serial_number: _Optional[str] = ..., x509svid_expires_at: _Optional[int] = ..., selectors: _Optional[_Iterable[_Union[_selector_pb2.Selector, _Mapping]]] = ..., banned: _Optional[bool] = ..., can_reattest: _Optional[bool] = ..., agent_version: _Optional[str] = ...) -> None: ...

class AgentMask(_message.Message):
    __slots__ = ("attestation_type", "x509svid_serial_number", "x509svid_expires_at", "selectors", "banned", "can_reattest", "agent_version")
    ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    X509SVID_SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    X509SVID_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    CAN_REATTEST_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    attestation_type: bool
    x509svid_serial_number: bool
    x509svid_expires_at: bool
    selectors: bool
    banned: bool
    can_reattest: bool
    agent_version: bool
    def __init__(self, attestation_type: _Optional[bool] = ..., x509svid_serial_number: _Optional[bool] = ..., x509svid_expires_at: _Optional[bool] = ..., selectors: _Optional[bool] = ..., banned: _Optional[bool] = ..., can_reattest: _Optional[bool] = ..., agent_version: _Optional[bool] = ...) -> None: ...
