"""The ``ursa`` command: ``download``, ``query`` and ``demo``.

Expected errors print one line (``ursa: error: …``, naming CLI flags, never Python
arguments) and exit non-zero, never a traceback; with ``--json`` the output also ends with
one JSON error object. Exit codes: 2 bad input, 3 destination collision, 4 configuration
or credentials, 5 object store, 1 any other OS error, 130 Ctrl+C, 143 SIGTERM (handled
like Ctrl+C: the download is cancelled and its temporaries removed), 141 output pipe
closed (``--json | head``: ends quietly).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console

import ursa
from ursa import cli_output
from ursa.catalog import STATUSES, QueryResult
from ursa.download import VERIFY_MODES
from ursa.errors import ConfigurationError, DownloadCancelled, ObjectStoreError
from ursa.events import DownloadProgress
from ursa.interface import DataInterface
from ursa.layouts import LAYOUTS
from ursa.prefixes import PrefixError, check_prefix, prefix_filter, resolve
from ursa.profiles import Profile
from ursa.progress import RichProgress
from ursa.sources import SOURCES

if TYPE_CHECKING:  # ursa.testing needs the [testing] extra; only `ursa demo` imports it
    from ursa.testing import RowSpec

EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_BROKEN_PIPE = 130, 143, 141
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (FileExistsError, 3),
    (ConfigurationError, 4),
    (ObjectStoreError, 5),
    (ValueError, 2),
    (OSError, 1),
)

_EPILOG_CODES = """\
exit codes:
  0 done   1 other OS error   2 bad input (unknown or ambiguous hash, bad value)
  3 a destination file exists (pass --overwrite)   4 profile, config or credentials
  5 object store   130 Ctrl+C   141 output pipe closed   143 SIGTERM
  Interrupted downloads leave no partial file under a final name."""

_TOP_EPILOG = f"""\
examples:
  ursa demo                                      # a synthetic recording, downloaded live
  ursa query --status all                        # the catalog, one row per line
  ursa query 1ad200d6 --long                     # one recording, full hashes and URIs
  ursa download 1ad200d6 --dest ./sessions       # a unique hash prefix is enough
  URSA_PROFILE=r2-test ursa download 1ad200d6 --dest ./s --json | jq .phase

{_EPILOG_CODES}"""


class CliError(Exception):
    """A user-facing failure with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# What a stopped download leaves, and how to go on from it.
