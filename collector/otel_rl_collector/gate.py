"""What every OTLP request passes before its data is read: the bearer token, the body's size
and encoding, and parsing; each refusal is counted by reason (:class:`CollectorStats`)."""

from __future__ import annotations

import hmac
import zlib
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from otel_rl_collector import wire
from otel_rl_collector.wire import RequestError


@dataclass
class CollectorStats:
    requests: int = 0
    rejected_requests: int = 0
    received_points: int = 0
    rejected_points: int = 0
    received_spans: int = 0
    dropped_spans: int = 0
    received_log_records: int = 0
    rejected_log_records: int = 0
    forwarded_spans: int = 0
    duplicate_batches: int = 0
    ingress_errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected_requests += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1

class Gate:
    """The checks of one collector: ``token`` (None: no auth) and the request ``limits``."""

    def __init__(self, token: str | None, limits, stats: CollectorStats) -> None:
        self.token, self.limits, self.stats = token, limits, stats

    def authorized(self, authorization: str | None) -> bool:
        """Whether ``authorization`` carries the token (always, with auth off). Two
        ``Authorization`` headers (joined with ``,``) never do: which one counts is ambiguous."""
        if self.token is None:
            return True
        scheme, _, token = (authorization or "").strip().partition(" ")
        # the scheme is case-insensitive (RFC 9110); the token is compared in constant time
        ok = hmac.compare_digest(token.strip().encode("utf-8", "surrogatepass"), self.token.encode())
        return scheme.lower() == "bearer" and ok

    def check_auth(self, authorization: str | None) -> None:
        if not self.authorized(authorization):
            self.stats.reject("unauthenticated")
            raise RequestError(401, "missing or wrong bearer token")

    def decode_body(self, body: bytes, encoding: str | None) -> bytes:
        limits = self.limits
        if len(body) > limits.max_request_bytes:
            self.stats.reject("too_large")
            raise RequestError(413, f"request body {len(body)} bytes exceeds {limits.max_request_bytes}")
        if (encoding or "identity").lower() in ("identity", ""):
            return body
        if encoding.lower() != "gzip":
            self.stats.reject("bad_encoding")
            raise RequestError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
        parts, size, rest = [], 0, body
        try:  # bounded: a small gzip bomb must not expand into memory; every gzip member is read
            while rest:
                d = zlib.decompressobj(wbits=31)
                part = d.decompress(rest, limits.max_decompressed_bytes + 1 - size)
                size += len(part)
                parts.append(part)
                if size > limits.max_decompressed_bytes or d.unconsumed_tail:
                    self.stats.reject("too_large")
                    raise RequestError(413, f"decompressed body exceeds {limits.max_decompressed_bytes} bytes")
                if not d.eof:
                    raise zlib.error("truncated gzip member")
                rest = d.unused_data
        except zlib.error as exc:
            self.stats.reject("bad_gzip")
            raise RequestError(400, f"invalid gzip body: {exc}") from exc
        return b"".join(parts)

    def parse(self, payload: bytes, content_type: str, message_cls):
        """The request, parsed, refused (413) when what decoding would build is past the limits:
        bytes bound the body, not the objects it becomes (8 MB of empty resource blocks grew to
        2.5 GB; 63 KB of gzipped JSON to 2 GB)."""
        limits = self.limits
        try:
            kind = wire.media_type(content_type)
        except wire.UnsupportedMediaType as exc:
            self.stats.reject("bad_content_type")
            raise RequestError(415, str(exc)) from exc
        if kind == wire.JSON:
            if len(payload) > limits.max_json_bytes:
                self.stats.reject("too_large")
                raise RequestError(413, f"an OTLP/JSON body of {len(payload)} bytes exceeds limits.max_json_bytes="
                                   f"{limits.max_json_bytes} (send protobuf, or less per request)")
            objects = payload.count(b"{") + payload.count(b"[")
            if objects > limits.max_request_objects:
                self.stats.reject("too_large")
                raise RequestError(413, f"an OTLP/JSON body with {objects} objects and arrays exceeds "
                                   f"limits.max_request_objects={limits.max_request_objects}")
        request = self._parse(payload, content_type, message_cls)
        self._check_counts(request)
        return request

    def _check_counts(self, request) -> None:
        """Resource blocks, then metrics, points and records, counted without building more."""
        limits = self.limits
        field = next(f for f in ("resource_metrics", "resource_logs", "resource_spans") if hasattr(request, f))
        blocks = getattr(request, field)
        if len(blocks) > limits.max_resource_blocks:
            self.stats.reject("too_large")
            raise RequestError(413, f"{len(blocks)} resource blocks in one request exceed "
                               f"limits.max_resource_blocks={limits.max_resource_blocks}")
        items = 0
        for block in blocks:
            for scope in getattr(block, field.replace("resource_", "scope_")):
                entries = scope.metrics if field == "resource_metrics" else \
                    scope.log_records if field == "resource_logs" else scope.spans
                items += len(entries)
                if field == "resource_metrics":
                    for metric in entries:
                        kind = metric.WhichOneof("data")
                        items += len(getattr(metric, kind).data_points) if kind else 0
            if items > limits.max_request_objects:
                self.stats.reject("too_large")
                raise RequestError(413, f"more than limits.max_request_objects={limits.max_request_objects} "
                                   "metrics, points, records and spans in one request")

    def _parse(self, payload: bytes, content_type: str, message_cls):
        try:
            return wire.parse(payload, content_type, message_cls)
        except wire.UnsupportedMediaType as exc:
            self.stats.reject("bad_content_type")
            raise RequestError(415, str(exc)) from exc
        except (DecodeError, ValueError, UnicodeDecodeError) as exc:
            self.stats.reject("malformed")
            raise RequestError(400, f"malformed OTLP payload: {str(exc)[:300]}") from exc
