"""ursa: pull recordings from Cloudflare R2 (or any S3-compatible store) to local disk,
fast and safely, with live progress."""

from ursa.catalog import ModalityRow, QueryResult
from ursa.errors import (
    ConfigurationError,
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
    "ConfigurationError",
    "DataInterface",
    "DownloadPlan",
    "DownloadProgress",
    "ModalityRow",
    "ObjectStoreError",
    "ObjectStoreTransientError",
    "PlannedFile",
    "Profile",
    "QueryResult",
    "RetryPolicy",
    "UrsaError",
]
__version__ = "0.1.0"
