"""The time axis (SPEC §9): seconds since the recording's ``started_at``. ``start`` and
``stop`` are floats in those seconds or timezone-aware datetimes; clips are half-open,
so a sample, row or frame is in ``[start, stop)`` iff its own time is."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

TimeLike = float | int | dt.datetime


@dataclass(frozen=True)
class Span:
    """A half-open interval of seconds; ``None`` leaves that side open."""

    start: float | None = None
    stop: float | None = None

    def contains(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.stop is None or t < self.stop)

    def overlaps(self, lo: float, hi: float) -> bool:
        """Whether any time in the closed interval ``[lo, hi]`` is in the span."""
        return (self.start is None or hi >= self.start) and (self.stop is None or lo < self.stop)


def check_time(value: TimeLike | None, name: str) -> None:
    """Reject a bad ``start``/``stop`` before anything is read."""
    if value is None:
        return
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be seconds (a float) or a datetime, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_order(start: TimeLike | None, stop: TimeLike | None) -> None:
    """``start >= stop`` is a ValueError when both are of one kind (mixed kinds are
    checked per recording, once ``started_at`` is known)."""
    check_time(start, "start")
    check_time(stop, "stop")
    if start is None or stop is None:
        return
    if isinstance(start, dt.datetime) != isinstance(stop, dt.datetime):
        return
    if start >= stop:  # type: ignore[operator]
        raise ValueError(f"start ({start}) must be before stop ({stop})")


def to_seconds(value: TimeLike | None, started_at: dt.datetime | None, name: str) -> float | None:
    """``value`` in seconds since ``started_at``."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if started_at is None:
            raise ValueError(f"{name} is a datetime but the recording has no started_at")
        return (value - started_at).total_seconds()
    return float(value)


def resolve(start: TimeLike | None, stop: TimeLike | None, started_at: dt.datetime | None) -> Span:
    """The clip as seconds on one recording's axis."""
    span = Span(to_seconds(start, started_at, "start"), to_seconds(stop, started_at, "stop"))
    if span.start is not None and span.stop is not None and span.start >= span.stop:
        raise ValueError(f"start ({start}) must be before stop ({stop})")
    return span


def first_sample_at_or_after(t: float | None, rate_hz: float, count: int) -> int:
    """The first index ``i`` in ``[0, count]`` whose time ``i / rate_hz`` is ``>= t``
    (computed as the coordinates are, so the rule holds to the last bit)."""
    if t is None:
        return 0
    i = min(max(math.ceil(t * rate_hz), 0), count)
    while i > 0 and (i - 1) / rate_hz >= t:
        i -= 1
    while i < count and i / rate_hz < t:
        i += 1
    return i


def sample_range(span: Span, rate_hz: float, count: int) -> tuple[int, int]:
    """``[i0, i1)``: the samples of a ``count``-sample signal whose times are in ``span``."""
    i0 = first_sample_at_or_after(span.start, rate_hz, count)
    i1 = count if span.stop is None else first_sample_at_or_after(span.stop, rate_hz, count)
    return i0, max(i0, i1)
