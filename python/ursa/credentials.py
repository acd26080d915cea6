"""Credentials: the S3 key pair a profile uses for one role (SPEC §4).

A role's pair comes from the first of these sources that sets one:

1. the profile's per-role table (``[profiles.<name>.credentials.<role>]``);
2. the profile's own ``access_key_id`` / ``secret_access_key``;
3. ``URSA_<PROFILE>_<ROLE>_ACCESS_KEY_ID`` / ``URSA_<PROFILE>_<ROLE>_SECRET_ACCESS_KEY``;
4. ``URSA_<PROFILE>_ACCESS_KEY_ID`` / ``URSA_<PROFILE>_SECRET_ACCESS_KEY``, for every role.

``<PROFILE>`` is the profile name upper-cased with ``-`` turned into ``_``; ``<ROLE>`` is
``RAW``, ``ASSETS`` or ``CATALOG``. A value ``op://vault/item/field`` is read with the 1Password
CLI (``op read``) once per process and reference.

Choices the spec leaves open:

- Empty strings count as unset.
- A source that sets only one of the id and the secret is an error naming the missing half,
  rather than being skipped or mixed with another source (a mixed pair would only fail later,
  as an opaque 403 from the store).
- ``op`` is found on ``PATH`` and keeps the caller's stdin, so that it can prompt to unlock; one
  trailing newline is stripped from its output; only successful reads are cached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ursa.errors import ConfigurationError

__all__ = ["ROLES", "Credentials", "resolve_credentials"]

ROLES = ("raw", "assets", "catalog")
KEY_FIELDS = ("access_key_id", "secret_access_key")

_OP_PREFIX = "op://"
_op_cache: dict[str, str] = {}
# Held across `op read`, so that two threads never read the same reference twice.
_op_lock = threading.Lock()


@dataclass(frozen=True)
class Credentials:
    """An S3 key pair for one role. The secret never shows in ``repr``."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


class KeySources(Protocol):
    """What credentials are resolved from: a ``Profile``'s name and key fields (this module
    needs nothing else of it, so profiles depend on credentials and not the reverse)."""

    @property
    def name(self) -> str: ...
    @property
    def access_key_id(self) -> str | None: ...
    @property
    def secret_access_key(self) -> str | None: ...
    @property
    def credentials(self) -> Mapping[str, Mapping[str, str]]: ...


def resolve_credentials(profile: KeySources, role: str) -> Credentials:
    """The key pair ``profile`` uses for ``role``, resolved in the order above."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    name = profile.name
    profile_env = f"URSA_{name.upper().replace('-', '_')}_"
    role_env = f"{profile_env}{role.upper()}_"
    table = profile.credentials.get(role, {})
    sources = [
        (f"[profiles.{name}.credentials.{role}]", *(table.get(key) for key in KEY_FIELDS)),
        (f"[profiles.{name}]", profile.access_key_id, profile.secret_access_key),
        (f"${role_env}ACCESS_KEY_ID / ${role_env}SECRET_ACCESS_KEY", *_env_pair(role_env)),
        (f"${profile_env}ACCESS_KEY_ID / ${profile_env}SECRET_ACCESS_KEY", *_env_pair(profile_env)),
    ]
    where = f"profile {name!r}, role {role!r}"
    for source, key_id, secret in sources:
        if not key_id and not secret:
            continue
        if not key_id or not secret:
            half = "secret access key" if key_id else "access key id"
            raise ConfigurationError(
                f"{where}: {source} sets only half a key pair; set its {half} too"
            )
        return Credentials(_resolve(key_id, where), _resolve(secret, where))
    # Imported here, not at the top, because ursa.profiles imports this module.
    from ursa.profiles import _config_path

    raise ConfigurationError(
        f"no credentials for {where}. Set {role_env}ACCESS_KEY_ID and {role_env}SECRET_ACCESS_KEY "
        f"(this role), or {profile_env}ACCESS_KEY_ID and {profile_env}SECRET_ACCESS_KEY (every "
        f"role), or access_key_id and secret_access_key under [profiles.{name}.credentials.{role}] "
        f"or [profiles.{name}] in {_config_path()}. Values may be 1Password references "
        "(op://vault/item/field)."
    )


def _env_pair(prefix: str) -> tuple[str | None, str | None]:
    return os.environ.get(prefix + "ACCESS_KEY_ID"), os.environ.get(prefix + "SECRET_ACCESS_KEY")


def _resolve(value: str, where: str) -> str:
    if not value.startswith(_OP_PREFIX):
        return value
    with _op_lock:
        if value not in _op_cache:
            _op_cache[value] = _op_read(value, where)
        return _op_cache[value]


def _op_read(ref: str, where: str) -> str:
    # Only the reference goes on the command line; the secret comes back on stdout.
    op = shutil.which("op")
    if op is None:
        raise ConfigurationError(
            f"{where}: {ref} is a 1Password reference, but the 1Password CLI `op` is not on PATH. "
            "Install it and sign in (`op signin`), or set the value directly."
        )
    try:
        done = subprocess.run([op, "read", ref], capture_output=True, text=True, check=False)
    except OSError as e:
        raise ConfigurationError(f"{where}: could not run `op read {ref}`: {e.strerror}") from None
    value = done.stdout.removesuffix("\n")
    if done.returncode != 0 or not value:
        # op's stderr says why (not signed in, no such item) and never holds the secret.
        lines = done.stderr.strip().splitlines()
        detail = f": {lines[-1][:200]}" if lines else ""
        outcome = f"failed (exit {done.returncode})" if done.returncode else "printed nothing"
        raise ConfigurationError(
            f"{where}: `op read {ref}` {outcome}{detail}. Check that you "
            "are signed in (`op signin`) and that the reference names an existing field."
        )
    return value


def _clear_op_cache() -> None:
    """Forget resolved 1Password references (for tests)."""
    with _op_lock:
        _op_cache.clear()
