from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PermissionDeniedDetails(_message.Message):
    __slots__ = ("reason",)
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_EXPIRED: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_NOT_ATTESTED: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_NOT_ACTIVE: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_BANNED: _ClassVar[PermissionDeniedDetails.Reason]
        AGENT_MUST_REATTEST: _ClassVar[PermissionDeniedDetails.Reason]
    UNKNOWN: PermissionDeniedDetails.Reason
    AGENT_EXPIRED: PermissionDeniedDetails.Reason
    AGENT_NOT_ATTESTED: PermissionDeniedDetails.Reason
    AGENT_NOT_ACTIVE: PermissionDeniedDetails.Reason
    AGENT_BANNED: PermissionDeniedDetails.Reason
    AGENT_MUST_REATTEST: PermissionDeniedDetails.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: PermissionDeniedDetails.Reason
    def __init__(self, reason: _Optional[_Union[PermissionDeniedDetails.Reason, str]] = ...) -> None: ...
