"""Put a workload's objects into the store the ways users' objects were uploaded.

ursa.testing builds the content and the catalog rows; this module then uploads every
object under the recording's prefix again with boto3, so that what the store keeps (ETag,
stored checksum) is what a real uploader leaves:

- ``put``: a single PUT without a checksum (older SDKs, many tools): an MD5 ETag only.
- ``put-crc32``: a single PUT with a CRC32 (current SDKs' default).
- ``mpu``: multipart above 8 MiB (boto3's and the AWS CLI's threshold and part size), no
  checksum: a ``…-N`` ETag, which is no MD5 of the bytes; smaller objects a plain PUT.
- ``mpu-crc32`` / ``mpu-crc32c`` / ``mpu-crc64nvme``: multipart with a FULL_OBJECT
  checksum (R2 keeps CRC64NVME for multipart uploads); smaller objects a PUT with it.
- ``engine``: leave ursa.testing's upload alone (the engine's, with a stored CRC32).

Every upload is checked afterwards against the store's HEAD (ETag shape, checksum kept),
so a mode that the store silently ignored cannot pass for another.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MiB = 1 << 20
PART = 8 * MiB  # boto3's multipart_threshold and multipart_chunksize defaults
MODES = ("engine", "put", "put-crc32", "mpu", "mpu-crc32", "mpu-crc32c", "mpu-crc64nvme")


def _crc(algorithm: str) -> tuple[Callable[[bytes, int], int], int]:
    """A running full-object CRC (data, previous) -> value, and its width in bytes."""
    from awscrt import checksums

    if algorithm == "CRC32":
        return (lambda data, prev: zlib.crc32(data, prev)), 4
    if algorithm == "CRC32C":
        return (lambda data, prev: checksums.crc32c(data, prev)), 4
    if algorithm == "CRC64NVME":
        return (lambda data, prev: checksums.crc64nvme(data, prev)), 8
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def client(endpoint: str, key: str, secret: str, pool: int = 32) -> Any:
    """A boto3 client that adds no checksum unless asked (boto3 ≥ 1.36 adds a CRC32 to
    every PUT by default, which would hide the no-checksum cases)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            max_pool_connections=pool, s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )  # fmt: skip


def _algorithm(mode: str) -> str | None:
    return mode.split("-", 1)[1].upper() if "-" in mode else None


def upload(s3: Any, bucket: str, key: str, body: bytes, mode: str) -> None:
    """Upload one object's bytes the way `mode` says (see the module docstring)."""
    algorithm = _algorithm(mode)
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    if mode.startswith("put") or len(body) <= PART:
        s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        return
    kind = {"ChecksumType": "FULL_OBJECT"} if algorithm else {}
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra, **kind)["UploadId"]
    view, parts, running = memoryview(body), [], 0
    crc, width = _crc(algorithm) if algorithm else (None, 0)
    for n, start in enumerate(range(0, len(body), PART), start=1):
        chunk = bytes(view[start : start + PART])
        part = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=chunk, **extra
        )
        entry = {"PartNumber": n, "ETag": part["ETag"]}
        if algorithm and crc:
            entry[f"Checksum{algorithm}"] = part[f"Checksum{algorithm}"]
            running = crc(chunk, running)
        parts.append(entry)
    full = {}
    if algorithm:
        full = {f"Checksum{algorithm}": base64.b64encode(running.to_bytes(width, "big")).decode()}
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
        **kind, **full,
    )  # fmt: skip


def check(s3: Any, bucket: str, key: str, size: int, mode: str) -> None:
    """The store kept what `mode` promises: the ETag's shape and the stored checksum."""
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    multipart = mode.startswith("mpu") and size > PART
    etag = head["ETag"].strip('"')
    assert ("-" in etag) == multipart, f"{mode}: {key} has ETag {etag}"
    algorithm = _algorithm(mode)
    kept = [f for f in ("CRC32", "CRC32C", "CRC64NVME") if head.get(f"Checksum{f}")]
    assert kept == ([algorithm] if algorithm else []), f"{mode}: {key} keeps {kept}"


def reupload(s3: Any, bucket: str, prefix: str, mode: str, threads: int = 16) -> list[str]:
    """Upload every object under `prefix` again as `mode`; returns their keys."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    if mode == "engine":
        return keys

    def one(key: str) -> None:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        upload(s3, bucket, key, body, mode)
        check(s3, bucket, key, len(body), mode)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, keys))
    return keys
