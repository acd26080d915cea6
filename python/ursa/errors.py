"""The exception classes ursa raises. Builtins are used where their meaning matches
(``ValueError`` for bad input, ``FileExistsError`` for destination collisions)."""

from __future__ import annotations

from typing import NoReturn


class UrsaError(Exception):
    """Base class of ursa's own exceptions."""


class ConfigurationError(UrsaError):
    """A profile, config file or credential problem (unknown profile, malformed file,
    missing credentials)."""


class DownloadCancelled(UrsaError):
    """A download stopped because its ``cancel=`` token was set (e.g. a
    ``threading.Event`` set from another thread). Raised only after the engine has stopped
    and removed its temporaries: no partial file is left under a final name. Files that
    were already complete stay in place. (Cancelling a ``download_async()`` task raises
    ``asyncio.CancelledError`` instead, as asyncio code expects.)"""


class ObjectStoreError(UrsaError):
    """A non-transient object-store failure. ``key`` names the object (or prefix) that
    failed; ``attempts`` counts the requests made for it."""

    def __init__(self, message: str, *, key: str | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.key = key
        self.attempts = attempts


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """The object (or an asset's prefix) is not in the store."""


class AccessDeniedError(ObjectStoreError, PermissionError):
    """The store refused the credentials (wrong, expired, or without permission); the
    message names the profile and role whose credentials to fix."""


class ObjectChangedError(ObjectStoreError):
    """The object changed on the store after it was planned (its ETag moved): nothing of
    it was kept, so no file mixes two versions. Re-run to get the new version."""


class IntegrityError(ObjectStoreError):
    """The bytes never matched the store's checksum within the retry budget."""


class ObjectStoreTransientError(ObjectStoreError):
    """A retryable transport fault (5xx, 429, 408, reset, truncated body, stall). Retried
    inside the engine; it surfaces only as the ``__cause__`` of an ``ObjectStoreError``
    once the retry budget is exhausted."""


def _describe(message: str, key: str | None) -> str:
    return f"{message} (key {key!r})" if key else message


def raise_from_core(exc: BaseException) -> NoReturn:
    """Raise the documented exception for an engine error, chained from its cause (the
    last transient fault, when retries ran out) rather than from the engine's wrapper."""
    error = from_core(exc)
    raise error from error.__cause__


def from_core(exc: BaseException) -> BaseException:
    """The documented exception for an engine error (``_core.CoreError``): the one place
    where an error's kind decides its class."""
    kind, message, key, attempts, cause = exc.args
    error = _from_fault(kind, message, key, attempts)
    if cause is not None:
        error.__cause__ = _from_fault(*cause)
    return error


def _from_fault(kind: str, message: str, key: str | None, attempts: int) -> BaseException:
    text = _describe(message, key)
    if kind == "invalid_input":
        return ValueError(text)
    if kind == "file_exists":
        return FileExistsError(text)
    if kind == "io":
        return OSError(text)
    return _STORE_ERRORS.get(kind, ObjectStoreError)(text, key=key, attempts=attempts)


_STORE_ERRORS: dict[str, type[ObjectStoreError]] = {
    "not_found": ObjectNotFoundError,
    "permission_denied": AccessDeniedError,
    "changed": ObjectChangedError,
    "integrity": IntegrityError,
    "transient": ObjectStoreTransientError,
}
