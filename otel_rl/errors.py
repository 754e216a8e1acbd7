"""otel-rl's exceptions: a leaf module, so any layer can raise or catch them without importing
the layer that defines the behaviour."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and what is allowed."""


class MissingExtraError(ImportError):
    """An optional backend package is not installed."""


class PermanentError(Exception):
    """A write the backend refused for good (e.g. HTTP 4xx): retrying cannot help."""


class TransientError(Exception):
    """A write that may succeed later (5xx, 429, connection refused); ``retry_after_s`` is the
    backend's hint (HTTP ``Retry-After``), if any."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkClosedError(PermanentError):
    """A write to a sink after :meth:`Sink.shutdown`."""


class SpoolLockedError(RuntimeError):
    """The spool directory is in use by another process."""


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s:]*:[^/@\s]*@")
_SECRET_PARAMS = re.compile(r"(?i)(?P<key>[?&](?:token|access_token|api_key|apikey|password|secret)=)[^&\s]+")


def redact(text: str) -> str:
    """``text`` with credentials in URIs (``https://user:pass@host``) and secret query
    parameters (``?token=...``) replaced by ``***``: for logs, errors and ``/health``."""
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SECRET_PARAMS.sub(r"\g<key>***", text)
