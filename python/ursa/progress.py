"""Ready-made ``progress=`` callbacks: a rich live display (also used by the CLI), tqdm
(terminal and notebook), and the seed page's Streamlit pattern.

Each is a plain callable taking ``DownloadProgress``; pass ``progress_interval=`` to
``download()`` so the bar moves during a single large file too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ursa.events import DownloadProgress


def _where(e: DownloadProgress) -> str:
    return f"{e.modality} / {e.worker_id or 'default'}"


@dataclass
class Summary:
    """What a finished download did, for the final line."""

    files: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    retries: int = 0
    modalities: list[tuple[str, int]] = field(default_factory=list)

    def line(self) -> str:
        rate = self.bytes / self.elapsed_s / 1e6 if self.elapsed_s > 0 else 0.0
        return (
            f"Done — {self.files:,} files, {self.bytes:,} bytes in {self.elapsed_s:.1f}s "
            f"({rate:,.1f} MB/s), {self.retries} retries"
        )


class RichProgress:
    """A live terminal display: one overall bar (bytes, rate, ETA) labelled with the
    current modality/worker, a line per finished modality, and a summary at the end.
    Use as a context manager so the terminal is restored on errors and Ctrl+C."""

    def __init__(self, console: Console | None = None, *, transient: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=transient,
        )
        self._task: TaskID | None = None
        self._row_files = 0
        self.summary = Summary()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if e is not None and self._task is not None:
            # On an error or Ctrl+C leave no half-drawn bar: the error line says it all.
            self._progress.remove_task(self._task)
        self._progress.stop()

    def __call__(self, e: DownloadProgress) -> None:
        if e.phase == "start":
            self._task = self._progress.add_task("Preparing… (planning object list)", total=None)
            return
        if self._task is None:
            return
        self._progress.update(self._task, completed=e.bytes_done, total=e.bytes_total)
        if e.phase == "modality_start":
            self._row_files = 0
            self._progress.update(self._task, description=f"Downloading {_where(e)}")
        elif e.phase == "file_done":
            self._row_files += 1
            self.summary.files += 1
        elif e.phase == "modality_done":
            self.summary.modalities.append((_where(e), self._row_files))
            self._progress.console.print(f"  [green]✓[/] {_where(e)}: {self._row_files:,} files")
        elif e.phase == "finish":
            self.summary.bytes, self.summary.elapsed_s = e.bytes_done, e.elapsed_s
            self.summary.retries = e.retries
            self._progress.update(self._task, description="Done")


def tqdm_progress(**tqdm_kwargs: Any) -> Callable[[DownloadProgress], None]:
    """A tqdm bar in bytes (``tqdm.auto``: a widget in notebooks, text in terminals)."""
    from tqdm.auto import tqdm

    bar: Any = None

    def on_progress(e: DownloadProgress) -> None:
        nonlocal bar
        if e.phase == "plan_done":
            options = {"unit": "B", "unit_scale": True, "desc": "ursa"} | tqdm_kwargs
            bar = tqdm(total=e.bytes_total, **options)
        if bar is None:
            return
        if e.phase == "modality_start":
            bar.set_description(_where(e))
        bar.update(e.bytes_done - bar.n)
        if e.phase == "finish":
            bar.close()

    return on_progress


def streamlit_progress(status: Any, bar: Any) -> Callable[[DownloadProgress], None]:
    """The seed page's pattern: ``status = st.status(...)``, ``bar = st.progress(0.0)``."""

    def on_progress(e: DownloadProgress) -> None:
        if e.phase == "start":
            status.update(label="Preparing… (planning object list)")
        elif e.phase == "modality_start":
            status.update(label=f"Downloading {e.modality} / {e.worker_id or 'default'}")
        if e.bytes_total:
            bar.progress(e.bytes_done / e.bytes_total)
        if e.phase == "finish":
            status.update(
                label=f"Done — {e.bytes_done:,} bytes in {e.elapsed_s:.1f}s", state="complete"
            )

    return on_progress
