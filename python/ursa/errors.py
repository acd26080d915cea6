"""The exception classes ursa raises. Builtins are used where their meaning matches
(``ValueError`` for bad input, ``FileExistsError`` for destination collisions)."""

from __future__ import annotations


class UrsaError(Exception):
    """Base class of ursa's own exceptions."""


class ConfigurationError(UrsaError):
    """A profile, config file or credential problem (unknown profile, malformed file,
    missing credentials)."""


class ObjectStoreError(UrsaError):
    """A non-transient object-store failure. ``key`` names the object (or prefix) that
    failed; ``attempts`` counts the requests made for it."""

    def __init__(self, message: str, *, key: str | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.key = key
        self.attempts = attempts


class ObjectStoreTransientError(ObjectStoreError):
    """A retryable transport fault (5xx, 429, 408, reset, truncated body, stall). Retried
    inside the engine; it surfaces only as the ``__cause__`` of an ``ObjectStoreError``
    once the retry budget is exhausted."""
