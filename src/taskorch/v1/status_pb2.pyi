from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    PENDING: _ClassVar[Status]
    RUNNING: _ClassVar[Status]
    COMPLETED: _ClassVar[Status]
    FAILED: _ClassVar[Status]
    CANCELLED: _ClassVar[Status]
STATUS_UNSPECIFIED: Status
PENDING: Status
RUNNING: Status
COMPLETED: Status
FAILED: Status
CANCELLED: Status
