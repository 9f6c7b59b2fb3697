"""Video input and output: open any supported video lazily, ingest it to Zarr.

A video is an :class:`xarray.DataArray` named ``image`` with dims
``("frame", "y", "x")``, backed by a Dask array chunked along ``frame`` only
(whole frames per chunk). Coordinates: ``frame`` (int64), ``time`` (s, on
``frame``), ``y`` and ``x`` (nm, pixel centres); every coordinate carries
``attrs["units"]``. Attributes: ``pixel_size_nm``, ``frame_interval_s``,
``source``, ``history`` (list of step records), ``pixel_size_known`` and
``frame_interval_known``, and ``dose_rate_e_per_A2_s`` where known.

Unknown calibration
    When neither the file nor the caller gives a pixel size, ``pixel_size_nm``
    is 1.0 (so ``y``/``x`` count pixels) and ``pixel_size_known`` is False;
    likewise ``frame_interval_s`` is 1.0 (``time`` counts frames) with
    ``frame_interval_known`` False. Physical results computed from such a video
    are in pixels and frames, not nm and s: pass ``pixel_size_nm=`` and
    ``frame_interval_s=`` to fix it.

Readers (opening reads headers only; frames are decoded inside Dask tasks):

=====================  =====================================================
multi-page TIFF        tifffile; contiguous uncompressed stacks by offset
                       reads, others page by page; pixel size from OME-XML,
                       ImageJ (``unit`` + resolution) or metric resolution
                       tags; frame interval from OME ``TimeIncrement`` or
                       ImageJ ``finterval``; per-frame OME ``DeltaT`` -> time
folder of frames       .png/.jpg/.jpeg/.tif/.tiff, natural sort order, one
                       file per frame; colour converted to grey (BT.601)
.zarr                  stores written by :func:`ingest` (values, coords and
                       attrs as written), or any Zarr holding one 3-D array
.mp4 / .avi            ffmpeg through imageio-ffmpeg; frame count and
                       per-frame times from the stream's packets (variable
                       frame rate or dropped frames -> gaps in ``time``);
                       decoded as 8-bit grey (luma) by seeking to each chunk
.dm3 .dm4 .emd .ser    rosettasciio in lazy mode; pixel size converted to nm
.mrc                   (implausible sizes, e.g. diffraction calibrations, are
                       dropped); frame interval from a time axis where
                       present; .ser per-frame time tags -> time (if increasing)
=====================  =====================================================

The caller's ``pixel_size_nm`` and ``frame_interval_s`` override the file's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from . import _readers
from ._io_formats import Header, read_header
from ._version import __version__
from .errors import InputError, StoreError
from .store import IMAGE, atomic_path, check_output_path, remove_path, write_ngff_metadata

__all__ = ["from_array", "open_video", "describe", "ingest", "video_chunks"]

logger = logging.getLogger(__name__)

_DIMS = ("frame", "y", "x")
_MB = 1e6


def _positive(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"`{name}` must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"`{name}` must be a positive finite number, got {value!r}")
    return v


def video_chunks(
    n_frames: int, frame_nbytes: int, chunks: int | str | None = "auto", *, chunk_mb: float = 32.0
) -> int:
    """Frames per chunk: ``chunks`` if an int, else whole frames totalling about ``chunk_mb`` MB.

    Parameters
    ----------
    n_frames : int
        Number of frames of the video.
    frame_nbytes : int
        Bytes of one frame.
    chunks : int or "auto"
        Frames per chunk, or "auto" for about ``chunk_mb`` MB (at least one frame).
    chunk_mb : float
        Target chunk size in MB (1e6 bytes) for ``"auto"``.

    Examples
    --------
    >>> video_chunks(1000, 2048 * 2048 * 2)
    3
    """
    if chunks is None or (isinstance(chunks, str) and chunks == "auto"):
        return max(1, min(n_frames, int(chunk_mb * _MB // max(frame_nbytes, 1))))
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise InputError(f"`chunks` must be 'auto' or a positive number of frames, got {chunks!r}")
    return max(1, min(int(chunks), n_frames))


def _frame_chunks(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())


def _extra_axis_message(shape: tuple[int, ...]) -> str:
    ndim = len(shape)
    if ndim >= 4 and shape[-1] in (3, 4):
        return (
            f"`array` must be 2-D (y, x) or 3-D (frame, y, x), got {ndim}-D shape {shape}: the "
            f"extra axis is the last one (axis {ndim - 1}, size {shape[-1]}), which looks like "
            f"colour channels; convert to grey first, e.g. array[..., :3] @ [0.299, 0.587, 0.114]"
        )
    extra = ", ".join(f"axis {i} (size {shape[i]})" for i in range(ndim - 3))
    return (
        f"`array` must be 2-D (y, x) or 3-D (frame, y, x), got {ndim}-D shape {shape}: the "
        f"extra axis is {extra}, before (frame, y, x); select one index (e.g. array[0]) or, if "
        f"the leading axes are all frames, reshape with array.reshape(-1, {shape[-2]}, {shape[-1]})"
    )


def from_array(
    array: Any,
    *,
    pixel_size_nm: float | None = None,
    frame_interval_s: float | None = None,
    time_s: Sequence[float] | np.ndarray | None = None,
    source: str = "array",
    dose_rate_e_per_A2_s: float | None = None,
    chunks: int | str | None = None,
    name: str = "image",
) -> xr.DataArray:
    """Wrap an in-memory or dask array as a video DataArray.

    Parameters
    ----------
    array : array_like or dask.array.Array, shape (frame, y, x) or (y, x)
        Frames of any real numeric dtype (kept as is; NaN/inf allowed). A 2-D
        image becomes a one-frame video.
    pixel_size_nm : float, optional
        Pixel size in nm. Unknown: 1.0 with ``attrs["pixel_size_known"] = False``.
    frame_interval_s : float, optional
        Time between frames in s. Unknown: 1.0 (or the median step of
        ``time_s``) with ``attrs["frame_interval_known"] = False`` when neither is given.
    time_s : sequence of float, shape (frame,), optional
        Time of each frame in s, strictly increasing (gaps mark dropped frames).
        Default ``frame * frame_interval_s``.
    source : str
        Where the frames come from (file path or "array").
    dose_rate_e_per_A2_s : float, optional
        Electron dose rate in e⁻/Å²/s, stored in attrs when given.
    chunks : int, "auto" or None
        Frames per chunk. None: numpy input gets "auto" (whole frames, about
        32 MB per chunk); dask input keeps its frame chunks. Chunks always span
        whole frames.
    name : str
        Name of the DataArray.

    Returns
    -------
    xarray.DataArray, dims (frame, y, x), dask-backed
        Coordinates frame (int64), time (s), y and x (nm, pixel centres).

    Raises
    ------
    InputError
        For 0-D, 1-D or 4-D+ arrays (naming the extra axis), non-numeric dtypes,
        or invalid calibration.

    Examples
    --------
    >>> import numpy as np
    >>> v = from_array(np.zeros((4, 8, 8), np.uint16), pixel_size_nm=0.5, frame_interval_s=0.25)
    >>> v.dims, v.sizes["frame"], float(v.x[0]), float(v.time[-1])
    (('frame', 'y', 'x'), 4, 0.25, 0.75)
    """
    if isinstance(array, xr.DataArray):
        array = array.data
    if not isinstance(array, da.Array):
        array = np.asarray(array)
    shape = tuple(int(s) for s in array.shape)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim != 3:
        if array.ndim > 3:
            raise InputError(_extra_axis_message(shape))
        raise InputError(
            f"`array` must be 2-D (y, x) or 3-D (frame, y, x), got {array.ndim}-D shape {shape}"
        )
    dtype = np.dtype(array.dtype)
    if not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype.kind == "b"
    ):
        raise InputError(
            f"`array` must have a real numeric dtype (integer or float), got {dtype}; convert "
            f"it, e.g. np.abs(array) for complex data"
        )
    n, ny, nx = (int(s) for s in array.shape)
    if n < 1 or ny < 1 or nx < 1:
        raise InputError(f"`array` must hold at least one 1 x 1 frame, got shape {shape}")

    pixel_known = pixel_size_nm is not None
    px = _positive(pixel_size_nm, "pixel_size_nm") if pixel_known else 1.0
    times = None
    if time_s is not None:
        times = np.asarray(time_s, dtype=np.float64).reshape(-1)
        if times.shape != (n,):
            raise InputError(
                f"`time_s` must give one time per frame ({n}), got {times.shape[0]} values"
            )
        if not np.all(np.isfinite(times)) or (n > 1 and np.any(np.diff(times) <= 0)):
            raise InputError(
                "`time_s` must be finite and strictly increasing (gaps mark dropped frames)"
            )
    interval_known = frame_interval_s is not None
    if interval_known:
        dt = _positive(frame_interval_s, "frame_interval_s")
    elif times is not None and n > 1:
        dt = float(np.median(np.diff(times)))
        interval_known = True
    else:
        dt = 1.0
    if times is None:
        times = np.arange(n, dtype=np.float64) * dt

    if isinstance(array, da.Array):
        if chunks is None:
            array = array.rechunk({1: -1, 2: -1})
        else:
            size = video_chunks(n, ny * nx * dtype.itemsize, chunks)
            array = array.rechunk((_frame_chunks(n, size), ny, nx))
    else:
        size = video_chunks(n, ny * nx * dtype.itemsize, "auto" if chunks is None else chunks)
        array = da.from_array(array, chunks=(size, ny, nx))

    attrs: dict[str, Any] = {
        "pixel_size_nm": px,
        "pixel_size_known": pixel_known,
        "frame_interval_s": dt,
        "frame_interval_known": interval_known,
        "source": str(source),
        "history": [],
    }
    if dose_rate_e_per_A2_s is not None:
        attrs["dose_rate_e_per_A2_s"] = _positive(dose_rate_e_per_A2_s, "dose_rate_e_per_A2_s")
    coords = {
        "frame": ("frame", np.arange(n, dtype=np.int64), {"units": "1"}),
        "time": ("frame", times, {"units": "s"}),
        "y": ("y", (np.arange(ny) + 0.5) * px, {"units": "nm"}),
        "x": ("x", (np.arange(nx) + 0.5) * px, {"units": "nm"}),
    }
    return xr.DataArray(array, dims=_DIMS, coords=coords, attrs=attrs, name=name)


def _as_frame_array(header: Header, chunks: int | str | None) -> da.Array:
    """Lazy dask array (frame, y, x) of a header's source, whole frames per chunk."""
    src = header.source
    n, ny, nx = (int(s) for s in src.shape)
    dtype = np.dtype(src.dtype)
    if (chunks is None or chunks == "auto") and header.frames_per_chunk:
        size = min(n, header.frames_per_chunk)  # follow the storage chunks
    else:
        size = video_chunks(n, ny * nx * dtype.itemsize, "auto" if chunks is None else chunks)
    chunk_spec = (_frame_chunks(n, size), (ny,), (nx,))
    if isinstance(src, _readers.FrameSource):
        token = dask.base.tokenize(src, size)
        return da.from_array(
            src,
            chunks=chunk_spec,
            name=f"open_video-{token}",
            meta=np.empty((0, 0, 0), dtype),
            asarray=False,
            fancy=False,
            lock=False,
        )
    # dask arrays from zarr / rosettasciio: whole frames, then a counting pass-through
    arr = src.rechunk(chunk_spec)
    return arr.map_blocks(_readers.count_block, dtype=dtype, meta=np.empty((0, 0, 0), dtype))


