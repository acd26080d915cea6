"""Video frames that say which frame they are: the frame number drawn as 16 black or
white blocks (two rows of eight, most significant bit first) in the image's top-left
corner, large enough to survive lossy coding, and read back by ``frame_number_of``."""

from __future__ import annotations

import numpy as np

BITS = 16
_COLUMNS = 8
_ROWS = BITS // _COLUMNS
# Blocks smaller than this are smeared by 8x8 transform coding.
_MIN_BLOCK = 8


def block_size(width: int, height: int) -> int:
    """The side of one bit's block for a ``width`` x ``height`` image (a multiple of 8,
    so blocks sit on the codec's transform grid)."""
    side = min(width // _COLUMNS, height // (2 * _ROWS)) // 8 * 8
    if side < _MIN_BLOCK:
        raise ValueError(
            f"a {width}x{height} image is too small to carry a frame number "
            f"(needs at least {_COLUMNS * _MIN_BLOCK}x{2 * _ROWS * _MIN_BLOCK})"
        )
    return side


def band_height(width: int, height: int) -> int:
    """Rows at the top of the image the code occupies (keep other drawing below it)."""
    return _ROWS * block_size(width, height)


def stamp(image: np.ndarray, number: int) -> None:
    """Draw ``number`` (0 <= number < 2**16) into ``image`` (H, W, 3 uint8), in place."""
    if not 0 <= number < 1 << BITS:
        raise ValueError(f"frame number {number} does not fit in {BITS} bits")
    height, width = image.shape[:2]
    side = block_size(width, height)
    for bit in range(BITS):
        row, col = divmod(bit, _COLUMNS)
        on = (number >> (BITS - 1 - bit)) & 1
        image[row * side : (row + 1) * side, col * side : (col + 1) * side] = 255 if on else 0


def frame_number_of(image: np.ndarray) -> int:
    """The frame number ``stamp`` drew into ``image`` (H, W, 3 uint8, e.g. a decoded
    frame): each block's centre is read as white (1) or black (0)."""
    height, width = image.shape[:2]
    side = block_size(width, height)
    inset = side // 4
    number = 0
    for bit in range(BITS):
        row, col = divmod(bit, _COLUMNS)
        y, x = row * side, col * side
        centre = image[y + inset : y + side - inset, x + inset : x + side - inset]
        number = (number << 1) | int(float(centre.mean()) >= 128)
    return number
