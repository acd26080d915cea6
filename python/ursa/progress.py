"""Ready-made ``progress=`` callbacks: a rich live display (also used by the CLI), tqdm
(terminal and Jupyter), and the seed page's Streamlit pattern.

Each is a callable taking ``DownloadProgress`` that also carries

- ``progress_interval`` (seconds): ``download()`` uses it when its own
  ``progress_interval`` is not given, so the bar moves inside one large file too;
- ``on_error(exc)``: ``download()`` calls it when the download fails or is cancelled, so
  the bar is closed (marked failed) rather than left half-drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column

from ursa.events import DownloadProgress

REFRESH_S = 0.1  # the adapters' refresh interval: smooth to the eye, cheap to draw


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
            f"Done — {_count(self.files, 'file')}, {human_bytes(self.bytes)} in "
            f"{self.elapsed_s:.1f}s ({rate:,.1f} MB/s), {_count(self.retries, 'retry')}"
        )


def human_bytes(n: int) -> str:
    """``512 bytes``, ``1.5 kB``, ``145.0 MB``, ``2.1 GB`` (decimal units, as rich's bar)."""
    if n < 1000:
        return f"{n} byte{'s' * (n != 1)}"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if n < scale * 1000 or unit == "GB":
            return f"{n / scale:,.1f} {unit}"
    raise AssertionError("unreachable")


def _count(n: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n:,} {noun if n == 1 else plural}"


class RichProgress:
    """A live terminal display: one overall bar (bytes, rate, ETA) labelled with the
    current modality/worker, a line per finished modality, and a summary at the end.
    Use as a context manager so the terminal is restored on errors and Ctrl+C. Narrow
    terminals (under 80 columns) get a compact bar that still fits on one line."""

    progress_interval = REFRESH_S

    def __init__(self, console: Console | None = None, *, transient: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            *_columns(self.console.width),
            console=self.console,
            transient=transient,
        )
        self._narrow = self.console.width < 80
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

    def on_error(self, exc: BaseException) -> None:
        """The download failed: drop the half-drawn bar (the error line says it all)."""
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def __call__(self, e: DownloadProgress) -> None:
        if e.phase == "start":
            label = "Planning…" if self._narrow else "Preparing… (planning object list)"
            self._task = self._progress.add_task(label, total=None)
            return
        if self._task is None:
            return
        self._progress.update(self._task, completed=e.bytes_done, total=e.bytes_total)
        if e.phase == "modality_start":
            self._row_files = 0
            label = _where(e) if self._narrow else f"Downloading {_where(e)}"
            self._progress.update(self._task, description=label)
        elif e.phase == "file_done":
            self._row_files += 1
            self.summary.files += 1
        elif e.phase == "modality_done":
            self.summary.modalities.append((_where(e), self._row_files))
            self._progress.console.print(
                f"  [green]✓[/] {_where(e)}: {_count(self._row_files, 'file')}"
            )
        elif e.phase == "finish":
            self.summary.bytes, self.summary.elapsed_s = e.bytes_done, e.elapsed_s
            self.summary.retries = e.retries
            self._progress.update(self._task, description="Done")


def _columns(width: int) -> list[ProgressColumn]:
    """Description, bar, bytes, rate and ETA; under 80 columns the description is cut to
    fit and the rate dropped, so the line never wraps."""
    if width >= 80:
        return [
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        ]
    label = Column(max_width=max(8, width - 44), no_wrap=True, overflow="ellipsis")
    return [
        TextColumn("[bold]{task.description}", table_column=label),
        BarColumn(bar_width=max(4, min(20, width - 52))),
        DownloadColumn(),
        TimeRemainingColumn(compact=True),
    ]


class TqdmProgress:
    """A tqdm bar in bytes, labelled with the current modality/worker. ``bar_class`` is the
    tqdm class to draw with (``tqdm.auto.tqdm`` by default: a widget in Jupyter, text in
    terminals). The bar is created at ``plan_done`` (when the total is known), closed at
    ``finish``, and closed as failed by ``on_error``."""

    progress_interval = REFRESH_S

    def __init__(self, bar_class: Any = None, **tqdm_kwargs: Any) -> None:
        if bar_class is None:
            from tqdm.auto import tqdm

            bar_class = tqdm
        self.bar_class = bar_class
        self.tqdm_kwargs = tqdm_kwargs
        self.bar: Any = None

    def __call__(self, e: DownloadProgress) -> None:
        if e.phase == "plan_done":
            options = {"unit": "B", "unit_scale": True, "desc": "ursa"} | self.tqdm_kwargs
            self.bar = self.bar_class(total=e.bytes_total, **options)
        bar = self.bar
        if bar is None:
            return
        if e.phase == "modality_start":
            bar.set_description(_where(e))
        bar.update(e.bytes_done - bar.n)
        if e.phase == "finish":
            bar.close()
            self.bar = None

    def on_error(self, exc: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()  # a notebook bar turns red when closed short of its total
            self.bar = None


def tqdm_progress(**tqdm_kwargs: Any) -> TqdmProgress:
    """A tqdm bar in bytes (``tqdm.auto``: a widget in notebooks, text in terminals);
    keyword arguments go to ``tqdm``."""
    return TqdmProgress(**tqdm_kwargs)


def notebook_progress(**tqdm_kwargs: Any) -> TqdmProgress:
    """A live bar for Jupyter (tqdm's notebook widget; needs ``ipywidgets``): bytes, rate,
    ETA and the current modality/worker, updated every 0.1 s, green when done, red when the
    download fails. Keyword arguments go to ``tqdm``."""
    from tqdm.notebook import tqdm as notebook_tqdm

    return TqdmProgress(notebook_tqdm, **tqdm_kwargs)


class StreamlitProgress:
    """The seed page's pattern: ``status = st.status(...)``, ``bar = st.progress(0.0)``."""

    progress_interval = REFRESH_S

    def __init__(self, status: Any, bar: Any) -> None:
        self.status = status
        self.bar = bar

    def __call__(self, e: DownloadProgress) -> None:
        if e.phase == "start":
            self.status.update(label="Preparing… (planning object list)")
        elif e.phase == "modality_start":
            self.status.update(label=f"Downloading {e.modality} / {e.worker_id or 'default'}")
        if e.bytes_total:
            self.bar.progress(e.bytes_done / e.bytes_total)
        if e.phase == "finish":
            self.status.update(
                label=f"Done — {e.bytes_done:,} bytes in {e.elapsed_s:.1f}s", state="complete"
            )

    def on_error(self, exc: BaseException) -> None:
        self.status.update(label="Download failed", state="error")


def streamlit_progress(status: Any, bar: Any) -> StreamlitProgress:
    """The seed page's pattern: ``status = st.status(...)``, ``bar = st.progress(0.0)``."""
    return StreamlitProgress(status, bar)