_STOPPED = "nothing partial was left behind; the same command with --resume continues"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl+C would be so the download is cleaned up the same way."""


# --- the parser -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    default_profile = os.environ.get("URSA_PROFILE") or "r2"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log the ursa.download events on stderr: -v INFO (phases), -vv DEBUG (each file)",
    )
    with_profile = argparse.ArgumentParser(add_help=False)
    with_profile.add_argument(
        "--profile",
        default=default_profile,
        help=f"profile: r2, r2-test, local or one from the config file "
        f"(default: $URSA_PROFILE or r2; now {default_profile})",
    )

    parser = argparse.ArgumentParser(
        prog="ursa",
        description="Pull recordings (EEG, events, camera, …) from Cloudflare R2 or any S3\n"
        "store to local disk, fast and safely, with live progress.",
        epilog=_TOP_EPILOG,
        formatter_class=fmt,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"ursa {ursa.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dl = sub.add_parser(
        "download",
        help="download recordings with a live progress display",
        description="Download every catalog row of the given recordings under --dest.",
        epilog="examples:\n"
        "  ursa download 1ad200d6 --dest ./sessions\n"
        "  ursa download 1ad200d6 2be3aa01 --dest ./s --modality eeg --modality camera\n"
        "  ursa download 1ad200d6 --dest ./s --dry-run        # the plan, nothing written\n"
        "  ursa download 1ad200d6 --dest ./s --json | jq -c 'select(.phase==\"finish\")'\n\n"
        + _EPILOG_CODES,
        formatter_class=fmt,
        parents=[common, with_profile],
    )
    dl.add_argument(
        "recording_hash",
        nargs="+",
        help="recording hashes, each in full or a unique prefix of at least 8 hex characters",
    )
    dl.add_argument("--dest", required=True, type=Path, help="destination directory (created)")
    dl.add_argument(
        "--source",
        default="auto",
        choices=SOURCES,
        help="auto: processed asset if ingested, else raw segments; raw; processed (default: auto)",
    )
    dl.add_argument(
        "--layout",
        default="by_recording",
        choices=LAYOUTS,
        help="by_recording: DEST/HASH/MODALITY/[WORKER/]; by_modality: DEST/MODALITY/HASH/; "
        "flat: DEST/ (default: by_recording)",
    )
    dl.add_argument(
        "--status",
        default="ingested",
        choices=(*STATUSES, "all"),
        help="which catalog rows to download (default: ingested)",
    )
    dl.add_argument(
        "--modality", action="append", help="only this modality (repeatable; default: all)"
    )
    dl.add_argument(
        "--overwrite", action="store_true", help="replace existing files (default: refuse)"
    )
    dl.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (files, bytes, existing paths) and write nothing",
    )
    dl.add_argument(
        "--resume",
        action="store_true",
        help="continue an earlier download into --dest: keep identical files, fetch the rest "
        "(default: an existing file is an error)",
    )
    dl.add_argument(
        "--durable",
        action="store_true",
        help="fsync each file and directory as it is published, so it survives a power loss "
        "(default: the OS writes back when it chooses)",
    )
    dl.add_argument(
        "--verify",
        choices=VERIFY_MODES,
        default="auto",
        help="auto: the size and the store's checksum (CRC, else an MD5 ETag); "
        "size: the size only (default: auto)",
    )
    dl.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        metavar="N",
        help="concurrent requests (default: the engine's benchmarked default)",
    )
    dl.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (needs ursa[ray]; workers resolve --profile themselves): "
        "the one at ADDRESS, else $RAY_ADDRESS's, else a local one (--dest: a filesystem "
        "every node sees)",
    )
    mode = dl.add_mutually_exclusive_group()
    mode.add_argument(
        "--quiet", "-q", action="store_true", help="no display and no summary (errors only)"
    )
    mode.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per event on stdout; on failure a last {"error": …} object',
    )

    q = sub.add_parser(
        "query",
        help="print catalog rows as a table",
        description="Print catalog rows as a table (short hashes: --long for full ones).",
        epilog="examples:\n"
        "  ursa query --status all\n"
        "  ursa query 1ad200d6 --modality eeg --long\n"
        '  ursa query --where "duration_s > 600" --json | jq -r .recording_hash\n\n'
        + _EPILOG_CODES,
        formatter_class=fmt,
        parents=[common, with_profile],
    )
    q.add_argument(
        "recording_hash",
        nargs="*",
        help="recording hashes or unique prefixes (>= 8 hex characters; default: all)",
    )
    q.add_argument("--modality", action="append", help="only this modality (repeatable)")
    q.add_argument("--worker-id", help="only this worker ('' for single-worker rows)")
    q.add_argument(
        "--status",
        default="ingested",
        choices=(*STATUSES, "all"),
        help="row status to show (default: ingested)",
    )
    q.add_argument("--where", help="an extra Lance SQL filter, ANDed with the others")
    q.add_argument("--long", action="store_true", help="full hashes and storage URIs")
    q.add_argument("--json", action="store_true", help="one JSON object per row on stdout")

    demo = sub.add_parser(
        "demo",
        help="build a local demo recording and download it",
        description="Build a synthetic recording (Zarr, Lance, MP4, Parquet, raw segments)\n"
        "in a throwaway local profile and download it with the live display.\n"
        "Needs the testing extra (pip install 'ursa[testing]'); no server, no credentials.",
        epilog="examples:\n  ursa demo\n  ursa demo --dir ./ursa-demo   # re-runnable: "
        "reuses the recording, replaces the download\n\n" + _EPILOG_CODES,
        formatter_class=fmt,
        parents=[common],
    )
    demo.add_argument(
        "--dir", type=Path, help="where to build and download (default: a fresh temp dir)"
    )
    return parser


# --- entry point and error handling -------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    err = Console(stderr=True, highlight=False)
    json_mode = bool(getattr(args, "json", False))
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "download": _download,
        "query": _query,
        "demo": _demo,
    }
    _verbosity(getattr(args, "verbose", 0))
    pipe = _Pipe()
    args.pipe = pipe
    with _sigterm_as_interrupt():
        try:
            code = commands[args.command](args)
            return pipe.closed() if pipe.broken else code
        except BrokenPipeError:
            return pipe.closed()
        except Terminated:
            err.print(f"ursa: terminated; {_STOPPED}", soft_wrap=True)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            err.print(f"ursa: interrupted; {_STOPPED}", soft_wrap=True)
            return EXIT_INTERRUPTED
        except DownloadCancelled:
            if pipe.broken:
                return pipe.closed()
            raise
        except CliError as exc:
            return _fail(err, str(exc), type(exc).__name__, exc.code, json_mode, pipe)
        except Exception as exc:
            for kind, code in _EXIT_CODES:
                if isinstance(exc, kind):
                    name = type(exc).__name__
                    return _fail(err, cli_words(str(exc)), name, code, json_mode, pipe)
            raise


def _fail(err: Console, message: str, kind: str, code: int, json_mode: bool, pipe: _Pipe) -> int:
    err.print(f"ursa: error: {message}", markup=False, soft_wrap=True)
    if json_mode:
        pipe.print(json.dumps({"error": kind, "message": message, "exit_code": code}))
    return pipe.closed() if pipe.broken else code


class _Pipe:
    """stdout for JSON lines: a reader that goes away (``| head -1``) stops the output
    quietly — no warning per event, no traceback — and the command exits 141."""

    def __init__(self) -> None:
        self.broken = False
        self.cancel = threading.Event()  # stops a download whose output is gone

    def print(self, line: str) -> None:
        if self.broken:
            return
        try:
            print(line, flush=True)
        except BrokenPipeError:
            self.broken = True
            self.cancel.set()

    def closed(self) -> int:
        self.broken = True
        # Python flushes stdout at exit; point it at /dev/null so that cannot fail loudly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_FLAG_NAMES = ("overwrite", "source", "layout", "status", "max_concurrency", "profile", "verify")


def cli_words(message: str) -> str:
    """A library message as a CLI user needs it: ``pass overwrite=True`` → ``pass
    --overwrite``, ``source='raw'`` → ``--source raw``, ``max_concurrency must`` →
    ``--max-concurrency must``."""
    names = "|".join(_FLAG_NAMES)

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1).replace("_", "-"), match.group(2)
        return f"--{name}" if value == "True" else f"--{name} {value.strip(chr(39))}"

    message = re.sub(rf"\b({names})=(True|'[^']*')", flag, message)
    return re.sub(rf"^({names}) must", lambda m: f"--{m.group(1).replace('_', '-')} must", message)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now: the live display swaps in a proxy that
    prints log lines above the bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _verbosity(level: int) -> None:
    if not level:
        return
    logger = logging.getLogger("ursa.download")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if level > 1 else logging.INFO)


# --- commands -------------------------------------------------------------------------------


def _hashes(data: DataInterface, values: Sequence[str]) -> list[str]:
    """Full hashes for the given hashes or unique prefixes (one catalog query for all
    prefixes, pushed down)."""
    for value in values:
        check_prefix(value)
    prefixes = [v for v in values if len(v) < 64]
    if not prefixes:
        return list(values)
    matches = data.query(status="all", where=prefix_filter(prefixes))
    try:
        full = iter(resolve(prefixes, matches, data.profile.name))
    except PrefixError as exc:
        raise CliError(str(exc), code=2) from None
    return [v if len(v) == 64 else next(full) for v in values]


def _query(args: argparse.Namespace) -> int:
    data = DataInterface(args.profile)
    hashes = _hashes(data, args.recording_hash) if args.recording_hash else None
    result = data.query(
        recording_hash=hashes,
        modality=args.modality,
        worker_id=args.worker_id,
        status=args.status,
        where=args.where,
    )
    if args.json:
        for row in result:
            args.pipe.print(json.dumps(asdict(row), default=str))
        return 0
    Console().print(cli_output.rows_table(result, data.profile.name, long=args.long))
    return 0


def _download(args: argparse.Namespace) -> int:
    data = DataInterface(args.profile)
    hashes = _hashes(data, args.recording_hash)
    rows = data.query(recording_hash=hashes, modality=args.modality, status=args.status)
    missing = [h for h in hashes if h not in rows.recording_hashes]
    if missing:
        raise CliError(
            f"no {args.status} rows for recording {missing[0]} in profile {data.profile.name!r} "
            "(try --status all to see every row)",
            code=2,
        )
    if args.dry_run:
        return _dry_run(data, rows, args)
    return _run_download(data, rows, args.dest, args)


def _download_options(args: argparse.Namespace) -> dict[str, Any]:
    """The download() arguments the flags set (the demo has none of them)."""
    return {
        "source": getattr(args, "source", "auto"),
        "layout": getattr(args, "layout", "by_recording"),
        "overwrite": getattr(args, "overwrite", False),
        "resume": getattr(args, "resume", False),
        "durable": getattr(args, "durable", False),
        "max_concurrency": getattr(args, "max_concurrency", None),
        "verify": getattr(args, "verify", "auto"),
    }


def _dry_run(data: DataInterface, rows: QueryResult, args: argparse.Namespace) -> int:
    options = _download_options(args)
    plan = data.plan_download(
        rows,
        args.dest,
        source=options["source"],
        layout=options["layout"],
        resume=options["resume"],
    )
    blocked = bool(plan.collisions) and not options["overwrite"]
    if args.json:
        args.pipe.print(json.dumps(cli_output.plan_record(plan, blocked)))
    else:
        Console().print(
            cli_output.plan_text(plan, blocked), markup=False, highlight=False, soft_wrap=True
        )
    return 3 if blocked else 0


def _run_download(
    data: DataInterface,
    rows: QueryResult | list[QueryResult],
    dest: Path,
    args: argparse.Namespace,
) -> int:
    """Download with the display the flags ask for: rich (default), JSON lines, or none."""
    json_mode, quiet = getattr(args, "json", False), getattr(args, "quiet", False)
    pipe: _Pipe = args.pipe
    display = None if json_mode or quiet else RichProgress()

    def print_json(event: DownloadProgress) -> None:
        pipe.print(json.dumps(asdict(event), default=str))

    callback = print_json if json_mode else display
    run = _ray_download(data, args.ray) if getattr(args, "ray", None) is not None else data.download
    with display or contextlib.nullcontext():
        run(
            rows,
            dest,
            progress=callback,
            progress_interval=None if quiet else 0.1,
            cancel=pipe.cancel,
            **_download_options(args),
        )
    if display is not None:
        display.console.print(display.summary.line())
        display.console.print(f"Files are under {dest}")
    return 0


def _ray_download(data: DataInterface, address: str) -> Callable[..., Any]:
    """``data.download`` carried out on a Ray cluster (``--ray [ADDRESS]``)."""
    try:
        import ray

        import ursa.ray
    except ImportError:
        raise CliError("--ray needs Ray: pip install 'ursa[ray]'", code=2) from None
    # Workers' output stays in the cluster's logs: stdout is the display (or --json).
    ray.init(address=address or None, log_to_driver=False, logging_level=logging.WARNING)
    return functools.partial(ursa.ray.download, data.profile.name)


def _demo(args: argparse.Namespace) -> int:
    try:
        for module in _TESTING_EXTRA:  # ursa.testing imports them lazily: check up front
            importlib.import_module(module)
        from ursa.testing import DEFAULT_ROWS, build_recording, recording_hash_for
    except ImportError as exc:
        raise CliError(
            f"ursa demo needs the testing extra ({exc.name or 'zarr, av, numpy'} is missing): "
            "pip install 'ursa[testing]'",
            code=4,
        ) from None

    console = Console(stderr=True)
    root = args.dir or Path(tempfile.mkdtemp(prefix="ursa-demo-"))
    store = root / "store"
    profile = Profile(name="demo", root=str(store), assets_bucket=f"file://{store}/assets/")
    data = DataInterface(profile)
    seed = 2026
    if _has_recording(data, recording_hash_for(seed)):
        console.print(f"[bold]ursa demo[/]: reusing the demo recording under {store}")
    else:
        console.print(
            f"[bold]ursa demo[/]: building a synthetic recording in a local profile under "
            f"{store}\n  Zarr EEG, Lance events, two MP4 cameras with frame indexes,\n"
            "  Parquet IMU, raw audio segments"
        )
        build_recording(profile, _demo_rows(DEFAULT_ROWS), seed=seed)
    rows = [data.query(status="ingested"), data.query(status="raw")]
    console.print(f"Downloading {sum(map(len, rows))} catalog rows with the live display…")
    # The demo owns root/download: a re-run replaces what an earlier run put there.
    args.overwrite = True
    return _run_download(data, rows, root / "download", args)


_TESTING_EXTRA = ("zarr", "av", "numpy")


def _has_recording(data: DataInterface, recording_hash: str) -> bool:
    if not Path(data.profile.catalog or "").exists():
        return False
    return bool(data.query(recording_hash=recording_hash, status="all"))


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