def open_video(
    path: str | os.PathLike,
    *,
    pixel_size_nm: float | None = None,
    frame_interval_s: float | None = None,
    chunks: int | Literal["auto"] = "auto",
) -> xr.DataArray:
    """Open a video file, frame folder or Zarr store lazily as a video DataArray.

    Opening reads headers only; frames are decoded inside Dask tasks when the
    data is computed. Intensities are returned as stored (no inversion or
    rescaling, whatever the contrast polarity).

    Parameters
    ----------
    path : str or path-like
        A multi-page TIFF, a folder of PNG/JPEG/TIFF frames, a Zarr store, an
        .mp4/.avi video, or a .dm3/.dm4/.emd/.ser/.mrc file (see the module doc).
    pixel_size_nm : float, optional
        Pixel size in nm; overrides the file's calibration.
    frame_interval_s : float, optional
        Time between frames in s; overrides the file's (then ``time`` is uniform).
    chunks : int or "auto"
        Frames per chunk, or "auto" for whole frames totalling about 32 MB
        (Zarr stores: their own frame chunking).

    Returns
    -------
    xarray.DataArray, dims (frame, y, x), dask-backed
        See :func:`from_array` for coordinates and attributes. For stores
        written by :func:`ingest`, values, coordinates and attributes are those
        written.

    Raises
    ------
    FormatError
        Missing path, unsupported extension, empty, truncated or corrupt file,
        a folder mixing frame sizes, data with an extra axis, absurd header dims.
    """
    if isinstance(path, bytes):  # a file name that is not valid UTF-8, as raw bytes
        path = os.fsdecode(path)
    header = read_header(path)
    data = _as_frame_array(header, chunks)
    video = _video_from_header(header, data, path, pixel_size_nm, frame_interval_s)
    # where the frames live (read by describe); encoding, not attrs: never written out
    video.encoding.update(lptem_path=os.path.abspath(path), lptem_format=header.format)
    return video


