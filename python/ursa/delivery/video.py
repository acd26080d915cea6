"""MP4 video (SPEC §9): a lazy ``VideoClip``. Its frames' times and numbers come from the
frame index (the Lance dataset at ``storage_uri + ".lance"``); ``frames()`` decodes
through a ``RangeFile`` from the keyframe at or before the clip's first frame and keeps
exactly the frames whose time is in the clip."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ursa.delivery.fileobj import RangeFile
from ursa.delivery.timeaxis import Span

_IO_BLOCK = 8 << 10


class FrameIndex:
    """The frame index of one MP4, in presentation order."""

    def __init__(self, table: Any, label: str) -> None:
        names = set(table.schema.names)
        missing = {"frame", "pts", "time_s", "keyframe"} - names
        if missing:
            raise ValueError(f"{label}: the frame index lacks {sorted(missing)}")
        table = table.sort_by("pts")
        self.frame = table.column("frame").to_numpy().astype(np.int64)
        self.pts = table.column("pts").to_numpy().astype(np.int64)
        self.time_s = table.column("time_s").to_numpy().astype(np.float64)
        self.keyframe = table.column("keyframe").to_numpy(zero_copy_only=False).astype(bool)

    def __len__(self) -> int:
        return len(self.frame)

    def positions(self, span: Span) -> np.ndarray:
        """Positions (in presentation order) of the frames whose time is in ``span``."""
        mask = np.ones(len(self.time_s), dtype=bool)
        if span.start is not None:
            mask &= self.time_s >= span.start
        if span.stop is not None:
            mask &= self.time_s < span.stop
        return np.flatnonzero(mask)

    @property
    def end_s(self) -> float:
        """One frame interval after the last frame (its display ends there)."""
        if len(self.time_s) == 0:
            return 0.0
        step = float(np.median(np.diff(self.time_s))) if len(self.time_s) > 1 else 0.0
        return float(self.time_s[-1]) + step


class VideoClip:
    """The frames of one MP4 in a clip. ``times`` (float64 s) and ``frame_numbers``
    (int64) are known without reading video; ``frames()`` decodes (only the byte ranges
    the frames need) into a ``uint8`` array ``(N, H, W, 3)``."""

    def __init__(
        self,
        open_file: Callable[[], RangeFile],
        index: FrameIndex,
        positions: np.ndarray,
        label: str,
    ) -> None:
        self._open = open_file
        self._index = index
        self._positions = positions
        self.label = label
        self.times: np.ndarray = index.time_s[positions]
        self.frame_numbers: np.ndarray = index.frame[positions]
        self.bytes_fetched = 0  # by frames(), so far
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._positions)

    def __repr__(self) -> str:
        span = f"{self.times[0]:.3f}..{self.times[-1]:.3f} s" if len(self) else "empty"
        return f"VideoClip({self.label!r}, {len(self)} frames, {span})"

    def frames(self) -> np.ndarray:
        """Decode the clip's frames, in presentation order."""
        if os.getpid() != self._pid:
            raise RuntimeError(
                "a VideoClip belongs to the process that made it; materialize() or stream() "
                "in each worker process"
            )
        file = self._open()
        try:
            return self._decode(file)
        finally:
            self.bytes_fetched += file.bytes_read
            file.close()

    def _decode(self, file: RangeFile) -> np.ndarray:
        import av

        # Small I/O blocks: FFmpeg's reads then cost little more than the samples they
        # need; the file object's read-ahead still grows while decoding runs sequentially.
        with av.open(file, mode="r", buffer_size=_IO_BLOCK) as container:
            stream = container.streams.video[0]
            if not len(self):
                return np.empty((0, stream.height, stream.width, 3), dtype=np.uint8)
            first = int(self._positions[0])
            keys = np.flatnonzero(self._index.keyframe[: first + 1])
            seek_pts = int(self._index.pts[keys[-1]]) if len(keys) else 0
            # Each wanted frame's slot in the result, filled as it is decoded (the clip is
            # held once: a 720p clip of 300 frames is 830 MB).
            slot = {int(p): i for i, p in enumerate(self._index.pts[self._positions])}
            last = max(slot)
            out: np.ndarray | None = None  # shaped by the first decoded frame
            filled: set[int] = set()
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if frame.pts in slot:
                    rgb = frame.to_ndarray(format="rgb24")
                    if out is None:
                        out = np.empty((len(slot), *rgb.shape), dtype=np.uint8)
                    out[slot[frame.pts]] = rgb
                    filled.add(frame.pts)
                if frame.pts >= last:
                    break
        if out is None or len(filled) != len(slot):
            raise ValueError(
                f"{self.label}: decoded {len(filled)} of the {len(slot)} frames the frame "
                "index lists for this clip (the index does not match the video)"
            )
        return out
