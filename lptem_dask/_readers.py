"""Lazy frame sources for :mod:`lptem_dask.io` (private).

Each source is a small picklable object that holds what the file header says
(path, shape, dtype, offsets) and reads frames ``[start, stop)`` only when
Dask asks for a block, so opening a video decodes nothing. Sources implement
the array protocol :func:`dask.array.from_array` needs (``shape``, ``dtype``,
``ndim`` and ``__getitem__`` with a tuple of slices).

Every read goes through :meth:`FrameSource.__getitem__`, which adds the number
of frames decoded to a module counter (:func:`decoded_frames`), so tests can
check that opening a video decoded no frame.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError

__all__ = [
    "FrameSource",
    "TiffContiguousSource",
    "TiffPageSource",
    "ImageFolderSource",
    "VideoFileSource",
    "TemFileSource",
    "ZarrChunks",
    "probe_video_packets",
    "decoded_frames",
    "reset_decoded_frames",
    "count_decoded",
    "count_block",
    "read_image_file",
    "ffmpeg_exe",
    "to_grey",
    "check_frame_dims",
    "MAX_FRAME_PIXELS",
    "MAX_FRAMES",
]

#: frames larger than this (pixels) are refused as an absurd header (1 Gpx)
MAX_FRAME_PIXELS = 2**30
#: videos with more frames than this are refused as an absurd header
MAX_FRAMES = 2**31

_lock = threading.Lock()
_decoded = [0]


def decoded_frames() -> int:
    """Number of frames decoded by the readers of this process since the last reset."""
    return _decoded[0]


def reset_decoded_frames() -> None:
    """Set the decoded-frame counter back to zero."""
    with _lock:
        _decoded[0] = 0


def count_decoded(n: int) -> None:
    """Add ``n`` decoded frames to the counter."""
    with _lock:
        _decoded[0] += int(n)


def count_block(block: np.ndarray) -> np.ndarray:
    """Pass-through block function that counts the frames of a (frame, y, x) block."""
    count_decoded(block.shape[0])
    return block


def check_frame_dims(path: str | os.PathLike, n_frames: int, ny: int, nx: int) -> None:
    """Refuse absurd header dimensions before anything is allocated.

    Raises
    ------
    FormatError
        If a dimension is not positive, a frame has more than
        :data:`MAX_FRAME_PIXELS` pixels, or there are more than :data:`MAX_FRAMES`.
    """
    if n_frames < 1 or ny < 1 or nx < 1:
        raise FormatError(
            f"{str(path)!r}: the header gives {n_frames} frames of {ny} x {nx} pixels; "
            f"expected at least one frame of at least 1 x 1 pixel; the file is empty or "
            f"corrupt: re-export it from the acquisition software"
        )
    if ny * nx > MAX_FRAME_PIXELS or n_frames > MAX_FRAMES:
        raise FormatError(
            f"{str(path)!r}: the header claims {n_frames} frames of {ny} x {nx} pixels, "
            f"beyond the limits of {MAX_FRAMES} frames and {MAX_FRAME_PIXELS} pixels per frame; "
            f"the header is corrupt: re-export the file from the acquisition software"
        )


_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma


def to_grey(frames: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert (..., y, x, samples) colour frames to grey (BT.601 luma) of ``dtype``.

    One sample: taken as is; two (grey + alpha): the first; three or more:
    ``0.299 R + 0.587 G + 0.114 B`` (alpha dropped), rounded for integer dtypes.
    """
    s = frames.shape[-1]
    if s < 3:
        return np.ascontiguousarray(frames[..., 0]).astype(dtype, copy=False)
    grey = frames[..., :3].astype(np.float64) @ _GREY_WEIGHTS
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        grey = np.clip(np.rint(grey), info.min, info.max)
    return grey.astype(dtype)


