"""ursa: pull recordings from Cloudflare R2 (or any S3-compatible store) to local disk,
fast and safely, with live progress."""

from ursa.catalog import ModalityRow, QueryResult, StatusFilter
from ursa.download import Verify
from ursa.errors import (
    AccessDeniedError,
    ConfigurationError,
    DownloadCancelled,
    IntegrityError,
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreTransientError,
    UrsaError,
)
from ursa.events import DownloadProgress
from ursa.interface import DataInterface
from ursa.layouts import Layout
from ursa.plan import DownloadPlan, PlannedFile
from ursa.profiles import Profile
from ursa.retry import RetryPolicy
from ursa.sources import Source

__all__ = [
    "AccessDeniedError",
    "ConfigurationError",
    "DataInterface",
    "DownloadCancelled",
    "DownloadPlan",
    "DownloadProgress",
    "IntegrityError",
    "Layout",
    "ModalityRow",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "ObjectStoreError",
    "ObjectStoreTransientError",
    "PlannedFile",
    "Profile",
    "QueryResult",
    "RetryPolicy",
    "Source",
    "StatusFilter",
    "UrsaError",
    "Verify",
]
__version__ = "0.1.0"
