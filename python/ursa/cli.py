"""The ``ursa`` command: ``download``, ``query`` and ``demo``.

Expected errors print one line (``ursa: error: …``) and exit non-zero, never a traceback:
2 bad input, 3 destination collision, 4 configuration or credentials, 5 object store,
1 any other OS error, 130 Ctrl+C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ursa.catalog import QueryResult
from ursa.errors import ConfigurationError, ObjectStoreError
from ursa.events import DownloadProgress
from ursa.interface import DataInterface
from ursa.layouts import LAYOUTS
from ursa.profiles import Profile
from ursa.progress import RichProgress
from ursa.sources import SOURCES

if TYPE_CHECKING:  # ursa.testing needs the [testing] extra; only `ursa demo` imports it
    from ursa.testing import RowSpec

_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (FileExistsError, 3),
    (ConfigurationError, 4),
    (ObjectStoreError, 5),
    (ValueError, 2),
    (OSError, 1),
)


class CliError(Exception):
    """A user-facing failure with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ursa", description="Pull recordings to local disk.")
    sub = parser.add_subparsers(dest="command", required=True)

    dl = sub.add_parser("download", help="download recordings with a live progress display")
    dl.add_argument("recording_hash", nargs="+")
    dl.add_argument("--dest", required=True, type=Path)
    dl.add_argument("--profile", default="r2")
    dl.add_argument("--source", default="auto", choices=SOURCES)
    dl.add_argument("--layout", default="by_recording", choices=LAYOUTS)
    dl.add_argument("--status", default="ingested")
    dl.add_argument("--modality", action="append", help="only these modalities (repeatable)")
    dl.add_argument("--overwrite", action="store_true", help="replace existing files")
    dl.add_argument(
        "--resume",
        action="store_true",
        help="continue an earlier download into --dest: keep identical files, fetch the rest",
    )
    dl.add_argument("--max-concurrency", type=int, default=None)
    mode = dl.add_mutually_exclusive_group()
    mode.add_argument("--quiet", "-q", action="store_true", help="no display, no summary")
    mode.add_argument("--json", action="store_true", help="one JSON object per event")

    q = sub.add_parser("query", help="print catalog rows as a table")
    q.add_argument("recording_hash", nargs="*")
    q.add_argument("--profile", default="r2")
    q.add_argument("--modality", action="append")
    q.add_argument("--worker-id")
    q.add_argument("--status", default="ingested")
    q.add_argument("--where")
    q.add_argument("--json", action="store_true", help="one JSON object per row")

    demo = sub.add_parser("demo", help="build a local demo recording and download it")
    demo.add_argument("--dir", type=Path, help="where to build and download (default: a temp dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    err = Console(stderr=True, highlight=False)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "download": _download,
        "query": _query,
        "demo": _demo,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        err.print("ursa: interrupted; nothing partial was left behind", soft_wrap=True)
        return 130
    except CliError as exc:
        err.print(f"ursa: error: {exc}", markup=False, soft_wrap=True)
        return exc.code
    except Exception as exc:
        for kind, code in _EXIT_CODES:
            if isinstance(exc, kind):
                err.print(f"ursa: error: {exc}", markup=False, soft_wrap=True)
                return code
        raise


def _query(args: argparse.Namespace) -> int:
    data = DataInterface(args.profile)
    result = data.query(
        recording_hash=args.recording_hash or None,
        modality=args.modality,
        worker_id=args.worker_id,
        status=args.status,
        where=args.where,
    )
    if args.json:
        for row in result:
            print(json.dumps(asdict(row), default=str))
        return 0
    table = Table(
        title=f"{len(result)} row{'s' * (len(result) != 1)} in profile {data.profile.name!r}"
    )
    for column in ("recording_hash", "modality", "worker", "status", "format", "storage"):
        table.add_column(column, overflow="fold")
    for row in result:
        table.add_row(
            row.recording_hash,
            row.modality,
            row.worker_id or "—",
            row.status,
            row.asset_format or "—",
            row.storage_uri or row.raw_storage_uri,
        )
    Console().print(table)
    return 0


def _download(args: argparse.Namespace) -> int:
    data = DataInterface(args.profile)
    rows = data.query(
        recording_hash=args.recording_hash, modality=args.modality, status=args.status
    )
    missing = [h for h in args.recording_hash if h not in rows.recording_hashes]
    if missing:
        raise CliError(
            f"no {args.status} rows for recording {missing[0]} in profile {data.profile.name!r} "
            "(try --status all to see every row)",
            code=2,
        )
    return _run_download(data, rows, args.dest, args)


def _run_download(
    data: DataInterface,
    rows: QueryResult | list[QueryResult],
    dest: Path,
    args: argparse.Namespace,
) -> int:
    """Download with the display the flags ask for: rich (default), JSON lines, or none."""
    json_mode, quiet = getattr(args, "json", False), getattr(args, "quiet", False)
    display = None if json_mode or quiet else RichProgress()
    callback = _print_json if json_mode else display
    with display or contextlib.nullcontext():
        data.download(
            rows,
            dest,
            source=getattr(args, "source", "auto"),
            layout=getattr(args, "layout", "by_recording"),
            overwrite=getattr(args, "overwrite", False),
            resume=getattr(args, "resume", False),
            max_concurrency=getattr(args, "max_concurrency", None),
            progress=callback,
            progress_interval=None if quiet else 0.1,
        )
    if display is not None:
        display.console.print(display.summary.line())
        display.console.print(f"Files are under {dest}")
    return 0


def _print_json(event: DownloadProgress) -> None:
    print(json.dumps(asdict(event)), flush=True)


def _demo(args: argparse.Namespace) -> int:
    from ursa.testing import DEFAULT_ROWS, build_recording

    console = Console(stderr=True)
    root = args.dir or Path(tempfile.mkdtemp(prefix="ursa-demo-"))
    store = root / "store"
    profile = Profile(name="demo", root=str(store), assets_bucket=f"file://{store}/assets/")
    console.print(
        f"[bold]ursa demo[/]: building a synthetic recording in a local profile under {store}\n"
        "  Zarr EEG, Lance events, two MP4 cameras with frame indexes, Parquet IMU, "
        "raw audio segments"
    )
    build_recording(profile, _demo_rows(DEFAULT_ROWS), seed=2026)
    data = DataInterface(profile)
    rows = [data.query(status="ingested"), data.query(status="raw")]
    console.print(f"Downloading {sum(map(len, rows))} catalog rows with the live display…")
    return _run_download(data, rows, root / "download", args)


def _demo_rows(rows: Sequence[RowSpec]) -> list[RowSpec]:
    """The default recording, made big enough that the bar visibly moves."""
    sized: list[RowSpec] = []
    for spec in rows:
        if spec.asset_format == "mp4":
            spec = replace(spec, mp4_size=48 << 20)
        elif spec.asset_format == "zarr":
            spec = replace(spec, zarr_chunks=400)
        elif spec.status == "raw":
            spec = replace(spec, segments=120, segment_size=256 << 10)
        sized.append(spec)
    return sized


if __name__ == "__main__":
    sys.exit(main())
