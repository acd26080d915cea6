"""Recording-hash prefixes, as the CLI accepts them: a full 64-hex hash or a unique prefix
of at least 8 hex characters, resolved against the catalog with one pushed-down filter."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ursa.catalog import QueryResult

MIN_PREFIX = 8
_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},64}}")


class PrefixError(ValueError):
    """A prefix that matches no recording, or more than one."""


def check_prefix(value: str) -> str:
    if not _PREFIX.fullmatch(value):
        raise ValueError(
            f"recording hash {value!r} must be {MIN_PREFIX} to 64 lowercase hex characters "
            "(a full hash or a unique prefix)"
        )
    return value


def prefix_filter(prefixes: Sequence[str]) -> str:
    """The Lance SQL filter for rows whose hash starts with any of ``prefixes`` (checked,
    so safe to quote as they are)."""
    return " OR ".join(
        f"starts_with(recording_hash, '{check_prefix(p)}')" for p in dict.fromkeys(prefixes)
    )


def resolve(prefixes: Sequence[str], matches: QueryResult, profile_name: str) -> list[str]:
    """Each prefix's one recording hash, in order; ``matches`` are the catalog rows (any
    status) whose hash starts with one of the prefixes."""
    known = matches.recording_hashes
    resolved: list[str] = []
    for prefix in prefixes:
        found = [h for h in known if h.startswith(prefix)]
        if not found:
            raise PrefixError(
                f"no recording in profile {profile_name!r} has a hash starting with {prefix}"
            )
        if len(found) > 1:
            shown = ", ".join(h[:16] for h in found[:5]) + (", …" if len(found) > 5 else "")
            raise PrefixError(
                f"{prefix} is ambiguous: {len(found)} recordings start with it ({shown}); "
                "give more characters"
            )
        resolved.append(found[0])
    return resolved
