"""The catalog as it is now: the Lance dataset is opened once per ``DataInterface`` and,
before each query, moved to the latest version only when a newer one exists (one small
listing of the dataset's versions; the open dataset and its caches are reused otherwise)."""

from __future__ import annotations

from typing import Any

from ursa.catalog import lance_reason
from ursa.errors import ConfigurationError
from ursa.profiles import Profile
from ursa.stores import lance_options


class LiveCatalog:
    """A profile's catalog, kept at its latest version."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._dataset: Any = None

    def latest(self) -> Any:
        """The dataset at its latest version (opened on first use)."""
        try:
            if self._dataset is None:
                self._dataset = self._open()
            else:
                latest = self._dataset.latest_version
                if latest != self._dataset.version:
                    self._dataset = self._dataset.checkout_version(latest)
        except (ValueError, OSError) as exc:
            raise ConfigurationError(
                f"profile {self.profile.name!r}: cannot open the catalog at "
                f"{self.profile.catalog}: {lance_reason(exc)}"
            ) from None
        return self._dataset

    def _open(self) -> Any:
        import lance

        uri = self.profile.catalog
        if uri is None:
            raise ConfigurationError(f"profile {self.profile.name!r} names no catalog")
        return lance.dataset(uri, storage_options=lance_options(self.profile, uri))