class FrameSource:
    """Base class: a lazily read (frame, y, x) array of one file or folder."""

    ndim = 3

    def __init__(self, path: str, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.path = str(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    def _read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        k0 = key[0]
        if isinstance(k0, (int, np.integer)):
            k0 = slice(int(k0), int(k0) + 1)
            squeeze = True
        else:
            squeeze = False
        start, stop, step = k0.indices(self.shape[0])
        if stop <= start:
            return np.empty((0, *self.shape[1:]), self.dtype)[:, key[1], key[2]]
        block = self._read(start, stop)
        count_decoded(stop - start)
        if block.shape != (stop - start, *self.shape[1:]):
            raise FormatError(
                f"{self.path!r}: frames {start}-{stop - 1} decoded to shape {block.shape}, "
                f"expected {(stop - start, *self.shape[1:])}; the file is truncated or corrupt"
            )
        out = block[::step, key[1], key[2]]
        return out[0] if squeeze else out

    def __dask_tokenize__(self) -> tuple:
        try:
            st = os.stat(self.path)
            stamp: tuple = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = ()
        return (type(self).__name__, self.path, self.shape, str(self.dtype), stamp)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, shape={self.shape}, dtype={self.dtype})"


class ZarrChunks:
    """A Zarr array whose chunks, when they cannot be decoded, raise FormatError.

    Zarr raises codec errors (``RuntimeError: Zstd decompression error``...) for
    a truncated or corrupt chunk file; this wrapper names the store and the fix.
    """

    def __init__(self, array: Any, path: str) -> None:
        self.array = array
        self.path = str(path)
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except Exception as exc:  # noqa: BLE001 - any codec or I/O failure of a chunk
            raise FormatError(
                f"{self.path!r}: a stored chunk cannot be decoded ({type(exc).__name__}: "
                f"{exc}); the store is truncated or corrupt: write it again with lptem ingest"
            ) from exc


class TiffContiguousSource(FrameSource):
    """Uncompressed TIFF stack whose pixels lie contiguously in the file.

    Frames are read with plain offset reads (like a memory map, but without
    mapping file pages into the process, so resident memory stays at one block).
    """

    def __init__(
        self,
        path: str,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        *,
        offset: int,
        file_dtype: np.dtype,
        samples: int,
    ) -> None:
        super().__init__(path, shape, dtype)
        self.offset = int(offset)
        self.file_dtype = np.dtype(file_dtype)
        self.samples = int(samples)

    def _read(self, start: int, stop: int) -> np.ndarray:
        ny, nx = self.shape[1:]
        per_frame = ny * nx * self.samples
        count = (stop - start) * per_frame
        offset = self.offset + start * per_frame * self.file_dtype.itemsize
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            raw = np.fromfile(fh, dtype=self.file_dtype, count=count)
        if raw.size != count:
            raise FormatError(
                f"{self.path!r}: file ends before frame {stop - 1}; the TIFF is truncated: "
                f"copy it again from its source"
            )
        if self.samples > 1:
            return to_grey(raw.reshape(stop - start, ny, nx, self.samples), self.dtype)
        return raw.reshape(stop - start, ny, nx).astype(self.dtype, copy=False)


class TiffPageSource(FrameSource):
    """TIFF stack read page by page with tifffile (compressed or scattered pages)."""

    def __init__(
        self, path: str, shape: tuple[int, int, int], dtype: np.dtype, *, samples: int
    ) -> None:
        super().__init__(path, shape, dtype)
        self.samples = int(samples)

    def _read(self, start: int, stop: int) -> np.ndarray:
        import tifffile

        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                pages = [series.pages[i] for i in range(start, stop)]
                frames = np.stack([p.asarray() for p in pages])  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
            raise FormatError(
                f"{self.path!r}: cannot decode TIFF pages {start}-{stop - 1} ({exc}); "
                f"the file is truncated or corrupt: copy it again from its source"
            ) from exc
        ny, nx = self.shape[1:]
        if self.samples > 1:
            return to_grey(frames.reshape(stop - start, ny, nx, self.samples), self.dtype)
        return frames.reshape(stop - start, ny, nx).astype(self.dtype, copy=False)


def read_image_file(path: str, dtype: np.dtype) -> np.ndarray:
    """Read one 2-D frame (grey) from a PNG, JPEG or TIFF file."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path, key=0)
        else:
            from PIL import Image

            with Image.open(path) as img:
                if img.mode in ("P", "PA", "1", "CMYK", "YCbCr", "HSV", "LAB"):
                    arr = np.asarray(img.convert("RGB"))
                else:
                    arr = np.asarray(img)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        raise FormatError(
            f"{path!r}: cannot decode the image ({exc}); the file is truncated or corrupt: "
            f"replace it or remove it from the folder"
        ) from exc
    if arr.ndim == 3:
        arr = to_grey(arr, dtype)
    return arr.astype(dtype, copy=False)


class ImageFolderSource(FrameSource):
    """A folder of single-frame image files, one file per frame in natural order."""

    def __init__(
        self, path: str, shape: tuple[int, int, int], dtype: np.dtype, *, files: list[str]
    ) -> None:
        super().__init__(path, shape, dtype)
        self.files = list(files)

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        for i in range(start, stop):
            frame = read_image_file(self.files[i], self.dtype)
            if frame.shape != self.shape[1:]:
                raise FormatError(
                    f"{self.files[i]!r}: frame of shape {frame.shape}, expected "
                    f"{self.shape[1:]} like the first file of the folder; move it out of "
                    f"the folder or resize it"
                )
            out[i - start] = frame
        return out

    def __dask_tokenize__(self) -> tuple:
        stamps: list[tuple] = []
        for f in (self.files[0], self.files[-1]):
            try:
                st = os.stat(f)
                stamps.append((st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append(())
        return (*super().__dask_tokenize__(), len(self.files), tuple(stamps))


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe_video_packets(path: str) -> tuple[np.ndarray, float]:
    """Presentation times of every frame of a video's first video stream, not decoded.

    Runs ``ffmpeg -i PATH -map 0:v:0 -c copy -f framecrc -``: packets are
    demuxed and listed with their timestamps, never decoded.

    Returns
    -------
    times_s : numpy.ndarray of float64, shape (frame,)
        Presentation time of each frame in s, in display order, on the
        timeline of the file (``start_s`` is its origin).
    start_s : float
        The file's start time in s (what ffmpeg's ``-ss`` counts from).
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-i", path, "-map", "0:v:0", "-c", "copy"]
    cmd += ["-f", "framecrc", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        lines = err.strip().splitlines()
        raise FormatError(
            f"{path!r}: ffmpeg cannot read this video ({lines[-1] if lines else 'no output'}); "
            f"the file is truncated, corrupt or not a video: re-export it as .mp4 or .avi"
        )
    num, den = 1, 1
    stamps = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.startswith("#tb 0:"):
            num, den = (int(v) for v in line.split(":", 1)[1].strip().split("/"))
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 3 and fields[0] == "0":
                pts = fields[2] if fields[2].lstrip("-").isdigit() else fields[1]
                if pts.lstrip("-").isdigit():
                    stamps.append(int(pts))
    if not stamps:
        raise FormatError(f"{path!r}: ffmpeg found no video frames; re-export the video")
    found = re.search(r"start:\s*(-?[\d.]+)", err)
    start_s = float(found.group(1)) if found else 0.0
    times = np.sort(np.asarray(stamps, dtype=np.float64)) * (num / den)
    return times, start_s


class VideoFileSource(FrameSource):
    """An .mp4/.avi video decoded by ffmpeg (imageio-ffmpeg), one seek per block.

    Frames are decoded as 8-bit grey (ffmpeg's ``gray`` pixel format, i.e. the
    luma of colour videos).
    """

    def __init__(
        self,
        path: str,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        *,
        times_s: np.ndarray,
        start_s: float = 0.0,
    ) -> None:
        super().__init__(path, shape, dtype)
        self.times_s = np.asarray(times_s, dtype=np.float64)
        self.start_s = float(start_s)

    def _read(self, start: int, stop: int) -> np.ndarray:
        n = stop - start
        ny, nx = self.shape[1:]
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin"]
        if start > 0:
            # seek half-way between frames k-1 and k: ffmpeg decodes from the key
            # frame before and drops frames earlier than the seek point, so the
            # first frame out is exactly frame k (variable frame rates too)
            mid = 0.5 * (self.times_s[start - 1] + self.times_s[start]) - self.start_s
            cmd += ["-ss", f"{max(mid, 0.0):.9f}"]
        cmd += ["-i", self.path, "-map", "0:v:0", "-frames:v", str(n)]
        # passthrough: one output frame per stored frame (no duplicates to fill gaps)
        cmd += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise FormatError(
                f"{self.path!r}: ffmpeg failed decoding frames {start}-{stop - 1} "
                f"({err[-1] if err else 'no message'}); the video is truncated or corrupt: "
                f"re-export it"
            )
        got = len(proc.stdout) // (ny * nx)
        if got < n:
            raise FormatError(
                f"{self.path!r}: the video ended after {start + got} frames while its header "
                f"promised {self.shape[0]}; the file is truncated: re-export it"
            )
        return np.frombuffer(proc.stdout, np.uint8)[: n * ny * nx].reshape(n, ny, nx).copy()


class TemFileSource(FrameSource):
    """A .dm3/.dm4/.emd/.ser/.mrc image stack read through rosettasciio (lazy mode).

    Each block re-opens the file lazily and reads only its frames, so the
    source holds no open file handle and pickles to any Dask worker.
    """

    def __init__(
        self,
        path: str,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        *,
        module: str,
        signal_index: int,
        order: tuple[int, ...],
    ) -> None:
        super().__init__(path, shape, dtype)
        self.module = module
        self.signal_index = int(signal_index)
        self.order = tuple(int(i) for i in order)

    def _read(self, start: int, stop: int) -> np.ndarray:
        reader = importlib.import_module(self.module).file_reader
        try:
            data = reader(self.path, lazy=True)[self.signal_index]["data"]
            if self.order != tuple(range(len(self.order))):
                data = data.transpose(self.order)
            if data.ndim == 2:
                data = data[None]
            block = data[start:stop]
            if hasattr(block, "compute"):
                block = block.compute(scheduler="synchronous")
        except Exception as exc:  # noqa: BLE001 - rosettasciio raises many types
            raise FormatError(
                f"{self.path!r}: cannot read frames {start}-{stop - 1} ({type(exc).__name__}: "
                f"{exc}); the file is truncated or corrupt: copy it again from its source"
            ) from exc
        return np.asarray(block).astype(self.dtype, copy=False)
