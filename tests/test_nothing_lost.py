"""Nothing lost: bad places, late arrivals, full disks, forks. Real stores throughout."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import subprocess_env
from ursa import DataInterface, DownloadProgress, Profile
from ursa.testing import Recording, RowSpec, build_recording


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".ursa-" in p.name]


def test_a_file_planted_after_planning_is_not_clobbered(
    profile: Profile, recording: Recording, tmp_path: Path
) -> None:
    """A final path that appears after planning (here a dangling symlink) raises
    FileExistsError unless overwrite=True, and writing never follows it."""
    data = DataInterface(profile)
    rows = data.query(recording_hash=recording.recording_hash, modality="imu")
    final = tmp_path / recording.recording_hash / "imu" / "imu.parquet"
    victim = tmp_path / "victim"

    def plant(e: DownloadProgress) -> None:
        if e.phase == "plan_done":
            final.parent.mkdir(parents=True, exist_ok=True)
            final.symlink_to(victim)

    with pytest.raises(FileExistsError, match="appeared after planning"):
        data.download(rows, dest=tmp_path, progress=plant)
    assert final.is_symlink() and not victim.exists()
    assert not leftovers(tmp_path)


def test_a_directory_planted_after_planning_keeps_the_asset_staged(
    profile: Profile, recording: Recording, tmp_path: Path
) -> None:
    data = DataInterface(profile)
    rows = data.query(recording_hash=recording.recording_hash, modality="eeg")
    final = tmp_path / recording.recording_hash / "eeg" / "eeg.zarr"

    def plant(e: DownloadProgress) -> None:
        if e.phase == "plan_done":
            final.mkdir(parents=True)
            (final / "theirs").write_text("keep me")

    with pytest.raises(FileExistsError):
        data.download(rows, dest=tmp_path, progress=plant)
    assert [p.name for p in final.iterdir()] == ["theirs"]
    assert not leftovers(tmp_path)


def test_a_key_that_is_also_a_prefix_is_refused_at_plan_time(
    profile: Profile, tmp_path: Path, boto: Any
) -> None:
    """S3 allows objects `x/a` and `x/a/b` side by side; a filesystem cannot hold both."""
    rec = build_recording(profile, [RowSpec("audio", status="raw", segments=1)], seed=24)
    prefix = f"{rec.recording_hash}/audio/"
    boto.put_object(Bucket="ursa-raw", Key=prefix + "clash", Body=b"file")
    boto.put_object(Bucket="ursa-raw", Key=prefix + "clash/inner", Body=b"below it")
    data = DataInterface(profile)
    with pytest.raises(ValueError, match="to be a directory"):
        data.download(data.query(recording_hash=rec.recording_hash, status="raw"), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_folder_markers_are_not_files(profile: Profile, tmp_path: Path, boto: Any) -> None:
    """Zero-byte `sub/` folder objects (S3 consoles make them) are skipped where files live
    below them; an empty object is written without a request."""
    rec = build_recording(profile, [RowSpec("audio", status="raw", segments=1)], seed=25)
    prefix = f"{rec.recording_hash}/audio/"
    boto.put_object(Bucket="ursa-raw", Key=prefix + "sub/", Body=b"")
    boto.put_object(Bucket="ursa-raw", Key=prefix + "sub/inner.bin", Body=b"inside")
    boto.put_object(Bucket="ursa-raw", Key=prefix + "empty.bin", Body=b"")
    data = DataInterface(profile)
    paths = data.download(data.query(recording_hash=rec.recording_hash, status="raw"), tmp_path)
    rel = sorted(p.relative_to(tmp_path / rec.recording_hash / "audio").as_posix() for p in paths)
    assert rel == ["empty.bin", "seg-000000.bin", "sub/inner.bin"]
    assert (tmp_path / rec.recording_hash / "audio" / "sub" / "inner.bin").read_bytes() == b"inside"
    assert (tmp_path / rec.recording_hash / "audio" / "empty.bin").read_bytes() == b""


def test_hostile_local_names_are_refused_before_any_byte(
    local_profile: Profile, tmp_path: Path
) -> None:
    """Keys with a backslash or a control character would be misread on disk: the whole
    download is refused at plan time and nothing is written."""
    rec = build_recording(local_profile, [RowSpec("audio", status="raw", segments=2)], seed=21)
    (row,) = rec.rows
    raw_dir = Path(row.raw_storage_uri.removeprefix("file://"))
    data = DataInterface(local_profile)
    rows = data.query(recording_hash=rec.recording_hash, status="raw")
    for name in ("evil\\name.bin", "bell\x07.bin", "line\nbreak.bin"):
        bad = raw_dir / name
        bad.write_bytes(b"x")
        dest = tmp_path / "dest"
        with pytest.raises(ValueError, match="unsafe object key"):
            data.download(rows, dest=dest)
        assert not dest.exists()
        bad.unlink()


def test_dest_that_is_a_file_or_unwritable(local_profile: Profile, tmp_path: Path) -> None:
    rec = build_recording(local_profile, [RowSpec("audio", status="raw", segments=2)], seed=22)
    data = DataInterface(local_profile)
    rows = data.query(recording_hash=rec.recording_hash, status="raw")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        data.download(rows, dest=a_file)
    with pytest.raises(NotADirectoryError):
        data.download(rows, dest=a_file / "below")
    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable(locked), pytest.raises(PermissionError):
        data.download(rows, dest=locked / "sub")
    assert not (locked / "sub").exists()


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """A directory nobody may add to: read-only mode, or for root (who ignores modes)
    the immutable attribute."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(directory)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield
        finally:
            directory.chmod(stat.S_IRWXU)


def _script(body: str) -> str:
    return textwrap.dedent(body)


def test_full_disk_gives_a_clear_error_and_no_partial_files(
    profile: Profile, tmp_path: Path
) -> None:
    """RLIMIT_FSIZE stands in for a full disk: the download fails with an OSError that
    says why, and leaves no partial file and no temporary."""
    rec = build_recording(
        profile, [RowSpec("camera", asset_format="mp4", segments=1, mp4_size=6 << 20)], seed=23
    )
    dest = tmp_path / "dest"
    code = _script(
        f"""
        import resource, sys
        from ursa import DataInterface
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
        data = DataInterface("r2-test")
        try:
            data.download(data.query(recording_hash={rec.recording_hash!r}), dest={str(dest)!r})
        except OSError as e:
            print("OSError:", e)
            sys.exit(3)
        """
    )
    env = subprocess_env(str(profile.endpoint), tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr
    assert "File too large" in result.stdout
    assert not leftovers(tmp_path)
    assert not (dest / rec.recording_hash / "camera" / "camera.mp4").exists()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
# The child never touches lance, whose fork hook warns.
@pytest.mark.filterwarnings("ignore:lance is not fork-safe:UserWarning")
def test_fork_after_a_download_then_download_in_the_child(
    profile: Profile, recording: Recording, tmp_path: Path
) -> None:
    data = DataInterface(profile)
    rows = data.query(recording_hash=recording.recording_hash, modality="eeg")
    first = data.download(rows, dest=tmp_path / "parent")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new runtime must be built, the parent's is gone
        code = 1
        try:
            paths = data.download(rows, dest=tmp_path / "child")
            code = 0 if [p.read_bytes() for p in paths] == [p.read_bytes() for p in first] else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    verdict = os.read(r, 1)
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0 and verdict == b"\x00"
    assert len(list((tmp_path / "child").rglob("*.json"))) == 2
