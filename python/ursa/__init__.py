"""ursa: pull recordings from Cloudflare R2 (or any S3-compatible store) to local disk,
fast and safely, with live progress."""

from ursa.catalog import ModalityRow, QueryResult
from ursa.errors import (
    AccessDeniedError,
    ConfigurationError,
    IntegrityError,
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreTransientError,
    UrsaError,
)
from ursa.events import DownloadProgress
from ursa.interface import DataInterface
from ursa.plan import DownloadPlan, PlannedFile
from ursa.profiles import Profile
from ursa.retry import RetryPolicy

__all__ = [
    "AccessDeniedError",
    "ConfigurationError",
    "DataInterface",
    "DownloadPlan",
    "DownloadProgress",
    "IntegrityError",
    "ModalityRow",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "ObjectStoreError",
    "ObjectStoreTransientError",
    "PlannedFile",
    "Profile",
    "QueryResult",
    "RetryPolicy",
    "UrsaError",
]
__version__ = "0.1.0"