def _video_from_header(
    header: Header,
    data: da.Array,
    path: str | os.PathLike,
    pixel_size_nm: float | None,
    frame_interval_s: float | None,
) -> xr.DataArray:
    stored = header.attrs
    if stored and set(header.coords) == {"frame", "time", "y", "x"}:
        # our own store: restore values, coordinates and attributes as written
        if pixel_size_nm is None and frame_interval_s is None:
            coords = {k: (d, v, a) for k, (d, v, a) in header.coords.items()}
            return xr.DataArray(data, dims=_DIMS, coords=coords, attrs=dict(stored), name=IMAGE)
        known_px = stored.get("pixel_size_nm") if stored.get("pixel_size_known") else None
        known_dt = stored.get("frame_interval_known", False)
        keep_time = frame_interval_s is None and known_dt
        video = from_array(
            data,
            pixel_size_nm=pixel_size_nm if pixel_size_nm is not None else known_px,
            frame_interval_s=frame_interval_s
            if frame_interval_s is not None
            else (stored.get("frame_interval_s") if keep_time else None),
            time_s=header.time_s if keep_time else None,
            source=str(stored.get("source", path)),
            dose_rate_e_per_A2_s=stored.get("dose_rate_e_per_A2_s"),
            name=IMAGE,
        )
        video.attrs["history"] = list(stored.get("history", []))
        return video
    # the caller's interval makes time uniform; else the file's per-frame times
    time_s = header.time_s if frame_interval_s is None else None
    interval = frame_interval_s if frame_interval_s is not None else header.frame_interval_s
    return from_array(
        data,
        pixel_size_nm=pixel_size_nm if pixel_size_nm is not None else header.pixel_size_nm,
        frame_interval_s=interval,
        time_s=time_s,
        source=os.path.abspath(path),
        name=IMAGE,
    )


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def describe(
    path_or_video: str | os.PathLike | xr.DataArray,
    *,
    pixel_size_nm: float | None = None,
    frame_interval_s: float | None = None,
) -> dict[str, Any]:
    """Summarise a video: what ``lptem info`` prints.

    Reads headers, and computes (streaming, chunk by chunk) the number of
    frames holding NaN or inf.

    Parameters
    ----------
    path_or_video : path or xarray.DataArray
        A video file/folder/store, or a video DataArray (as returned by
        :func:`open_video`, which records the path it read).
    pixel_size_nm, frame_interval_s : float, optional
        Calibration overriding the file's (paths only).

    Returns
    -------
    dict
        ``path``, ``format``, ``frames``, ``shape``, ``dtype``, ``chunks``
        (frames per chunk), ``pixel_size_nm``, ``pixel_size_known``,
        ``frame_interval_s``, ``frame_interval_known``, ``duration_s``,
        ``size_on_disk_bytes`` (None for in-memory arrays), ``nonfinite_frames``.
    """
    path: Path | None
    if isinstance(path_or_video, xr.DataArray):
        video = path_or_video
        recorded = video.encoding.get("lptem_path")
        path = Path(recorded) if recorded and Path(recorded).exists() else None
        fmt = str(video.encoding.get("lptem_format", "array")) if path is not None else "array"
    else:
        if isinstance(path_or_video, bytes):
            path_or_video = os.fsdecode(path_or_video)
        video = open_video(
            path_or_video, pixel_size_nm=pixel_size_nm, frame_interval_s=frame_interval_s
        )
        path = Path(path_or_video)
        fmt = str(video.encoding["lptem_format"])
    data = video.data
    if np.issubdtype(video.dtype, np.floating) or np.issubdtype(video.dtype, np.complexfloating):
        bad = ~da.isfinite(data) if isinstance(data, da.Array) else ~np.isfinite(data)
        nonfinite = int(
            bad.any(axis=(1, 2)).sum().compute()
            if isinstance(bad, da.Array)
            else bad.any(axis=(1, 2)).sum()
        )
    else:
        nonfinite = 0
    chunks = video.chunks[0] if video.chunks is not None else (video.sizes["frame"],)
    time = np.asarray(video["time"].values)
    return {
        "path": str(path) if path is not None else None,
        "format": fmt,
        "frames": int(video.sizes["frame"]),
        "shape": tuple(int(s) for s in video.shape),
        "dtype": str(video.dtype),
        "chunks": tuple(int(c) for c in chunks),
        "pixel_size_nm": float(video.attrs.get("pixel_size_nm", 1.0)),
        "pixel_size_known": bool(video.attrs.get("pixel_size_known", False)),
        "frame_interval_s": float(video.attrs.get("frame_interval_s", 1.0)),
        "frame_interval_known": bool(video.attrs.get("frame_interval_known", False)),
        "duration_s": float(time[-1] - time[0]) if time.size > 1 else 0.0,
        "size_on_disk_bytes": _size_on_disk(path) if path is not None else None,
        "nonfinite_frames": nonfinite,
    }


