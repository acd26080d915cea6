"""The ``ursa[data]`` extra: the verbs check for it before doing anything else."""

from __future__ import annotations

import importlib

_MODULES = ("numpy", "xarray", "zarr", "av")


def require_data_extra() -> None:
    """Raise ``ImportError`` naming what to install when a module of ``ursa[data]`` is
    missing (``download()`` never needs them)."""
    for name in _MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(
                f"materialize() and stream() need {name!r}: pip install 'ursa[data]'"
            ) from exc
