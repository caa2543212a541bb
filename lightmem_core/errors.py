"""The one exception tree of the project.

Workers decide between retry and failure by exception class only: a ``TransientError`` is
retried, every other ``LightMemError`` marks the item failed with its message.
"""

from __future__ import annotations


class LightMemError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(LightMemError, ValueError):
    """Raised when a configuration value is unknown, of the wrong type, or inconsistent."""


class NotSupportedError(ConfigError):
    """Raised when a configuration option is recognised but its behaviour is not built yet."""


class ModelLoadError(ConfigError):
    """Raised when a model path is missing or holds something other than what the backend needs."""


class InvalidInput(LightMemError, ValueError):
    """Raised when a message, session or query is malformed; names the item and the field."""


class TransientError(LightMemError):
    """Raised for failures that may pass on retry: rate limits, 5xx answers, timeouts, lost connections."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[TransientError], tuple[str, float | None]]:
        # Celery pickles a failed task's exception; without this the copy would lose the extra field.
        return type(self), (str(self), self.retry_after_s)


class SearchTimeout(TransientError):
    """Nobody answered a search in time (the store worker that owns an embedded folder is down or busy)."""


class LLMRequestError(LightMemError):
    """Raised when the LLM endpoint refuses a request for good: a bad key, an unknown model, a 4xx other than 429."""


class ExtractionParseError(LightMemError):
    """Raised when an LLM reply is not valid JSON of the expected schema, even after one repair."""

    def __init__(self, message: str, raw_reply: str = "") -> None:
        super().__init__(message)
        self.raw_reply = raw_reply

    def __reduce__(self) -> tuple[type[ExtractionParseError], tuple[str, str]]:
        return type(self), (str(self), self.raw_reply)


class StoreError(LightMemError):
    """Raised when the vector store refuses an operation (wrong dimensions, a locked folder)."""


class NotFound(LightMemError):
    """Raised when an entry, its history or a tracked item does not exist for the user who asked (an entry
    of another user is not found either)."""


class AccessDenied(LightMemError):
    """Raised when an API key may not touch the user a request names (the HTTP API's 403)."""


class Unauthenticated(AccessDenied):
    """Raised when a request carries no API key, or one that is not configured (the HTTP API's 401)."""
