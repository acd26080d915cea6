"""Profiles: where the catalog and the two stores are and how to reach them (SPEC §4).

Built-in profiles; a ``[profiles.<name>]`` entry in the config file (``$URSA_CONFIG``, else
``~/.config/ursa/config.toml``) overrides them field by field or adds a new profile:

- ``r2``: Cloudflare R2 at ``https://<account_id>.r2.cloudflarestorage.com``, account id from
  ``$URSA_R2_ACCOUNT_ID`` (the config's ``account_id`` or ``endpoint`` wins over it); catalog
  ``s3://ursa-catalog/catalog.lance``, raw bucket ``ursa-raw``, assets bucket ``ursa-assets``.
- ``r2-test``: the same with ``-test`` on every bucket: ``s3://ursa-catalog-test/catalog.lance``,
  ``ursa-raw-test``, ``ursa-assets-test``.
- ``local``: everything under ``root`` (``$URSA_LOCAL_ROOT``, else ``~/.local/share/ursa``):
  catalog ``<root>/catalog.lance``, raw store ``file://<root>/raw/``, no assets store.

Choices the spec leaves open:

- Any profile with a ``root`` derives ``catalog`` and ``raw_bucket`` from it unless they are set;
  ``root`` is made absolute with ``~`` expanded, and the raw URI is not percent-encoded. Any
  profile with an ``account_id`` and no ``endpoint`` gets the R2 endpoint.
- ``Profile.with_overrides`` replaces exactly the given fields; derived fields are not recomputed.
- The whole config file is checked, not only the requested entry, so a typo anywhere is reported
  at once; unknown top-level keys are errors too. Profile names are ``[A-Za-z0-9_-]+`` so that
  they map onto environment variable names.
- ``bucket_role``: when one bucket serves several roles, the first in ``ROLES`` order wins.

Credentials (``Credentials``, ``resolve_credentials``) live in ``ursa.credentials`` and are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ursa.credentials import KEY_FIELDS, ROLES, Credentials, resolve_credentials
from ursa.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser from PyPI; needs the dependency `tomli; python_version < "3.11"`
    import tomli as tomllib

__all__ = ["ROLES", "Credentials", "Profile", "load_profile", "resolve_credentials"]

_STR_FIELDS = frozenset(
    {"endpoint", "region", "catalog", "raw_bucket", "assets_bucket", "root", "account_id"}
    | set(KEY_FIELDS)
)
_R2_PROFILES = ("r2", "r2-test")
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")


def _empty_credentials() -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Profile:
    """Where the catalog and the stores of one profile are, and how to reach them.

    Fields as in SPEC §4. ``load_profile`` derives ``catalog`` and ``raw_bucket`` from ``root``
    and ``endpoint`` from ``account_id`` when they are unset. Key material is kept out of ``repr``.
    """

    name: str
    endpoint: str | None = None
    region: str = "auto"
    allow_http: bool = False
    catalog: str | None = None
    raw_bucket: str | None = None
    assets_bucket: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    # Per-role key pairs. hash=False: mappings are unhashable, and the other fields suffice.
    credentials: Mapping[str, Mapping[str, str]] = field(
        default_factory=_empty_credentials, repr=False, hash=False
    )
    root: str | None = None
    account_id: str | None = None

    def __post_init__(self) -> None:
        where = f"profile {self.name!r}"
        if not _NAME_RE.fullmatch(self.name):
            raise ConfigurationError(f"{where}: names may only use letters, digits, '-' and '_'")
        problem = _credentials_problem(self.credentials)
        if problem:
            raise ConfigurationError(f"{where}: {problem}")
        # Copy into read-only mappings so that a caller's dict cannot change a frozen profile.
        frozen = {role: MappingProxyType(dict(pair)) for role, pair in self.credentials.items()}
        object.__setattr__(self, "credentials", MappingProxyType(frozen))
        if self.endpoint is not None:
            scheme, sep, _ = self.endpoint.partition("://")
            if not sep or scheme not in ("http", "https"):
                raise ConfigurationError(f"{where}: endpoint must start with https:// or http://")
            if scheme == "http" and not self.allow_http:
                raise ConfigurationError(
                    f"{where}: endpoint {self.endpoint} is plain http; "
                    "set allow_http = true in the profile to allow it"
                )

    def require_endpoint(self) -> str:
        """The S3 endpoint, or a ConfigurationError that says how to set one."""
        if self.endpoint:
            return self.endpoint
        if self.account_id:
            return _r2_endpoint(self.account_id)
        how = f"`endpoint` or `account_id` under [profiles.{self.name}] in {_config_path()}"
        if self.name in _R2_PROFILES:
            how = f"URSA_R2_ACCOUNT_ID (the Cloudflare account id), or {how}"
        raise ConfigurationError(f"profile {self.name!r} has no S3 endpoint: set {how}")

    def with_overrides(self, **fields: Any) -> Profile:
        """A copy with the given fields replaced (derived fields are not recomputed)."""
        return dataclasses.replace(self, **fields)

    def bucket_role(self, bucket: str) -> str | None:
        """The role ("raw", "assets" or "catalog") whose bucket is named ``bucket``, if any."""
        catalog_bucket = None
        if self.catalog is not None and self.catalog.startswith("s3://"):
            catalog_bucket = self.catalog.removeprefix("s3://").split("/", 1)[0]
        buckets = (self.raw_bucket, self.assets_bucket, catalog_bucket)
        for role, name in zip(ROLES, buckets, strict=True):
            if name is not None and name == bucket:
                return role
        return None


def _r2_endpoint(account_id: str) -> str:
    return f"https://{account_id}.r2.cloudflarestorage.com"


def _credentials_problem(table: object) -> str | None:
    """Why ``table`` is not a per-role credentials table, or None if it is one."""
    if not isinstance(table, Mapping):
        return "credentials must be a table of [credentials.<role>] tables"
    for role, pair in table.items():
        if role not in ROLES:
            return f"unknown credentials role {role!r} (roles: {', '.join(ROLES)})"
        if not isinstance(pair, Mapping):
            return f"credentials.{role} must be a table"
        for key, value in pair.items():
            if key not in KEY_FIELDS:
                return f"credentials.{role}: unknown key {key!r} (allowed: {', '.join(KEY_FIELDS)})"
            if not isinstance(value, str):
                return f"credentials.{role}.{key} must be a string"
    return None


# --- loading ---------------------------------------------------------------------------------


def _config_path() -> Path:
    explicit = os.environ.get("URSA_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return Path.home() / ".config" / "ursa" / "config.toml"


def _builtin(name: str) -> dict[str, Any] | None:
    if name in _R2_PROFILES:
        suffix = "-test" if name == "r2-test" else ""
        return {
            "catalog": f"s3://ursa-catalog{suffix}/catalog.lance",
            "raw_bucket": f"ursa-raw{suffix}",
            "assets_bucket": f"ursa-assets{suffix}",
            "account_id": os.environ.get("URSA_R2_ACCOUNT_ID") or None,
        }
    if name == "local":
        return {"root": os.environ.get("URSA_LOCAL_ROOT") or "~/.local/share/ursa"}
    return None


def _read_config(path: Path) -> dict[str, dict[str, Any]]:
    """The checked ``[profiles.*]`` entries of the config file ({} if the default is absent)."""
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        if os.environ.get("URSA_CONFIG"):
            msg = f"config file {path} (from $URSA_CONFIG) does not exist"
            raise ConfigurationError(msg) from None
        return {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigurationError(f"cannot read config file {path}: {e.strerror}") from None
    unknown = sorted(set(doc) - {"profiles"})
    if unknown:
        raise ConfigurationError(f"config file {path}: unknown top-level keys {unknown}")
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigurationError(f"config file {path}: `profiles` must be a table")
    return {name: _check_entry(path, name, entry) for name, entry in profiles.items()}


def _check_entry(path: Path, name: str, entry: object) -> dict[str, Any]:
    # Messages name keys and expected types, never values: a value may be a secret.
    where = f"config file {path}, [profiles.{name}]"
    if not _NAME_RE.fullmatch(name):
        raise ConfigurationError(f"{where}: names may only use letters, digits, '-' and '_'")
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where} must be a table")
    for key, value in entry.items():
        if key in _STR_FIELDS:
            if not isinstance(value, str):
                raise ConfigurationError(f"{where}: {key} must be a string")
        elif key == "allow_http":
            if not isinstance(value, bool):
                raise ConfigurationError(f"{where}: allow_http must be true or false")
        elif key == "credentials":
            problem = _credentials_problem(value)
            if problem:
                raise ConfigurationError(f"{where}: {problem}")
        else:
            allowed = ", ".join(sorted(_STR_FIELDS | {"allow_http", "credentials"}))
            raise ConfigurationError(f"{where}: unknown key {key!r} (allowed: {allowed})")
    return entry


def _normalise(profile: Profile) -> Profile:
    changes: dict[str, Any] = {}
    if profile.root is not None:
        root = os.path.abspath(os.path.expanduser(profile.root))
        changes["root"] = root
        if profile.catalog is None:
            changes["catalog"] = os.path.join(root, "catalog.lance")
        if profile.raw_bucket is None:
            changes["raw_bucket"] = f"file://{os.path.join(root, 'raw')}/"
    if profile.endpoint is None and profile.account_id:
        changes["endpoint"] = _r2_endpoint(profile.account_id)
    return dataclasses.replace(profile, **changes) if changes else profile


def load_profile(profile: str | Profile) -> Profile:
    """The named profile (built-in merged with the config file), or ``profile`` normalised."""
    if isinstance(profile, Profile):
        return _normalise(profile)
    path = _config_path()
    entries = _read_config(path)
    base, entry = _builtin(profile), entries.get(profile)
    if base is None and entry is None:
        known = ", ".join(sorted({"local", *_R2_PROFILES, *entries}))
        raise ConfigurationError(
            f"unknown profile {profile!r}: not built in and not in config file {path} "
            f"(known profiles: {known})"
        )
    try:
        return _normalise(Profile(name=profile, **{**(base or {}), **(entry or {})}))
    except ConfigurationError as e:
        if entry is None:
            raise
        raise ConfigurationError(f"{e} (config file {path})") from None