#: threads used by ingest under the local threaded scheduler: each holds about
#: three chunks (read, encode, compressed), so memory stays bounded whatever the core count
INGEST_THREADS = 4


def _compute_bounded(obj: Any) -> None:
    """Compute ``obj``; under the local threaded scheduler with at most INGEST_THREADS threads."""
    try:
        from distributed import default_client

        default_client()
        dask.compute(obj)  # a distributed cluster bounds memory per worker itself
        return
    except (ImportError, ValueError):
        pass
    scheduler = dask.config.get("scheduler", None)
    if scheduler in (None, "threads", "threading"):
        workers = max(1, min(INGEST_THREADS, os.cpu_count() or 1))
        dask.compute(obj, scheduler="threads", num_workers=workers)
    else:
        dask.compute(obj)


def _ingest_record(src: str, params: dict) -> dict:
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return {
        "step": "ingest",
        "package": "lptem-dask",
        "version": __version__,
        "source": src,
        "config": params,
        "config_sha256": hashlib.sha256(blob).hexdigest(),
    }


def _commit_store(
    _written: Any,
    tmp: str,
    final: str,
    overwrite: bool,
    pixel_size_nm: float,
    frame_interval_s: float,
) -> str:
    """Add OME-Zarr metadata to a completely written temporary store, move it into place."""
    write_ngff_metadata(tmp, pixel_size_nm=pixel_size_nm, frame_interval_s=frame_interval_s)
    with atomic_path(final, overwrite=overwrite) as target:
        os.replace(tmp, target)
    return final


