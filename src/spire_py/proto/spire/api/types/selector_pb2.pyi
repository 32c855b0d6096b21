from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Selector(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SelectorMatch(_message.Message):
    __slots__ = ("selectors", "match")
    class MatchBehavior(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MATCH_EXACT: _ClassVar[SelectorMatch.MatchBehavior]
        MATCH_SUBSET: _ClassVar[SelectorMatch.MatchBehavior]
        MATCH_SUPERSET: _ClassVar[SelectorMatch.MatchBehavior]
        MATCH_ANY: _ClassVar[SelectorMatch.MatchBehavior]
    MATCH_EXACT: SelectorMatch.MatchBehavior
    MATCH_SUBSET: SelectorMatch.MatchBehavior
    MATCH_SUPERSET: SelectorMatch.MatchBehavior
    MATCH_ANY: SelectorMatch.MatchBehavior
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    selectors: _containers.RepeatedCompositeFieldContainer[Selector]
    match: SelectorMatch.MatchBehavior
    def __init__(self, selectors: _Optional[_Iterable[_Union[Selector, _Mapping]]] = ..., match: _Optional[_Union[SelectorMatch.MatchBehavior, str]] = ...) -> None: ...
