"""OTLP/HTTP payload encodings: binary protobuf and OTLP/JSON.

OTLP/JSON is protobuf's JSON mapping with two differences this module handles: trace and
span ids are hex strings (not base64), and unknown fields must be ignored.
"""

from __future__ import annotations

import base64
import json

from google.protobuf import json_format

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class UnsupportedMediaType(Exception):
    pass


def media_type(content_type: str | None) -> str:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported; use {PROTOBUF} or {JSON}")
    return kind


def _hex_ids_to_base64(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str) and value:
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
    return node


def parse(payload: bytes, content_type: str | None, message_cls):
    """Decode ``payload`` into ``message_cls``; raises DecodeError/ValueError when malformed."""
    kind = media_type(content_type)
    message = message_cls()
    if kind == PROTOBUF:
        message.ParseFromString(payload)
        return message
    try:
        document = json.loads(payload.decode("utf-8"))
        if not isinstance(document, dict):
            raise ValueError("OTLP/JSON body must be an object")
        json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, TypeError, AttributeError) as exc:
        # found by tests/collector/test_fuzz.py: ParseError is not a ValueError
        raise ValueError(f"invalid OTLP/JSON: {exc}") from exc
    return message


def encode(message, content_type: str | None) -> tuple[bytes, str]:
    """``message`` in the request's encoding (OTLP answers in kind)."""
    if media_type(content_type) == JSON:
        return json.dumps(json_format.MessageToDict(message)).encode(), JSON
    return message.SerializeToString(), PROTOBUF


class RequestError(Exception):
    """A request the collector refuses; ``status`` is the HTTP code (mapped to gRPC codes)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
