"""The retry budget and stall timeout for downloads and reads. The defaults are the
engine's own (``retry.rs``), defined there once."""

from __future__ import annotations

from dataclasses import dataclass

from ursa import _core

_ATTEMPTS, _BASE_S, _MAX_S, _IDLE_S = _core.DEFAULT_RETRY


@dataclass(frozen=True)
class RetryPolicy:
    """Per object (or per part of a large object): at most ``max_attempts`` requests,
    exponential backoff with jitter from ``base_delay_s`` up to ``max_delay_s`` (a
    server's Retry-After is honoured), and a body that sends nothing for
    ``idle_timeout_s`` counts as stalled. A slow but steady transfer never times out."""

    max_attempts: int = _ATTEMPTS
    base_delay_s: float = _BASE_S
    max_delay_s: float = _MAX_S
    idle_timeout_s: float = _IDLE_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("base_delay_s", "max_delay_s", "idle_timeout_s"):
            value = getattr(self, name)
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.idle_timeout_s == 0:
            raise ValueError("idle_timeout_s must be > 0")

    def as_tuple(self) -> tuple[int, float, float, float]:
        return (self.max_attempts, self.base_delay_s, self.max_delay_s, self.idle_timeout_s)
