"""Sparkplug B payload messages, built at import from the Sparkplug 3.0 specification's field numbers.

Only the part an edge node publishing scalar metrics needs (Payload: timestamp, metrics, seq; Metric: name, alias,
timestamp, datatype, is_historical, is_transient, is_null and the scalar value fields). The descriptor is made
with protobuf's descriptor API, so no generated code and no protoc are needed; the wire format is the one every
Sparkplug host decodes (package org.eclipse.tahu.protobuf, proto2).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "org.eclipse.tahu.protobuf"

# Sparkplug DataType enum values (spec 3.0, section 6.4.16)
INT32, INT64, UINT16, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN, STRING = 3, 4, 6, 7, 8, 9, 10, 11, 12

F = descriptor_pb2.FieldDescriptorProto
_METRIC_FIELDS = [  # (name, number, type); the value fields form the oneof `value`
    ("name", 1, F.TYPE_STRING), ("alias", 2, F.TYPE_UINT64), ("timestamp", 3, F.TYPE_UINT64),
    ("datatype", 4, F.TYPE_UINT32), ("is_historical", 5, F.TYPE_BOOL), ("is_transient", 6, F.TYPE_BOOL),
    ("is_null", 7, F.TYPE_BOOL),
]
_VALUE_FIELDS = [
    ("int_value", 10, F.TYPE_UINT32), ("long_value", 11, F.TYPE_UINT64), ("float_value", 12, F.TYPE_FLOAT),
    ("double_value", 13, F.TYPE_DOUBLE), ("boolean_value", 14, F.TYPE_BOOL), ("string_value", 15, F.TYPE_STRING),
    ("bytes_value", 16, F.TYPE_BYTES),
]


def _build() -> tuple[Any, Any]:
    fd = descriptor_pb2.FileDescriptorProto(name="inspectd_sparkplug_b.proto", package=PACKAGE, syntax="proto2")
    payload = fd.message_type.add(name="Payload")
    for name, number, ftype in (("timestamp", 1, F.TYPE_UINT64), ("seq", 3, F.TYPE_UINT64),
                                ("uuid", 4, F.TYPE_STRING), ("body", 5, F.TYPE_BYTES)):
        payload.field.add(name=name, number=number, type=ftype, label=F.LABEL_OPTIONAL)
    payload.field.add(name="metrics", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                      type_name=f".{PACKAGE}.Payload.Metric")
    metric = payload.nested_type.add(name="Metric")
    for name, number, ftype in _METRIC_FIELDS:
        metric.field.add(name=name, number=number, type=ftype, label=F.LABEL_OPTIONAL)
    metric.oneof_decl.add(name="value")
    for name, number, ftype in _VALUE_FIELDS:
        metric.field.add(name=name, number=number, type=ftype, label=F.LABEL_OPTIONAL, oneof_index=0)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName(f"{PACKAGE}.Payload")
    cls = message_factory.GetMessageClass(desc)
    return cls, message_factory.GetMessageClass(desc.nested_types_by_name["Metric"])


Payload, Metric = _build()

_VALUE_BY_TYPE = {INT32: "int_value", UINT16: "int_value", UINT32: "int_value", INT64: "long_value",
                  UINT64: "long_value", FLOAT: "float_value", DOUBLE: "double_value", BOOLEAN: "boolean_value",
                  STRING: "string_value"}


def add_metric(payload: Any, name: str | None, datatype: int, value: Any, timestamp_ms: int,
               alias: int | None = None) -> None:
    m = payload.metrics.add()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    m.timestamp = timestamp_ms
    m.datatype = datatype
    if datatype == INT64 and value < 0:  # signed values travel as two's complement in the unsigned field
        value += 1 << 64
    setattr(m, _VALUE_BY_TYPE[datatype], value)


def metric_value(m: Any) -> Any:
    field = m.WhichOneof("value")
    value = getattr(m, field) if field else None
    if m.datatype == INT64 and isinstance(value, int) and value >= 1 << 63:
        value -= 1 << 64
    return value
