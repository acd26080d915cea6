"""Where a catalog URI points and how to reach it: the engine's store specs and Lance's
storage options, built from a profile and the credentials of the bucket's role.

An ``s3://bucket/key`` URI is reached through the profile's endpoint with the credentials
of the role whose bucket it names; a ``file:///abs/path`` URI is the local filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ursa import _core
from ursa.credentials import Credentials, resolve_credentials
from ursa.profiles import Profile


@dataclass(frozen=True)
class Location:
    """A store and a key (or key prefix) within it. ``store`` is the engine's opaque
    handle: equal for every location on one store, and nothing reads credentials back out
    of it (no attribute, repr or pickle)."""

    uri: str
    key: str
    store: _core.Store = field(repr=False)


def is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


def locate(profile: Profile, uri: str) -> Location:
    """Resolve ``uri`` to a store and key. Credentials are resolved here, the first
    time a role is used, so catalog-only or local work needs none."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"file:// URIs must be absolute: {uri!r}")
        return Location(uri, path.lstrip("/"), _core.Store({"kind": "local"}))
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(
            f"unsupported storage URI {uri!r}: expected s3://bucket/key or file:///path"
        )
    bucket = parts.netloc
    role = profile.bucket_role(bucket)
    if role is None:
        raise ValueError(
            f"bucket {bucket!r} of {uri!r} is not one of profile {profile.name!r}'s buckets"
        )
    creds = resolve_credentials(profile, role)
    endpoint = profile.require_endpoint()
    spec = {  # holds the secret only until the engine has it
        "kind": "s3",
        "bucket": bucket,
        "endpoint": endpoint,
        "region": profile.region,
        "allow_http": profile.allow_http,
        "access_key_id": creds.access_key_id,
        "secret_access_key": creds.secret_access_key,
        "label": f"profile {profile.name!r} (role {role!r}, s3://{bucket} at {endpoint})",
    }
    return Location(uri, parts.path.lstrip("/"), _core.Store(spec))


def bucket_uri(bucket: str, key: str = "") -> str:
    """The URI of ``key`` in a profile bucket field (a bucket name or a ``file://`` root)."""
    if bucket.startswith("file://"):
        return bucket.rstrip("/") + "/" + key
    return f"s3://{bucket}/{key}"


def lance_options(profile: Profile, uri: str, role: str = "catalog") -> dict[str, str] | None:
    """Lance's ``storage_options`` for a dataset at ``uri`` (None for a local path)."""
    if not is_remote(uri):
        return None
    creds: Credentials = resolve_credentials(profile, role)
    return {
        "aws_access_key_id": creds.access_key_id,
        "aws_secret_access_key": creds.secret_access_key,
        "aws_endpoint": profile.require_endpoint(),
        "aws_region": profile.region,
        "allow_http": "true" if profile.allow_http else "false",
        "aws_virtual_hosted_style_request": "false",
    }
