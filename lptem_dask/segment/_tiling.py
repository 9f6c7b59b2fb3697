"""Overlapping tiles with smooth blending, and rescaling, for U-Net inference.

A frame larger than the tile is cut into tiles whose origins are multiples of
the network's size multiple (``2**depth``), so every tile sees the same
max-pooling grid as a whole-frame pass. Neighbouring tiles overlap by
``overlap`` pixels. Each tile's output is weighted by a separable window that
is 0 over the outer ``overlap // 3`` pixels of a tile side that faces a
neighbour (where zero padding of the tile edge distorts the output), rises as
``sin^2`` across the middle third of the overlap, and is 1 elsewhere and along
frame borders. The two ramps of a pair of neighbours sum to exactly 1, so the
blended output equals the whole-frame output wherever the network's effective
receptive field fits inside the overlap's trusted part.
"""

from __future__ import annotations

import numpy as np

__all__ = ["tile_starts", "tile_window", "pad_to_multiple"]


def pad_to_multiple(frame: np.ndarray, multiple: int, min_size: int = 0) -> np.ndarray:
    """Reflect-pad the last two axes (after the end) to multiples of ``multiple``.

    Padding is at least ``min_size`` in each axis. Returns the padded array.
    """
    h, w = frame.shape[-2:]
    th = max(-(-h // multiple) * multiple, min_size)
    tw = max(-(-w // multiple) * multiple, min_size)
    if (th, tw) == (h, w):
        return frame
    pad = [(0, 0)] * (frame.ndim - 2) + [(0, th - h), (0, tw - w)]
    mode = "reflect" if h > th - h and w > tw - w else "symmetric"
    if min(h, w) < 2:
        mode = "edge"
    out = frame
    # np.pad reflect needs pad < size; pad repeatedly if the frame is tiny
    while out.shape[-2] < th or out.shape[-1] < tw:
        ph = min(th - out.shape[-2], out.shape[-2] - (1 if mode == "reflect" else 0))
        pw = min(tw - out.shape[-1], out.shape[-1] - (1 if mode == "reflect" else 0))
        ph, pw = max(ph, 0), max(pw, 0)
        if ph == 0 and pw == 0:
            mode = "edge"
            ph, pw = th - out.shape[-2], tw - out.shape[-1]
        pad = [(0, 0)] * (frame.ndim - 2) + [(0, ph), (0, pw)]
        out = np.pad(out, pad, mode=mode)  # type: ignore[call-overload]
    return out


def tile_starts(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Origins of tiles of length ``tile`` covering ``[0, size)`` with ``overlap``.

    ``size`` and ``tile`` must be multiples of ``multiple``; origins are too.
    """
    if tile >= size:
        return [0]
    stride = max(multiple, ((tile - overlap) // multiple) * multiple)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


def _ramp(n_overlap: int) -> np.ndarray:
    """Rising edge over the overlap: 0 for the outer third, sin^2 over the middle third."""
    m = n_overlap // 3
    core = n_overlap - 2 * m
    r = np.zeros(n_overlap, np.float64)
    if core > 0:
        t = (np.arange(core) + 0.5) / core
        r[m : m + core] = np.sin(0.5 * np.pi * t) ** 2
    r[m + core :] = 1.0
    return r


def tile_window(start: int, tile: int, size: int, overlap_lo: int, overlap_hi: int) -> np.ndarray:
    """1-D blending weights of a tile at ``start`` with the given overlaps to each side.

    ``overlap_lo`` is the overlap with the previous tile (0 at the frame start),
    ``overlap_hi`` with the next one (0 at the frame end).
    """
    w = np.ones(tile, np.float64)
    if overlap_lo > 0:
        w[:overlap_lo] *= _ramp(overlap_lo)
    if overlap_hi > 0:
        w[tile - overlap_hi :] *= _ramp(overlap_hi)[::-1]
    return w


def blend_weights(size: int, tile: int, starts: list[int]) -> list[np.ndarray]:
    """Windows for each tile origin in ``starts``; they sum to 1 at every pixel."""
    out = []
    for i, s in enumerate(starts):
        lo = starts[i - 1] + tile - s if i > 0 else 0
        hi = s + tile - starts[i + 1] if i + 1 < len(starts) else 0
        out.append(tile_window(s, tile, size, max(lo, 0), max(hi, 0)))
    return out
