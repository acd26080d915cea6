"""The delivery verbs ``materialize()`` and ``stream()``: processed assets read in place
in the store (only the bytes a clip needs, through the engine's ranged reads) and decoded
into in-memory data. Needs the ``ursa[data]`` extra (numpy, xarray, zarr, PyAV)."""

from __future__ import annotations

from ursa.delivery.extra import require_data_extra

__all__ = ["require_data_extra"]
