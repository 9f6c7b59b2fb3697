"""Opening a 1,000-frame file of each container format decodes no frame and costs < 50 MB."""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest
import tifffile
from PIL import Image
from test_io import raise_if_dask_computes, write_mrc, write_video

from lptem_dask import _readers
from lptem_dask.io import from_array, ingest, open_video

N = 1000
NY = NX = 16


def _stack(n=N):
    # each frame a different level: a reader returning frames out of order fails
    return (
        np.arange(n, dtype=np.uint16)[:, None, None] * 7 % 251 + np.zeros((1, NY, NX), np.uint16)
    ).astype(np.uint8)


def _write(kind: str, path, n=N):
    a = _stack(n)
    if kind == "tiff":
        tifffile.imwrite(path, a, photometric="minisblack")
    elif kind == "tiff-compressed":
        tifffile.imwrite(path, a, photometric="minisblack", compression="zlib")
    elif kind == "folder":
        path.mkdir()
        for i, f in enumerate(a):
            Image.fromarray(f).save(path / f"f{i}.png", compress_level=0)
    elif kind == "zarr":
        ingest(from_array(a, pixel_size_nm=1.0), path)
    elif kind == "mp4":
        write_video(path, a, fps=25.0, codec="libx264")
    elif kind == "avi":
        write_video(path, a, fps=25.0, codec="mjpeg")
    elif kind == "mrc":
        write_mrc(path, a.astype(np.int16), pixel_A=1.0)
    return a


KINDS = {
    "tiff": "v.tif",
    "tiff-compressed": "c.tif",
    "folder": "frames",
    "zarr": "v.zarr",
    "mp4": "v.mp4",
    "avi": "v.avi",
    "mrc": "v.mrc",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_open_decodes_no_frame_and_little_memory(tmp_path, kind):
    if kind == "mrc":
        pytest.importorskip("rsciio")
    small = tmp_path / "small"
    small.mkdir()
    _write(kind, small / KINDS[kind], n=3)
    a = _write(kind, tmp_path / KINDS[kind])
    open_video(small / KINDS[kind])  # warm up: imports and caches are not the video's cost
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    _readers.reset_decoded_frames()
    with raise_if_dask_computes():
        v = open_video(tmp_path / KINDS[kind], chunks=100)
    added = proc.memory_info().rss - before
    assert _readers.decoded_frames() == 0
    assert added < 50e6, f"opening added {added / 1e6:.1f} MB"
    assert v.shape == (N, NY, NX) and v.chunks[0] == (100,) * 10
    # one chunk decodes that chunk only, with the right frames
    block = v[300:400].values
    assert _readers.decoded_frames() == 100
    tol = 3 if kind in ("mp4", "avi") else 0
    assert np.abs(block.astype(int) - a[300:400]).max() <= tol
