from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNSPECIFIED: _ClassVar[LogLevel]
    PANIC: _ClassVar[LogLevel]
    FATAL: _ClassVar[LogLevel]
    ERROR: _ClassVar[LogLevel]
    WARN: _ClassVar[LogLevel]
    INFO: _ClassVar[LogLevel]
    DEBUG: _ClassVar[LogLevel]
    TRACE: _ClassVar[LogLevel]
UNSPECIFIED: LogLevel
PANIC: LogLevel
FATAL: LogLevel
ERROR: LogLevel
WARN: LogLevel
INFO: LogLevel
DEBUG: LogLevel
TRACE: LogLevel

class Logger(_message.Message):
    __slots__ = ("current_level", "launch_level")
    CURRENT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    current_level: LogLevel
    launch_level: LogLevel
    def __init__(self, current_level: _Optional[_Union[LogLevel, str]] = ..., launch_level: _Optional[_Union[LogLevel, str]] = ...) -> None: ...