def ingest(
    src: str | os.PathLike | xr.DataArray,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    chunk_mb: float = 32.0,
    compression_level: int = 3,
    pixel_size_nm: float | None = None,
    frame_interval_s: float | None = None,
    compute: bool = True,
) -> Path | Any:
    """Stream a video into a chunked, zstd-compressed Zarr v3 store.

    The store at ``dst`` is a group directory with the array ``image``
    (frame, y, x) written by :meth:`xarray.Dataset.to_zarr`, its coordinates
    and attributes (calibration, source, history with an ``ingest`` record),
    and OME-Zarr 0.5 ``multiscales`` metadata on the group (for NGFF viewers).
    Frames are read and written chunk by chunk, so memory stays bounded by a
    few chunks, not by the video length. The store is written to a temporary
    sibling and renamed into place when complete.

    Parameters
    ----------
    src : path or xarray.DataArray
        Anything :func:`open_video` reads, or a video DataArray.
    dst : path
        Output store directory (conventionally ``NAME.zarr``).
    overwrite : bool
        Replace an existing ``dst``; otherwise it is refused and left untouched.
    chunk_mb : float
        Target chunk size in MB (whole frames; at least one frame per chunk).
        The default 32 gives chunks of 16-64 MB for frames up to 32 MB.
    compression_level : int
        zstd level (1-22).
    pixel_size_nm, frame_interval_s : float, optional
        Calibration overriding the source's.
    compute : bool
        If False, return a :class:`dask.delayed.Delayed` that writes and
        commits the store when computed (building it computes nothing; the
        store's metadata is written to the temporary path immediately).

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        ``dst`` when computed, else the Delayed.

    Raises
    ------
    OutputExistsError
        If ``dst`` exists and ``overwrite`` is False (nothing is touched).
    FormatError, InputError
        For unreadable input or bad parameters.
    """
    from zarr.codecs import ZstdCodec

    final = check_output_path(dst, overwrite=overwrite, what="ingest output")
    chunk_mb = _positive(chunk_mb, "chunk_mb")
    if not (isinstance(compression_level, (int, np.integer)) and 1 <= compression_level <= 22):
        raise InputError(f"`compression_level` must be an integer 1-22, got {compression_level!r}")
    if isinstance(src, xr.DataArray):
        video = src
        if pixel_size_nm is not None or frame_interval_s is not None:
            video = from_array(
                video.data,
                pixel_size_nm=pixel_size_nm
                if pixel_size_nm is not None
                else (
                    video.attrs.get("pixel_size_nm")
                    if video.attrs.get("pixel_size_known")
                    else None
                ),
                frame_interval_s=frame_interval_s,
                time_s=None if frame_interval_s is not None else video["time"].values,
                source=str(video.attrs.get("source", "array")),
            )
        src_name = str(video.attrs.get("source", "array"))
    else:
        video = open_video(src, pixel_size_nm=pixel_size_nm, frame_interval_s=frame_interval_s)
        src_name = str(src)
    n, ny, nx = (int(s) for s in video.shape)
    size = video_chunks(n, ny * nx * video.dtype.itemsize, "auto", chunk_mb=chunk_mb)
    data = video.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(size, ny, nx))
    video = video.copy(data=data.rechunk((_frame_chunks(n, size), ny, nx)))
    params = {
        "chunk_mb": chunk_mb,
        "compression_level": int(compression_level),
        "pixel_size_nm": pixel_size_nm,
        "frame_interval_s": frame_interval_s,
    }
    video.attrs = {
        **video.attrs,
        "history": [*video.attrs.get("history", []), _ingest_record(src_name, params)],
    }
    px = float(video.attrs.get("pixel_size_nm", 1.0))
    dt = float(video.attrs.get("frame_interval_s", 1.0))
    ds = video.to_dataset(name=IMAGE)
    encoding = {
        IMAGE: {
            "chunks": (size, ny, nx),
            "compressors": (ZstdCodec(level=int(compression_level)),),
        }
    }
    if compute:
        try:
            with atomic_path(final, overwrite=overwrite) as tmp:
                write = ds.to_zarr(
                    tmp,
                    mode="w",
                    zarr_format=3,
                    consolidated=False,
                    encoding=encoding,
                    compute=False,
                )
                _compute_bounded(write)
                write_ngff_metadata(tmp, pixel_size_nm=px, frame_interval_s=dt)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise
            raise StoreError(
                f"writing {str(final)!r} failed: {exc.strerror or exc}; the partial store was "
                "removed and nothing else was touched; free disk space (or raise the file-size "
                "limit) and run the ingest again"
            ) from exc
        logger.info("ingested %s -> %s (%d frames, %d per chunk)", src_name, final, n, size)
        return final
    tmp = final.with_name(f".tmp-{final.name}-{uuid.uuid4().hex[:12]}")
    try:
        write = ds.to_zarr(
            tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding, compute=False
        )
    except BaseException:
        remove_path(tmp)
        raise
    return dask.delayed(_commit_store, pure=False)(write, str(tmp), str(final), overwrite, px, dt)
