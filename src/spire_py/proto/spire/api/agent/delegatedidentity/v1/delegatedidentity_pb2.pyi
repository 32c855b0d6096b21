from spire_py.proto.spire.api.types import selector_pb2 as _selector_pb2
from spire_py.proto.spire.api.types import x509svid_pb2 as _x509svid_pb2
from spire_py.proto.spire.api.types import jwtsvid_pb2 as _jwtsvid_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class X509SVIDWithKey(_message.Message):
    __slots__ = ("x509_svid", "x509_svid_key")
    X509_SVID_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_KEY_FIELD_NUMBER: _ClassVar[int]
    x509_svid: _x509svid_pb2.X509SVID
    x509_svid_key: bytes
    def __init__(self, x509_svid: _Optional[_Union[_x509svid_pb2.X509SVID, _Mapping]] = ..., x509_svid_key: _Optional[bytes] = ...) -> None: ...

class SubscribeToX509SVIDsRequest(_message.Message):
    __slots__ = ("selectors", "pid")
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    selectors: _containers.RepeatedCompositeFieldContainer[_selector_pb2.Selector]
    pid: int
    def __init__(self, selectors: _Optional[_Iterable[_Union[_selector_pb2.Selector, _Mapping]]] = ..., pid: _Optional[int] = ...) -> None: ...

class SubscribeToX509SVIDsResponse(_message.Message):
    __slots__ = ("x509_svids", "federates_with")
    X509_SVIDS_FIELD_NUMBER: _ClassVar[int]
    FEDERATES_WITH_FIELD_NUMBER: _ClassVar[int]
    x509_svids: _containers.RepeatedCompositeFieldContainer[X509SVIDWithKey]
    federates_with: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, x509_svids: _Optional[_Iterable[_Union[X509SVIDWithKey, _Mapping]]] = ..., federates_with: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeToX509BundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscribeToX509BundlesResponse(_message.Message):
    __slots__ = ("ca_certificates",)
    class CaCertificatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    CA_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    ca_certificates: _containers.ScalarMap[str, bytes]
    def __init__(self, ca_certificates: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class FetchJWTSVIDsRequest(_message.Message):
    __slots__ = ("audience", "selectors", "pid")
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    audience: _containers.RepeatedScalarFieldContainer[str]
    selectors: _containers.RepeatedCompositeFieldContainer[_selector_pb2.Selector]
    pid: int
    def __init__(self, audience: _Optional[_Iterable[str]] = ..., selectors: _Optional[_Iterable[_Union[_selector_pb2.Selector, _Mapping]]] = ..., pid: _Optional[int] = ...) -> None: ...

class FetchJWTSVIDsResponse(_message.Message):
    __slots__ = ("svids",)
    SVIDS_FIELD_NUMBER: _ClassVar[int]
    svids: _containers.RepeatedCompositeFieldContainer[_jwtsvid_pb2.JWTSVID]
    def __init__(self, svids: _Optional[_Iterable[_Union[_jwtsvid_pb2.JWTSVID, _Mapping]]] = ...) -> None: ...

class SubscribeToJWTBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscribeToJWTBundlesResponse(_message.Message):
    __slots__ = ("bundles",)
    class BundlesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.ScalarMap[str, bytes]
    def __init__(self, bundles: _Optional[_Mapping[str, bytes]] = ...) -> None: ...
