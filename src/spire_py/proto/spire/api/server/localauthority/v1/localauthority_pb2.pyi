from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthorityState(_message.Message):
    __slots__ = ("authority_id", "expires_at", "upstream_authority_subject_key_id")
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_AUTHORITY_SUBJECT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    expires_at: int
    upstream_authority_subject_key_id: str
    def __init__(self, authority_id: _Optional[str] = ..., expires_at: _Optional[int] = ..., upstream_authority_subject_key_id: _Optional[str] = ...) -> None: ...

class GetJWTAuthorityStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJWTAuthorityStateResponse(_message.Message):
    __slots__ = ("active", "prepared", "old")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    active: AuthorityState
    prepared: AuthorityState
    old: AuthorityState
    def __init__(self, active: _Optional[_Union[AuthorityState, _Mapping]] = ..., prepared: _Optional[_Union[AuthorityState, _Mapping]] = ..., old: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class PrepareJWTAuthorityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrepareJWTAuthorityResponse(_message.Message):
    __slots__ = ("prepared_authority",)
    PREPARED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    prepared_authority: AuthorityState
    def __init__(self, prepared_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class ActivateJWTAuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class ActivateJWTAuthorityResponse(_message.Message):
    __slots__ = ("activated_authority",)
    ACTIVATED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    activated_authority: AuthorityState
    def __init__(self, activated_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class TaintJWTAuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class TaintJWTAuthorityResponse(_message.Message):
    __slots__ = ("tainted_authority",)
    TAINTED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    tainted_authority: AuthorityState
    def __init__(self, tainted_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class RevokeJWTAuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class RevokeJWTAuthorityResponse(_message.Message):
    __slots__ = ("revoked_authority",)
    REVOKED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    revoked_authority: AuthorityState
    def __init__(self, revoked_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class GetX509AuthorityStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetX509AuthorityStateResponse(_message.Message):
    __slots__ = ("active", "prepared", "old")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    active: AuthorityState
    prepared: AuthorityState
    old: AuthorityState
    def __init__(self, active: _Optional[_Union[AuthorityState, _Mapping]] = ..., prepared: _Optional[_Union[AuthorityState, _Mapping]] = ..., old: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class PrepareX509AuthorityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrepareX509AuthorityResponse(_message.Message):
    __slots__ = ("prepared_authority",)
    PREPARED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    prepared_authority: AuthorityState
    def __init__(self, prepared_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class ActivateX509AuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class ActivateX509AuthorityResponse(_message.Message):
    __slots__ = ("activated_authority",)
    ACTIVATED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    activated_authority: AuthorityState
    def __init__(self, activated_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class TaintX509AuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class TaintX509AuthorityResponse(_message.Message):
    __slots__ = ("tainted_authority",)
    TAINTED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    tainted_authority: AuthorityState
    def __init__(self, tainted_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class TaintX509UpstreamAuthorityRequest(_message.Message):
    __slots__ = ("subject_key_id",)
    SUBJECT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    subject_key_id: str
    def __init__(self, subject_key_id: _Optional[str] = ...) -> None: ...

class TaintX509UpstreamAuthorityResponse(_message.Message):
    __slots__ = ("upstream_authority_subject_key_id",)
    UPSTREAM_AUTHORITY_SUBJECT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    upstream_authority_subject_key_id: str
    def __init__(self, upstream_authority_subject_key_id: _Optional[str] = ...) -> None: ...

class RevokeX509UpstreamAuthorityRequest(_message.Message):
    __slots__ = ("subject_key_id",)
    SUBJECT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    subject_key_id: str
    def __init__(self, subject_key_id: _Optional[str] = ...) -> None: ...

class RevokeX509UpstreamAuthorityResponse(_message.Message):
    __slots__ = ("upstream_authority_subject_key_id",)
    UPSTREAM_AUTHORITY_SUBJECT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    upstream_authority_subject_key_id: str
    def __init__(self, upstream_authority_subject_key_id: _Optional[str] = ...) -> None: ...

class RevokeX509AuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class RevokeX509AuthorityResponse(_message.Message):
    __slots__ = ("revoked_authority",)
    REVOKED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    revoked_authority: AuthorityState
    def __init__(self, revoked_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class GetWITAuthorityStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetWITAuthorityStateResponse(_message.Message):
    __slots__ = ("active", "prepared", "old")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    active: AuthorityState
    prepared: AuthorityState
    old: AuthorityState
    def __init__(self, active: _Optional[_Union[AuthorityState, _Mapping]] = ..., prepared: _Optional[_Union[AuthorityState, _Mapping]] = ..., old: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class PrepareWITAuthorityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrepareWITAuthorityResponse(_message.Message):
    __slots__ = ("prepared_authority",)
    PREPARED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    prepared_authority: AuthorityState
    def __init__(self, prepared_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class ActivateWITAuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class ActivateWITAuthorityResponse(_message.Message):
    __slots__ = ("activated_authority",)
    ACTIVATED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    activated_authority: AuthorityState
    def __init__(self, activated_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class TaintWITAuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class TaintWITAuthorityResponse(_message.Message):
    __slots__ = ("tainted_authority",)
    TAINTED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    tainted_authority: AuthorityState
    def __init__(self, tainted_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...

class RevokeWITAuthorityRequest(_message.Message):
    __slots__ = ("authority_id",)
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    def __init__(self, authority_id: _Optional[str] = ...) -> None: ...

class RevokeWITAuthorityResponse(_message.Message):
    __slots__ = ("revoked_authority",)
    REVOKED_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    revoked_authority: AuthorityState
    def __init__(self, revoked_authority: _Optional[_Union[AuthorityState, _Mapping]] = ...) -> None: ...
