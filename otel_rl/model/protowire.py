"""Protobuf wire-format pieces for records encoded without protobuf objects (TensorBoard events,
OTLP data points): the bytes the protobuf runtime writes for the same fields."""

from __future__ import annotations

_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    """A protobuf varint (int64 two's complement for negative numbers, as protobuf does)."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
