"""Header parsing per file format for :mod:`lptem_dask.io` (private).

Each ``read_header_*`` function reads only headers and returns a
:class:`Header`: a lazy frame source (a :class:`~lptem_dask._readers.FrameSource`
or a lazy dask array), and the calibration the file carries (pixel size in nm,
frame interval in s, per-frame times in s), each ``None`` where absent.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.base
import numpy as np

from ._readers import (
    FrameSource,
    ImageFolderSource,
    TemFileSource,
    TiffContiguousSource,
    TiffPageSource,
    VideoFileSource,
    ZarrChunks,
    check_frame_dims,
    probe_video_packets,
)
from .errors import FormatError, LptemError, require

__all__ = [
    "Header",
    "TIFF_SUFFIXES",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "TEM_SUFFIXES",
    "SUPPORTED",
    "detect_format",
    "read_header",
    "length_to_nm",
    "time_to_s",
]

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *TIFF_SUFFIXES)
VIDEO_SUFFIXES = (".mp4", ".avi")
TEM_SUFFIXES = (".dm3", ".dm4", ".emd", ".ser", ".mrc")
SUPPORTED = (
    "multi-page .tif/.tiff, a folder of .png/.jpg/.tif frames, a .zarr store, "
    ".mp4/.avi, .dm3/.dm4/.emd/.ser/.mrc"
)

_LENGTH_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "pm": 1e-3,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "\\u00b5m": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "mm": 1e6,
    "cm": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "meters": 1e9,
}
_TIME_S = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
    "min": 60.0,
    "h": 3600.0,
}
#: pixel sizes outside this range (nm) are not a real-space calibration
#: (e.g. reciprocal-space diffraction calibrations mislabelled as lengths)
PLAUSIBLE_PIXEL_NM = (1e-4, 1e6)


@dataclass
class Header:
    """What opening a file learned from its header (no frames decoded)."""

    path: str
    format: str
    source: Any  # FrameSource or dask array (frame, y, x)
    pixel_size_nm: float | None = None
    frame_interval_s: float | None = None
    time_s: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)  # full attrs (own zarr stores only)
    coords: dict = field(default_factory=dict)  # coords with attrs (own zarr stores only)
    frames_per_chunk: int | None = None  # storage chunking to follow for chunks="auto"


def length_to_nm(value: float, unit: str | None) -> float | None:
    """Convert a length in ``unit`` to nm; None for unknown units or implausible sizes."""
    if unit is None:
        return None
    factor = _LENGTH_NM.get(str(unit).strip().lower().replace("\u00b5", "µ"))
    if factor is None:
        factor = _LENGTH_NM.get(str(unit).strip())
    if factor is None or not np.isfinite(value) or value <= 0:
        return None
    nm = float(value) * factor
    if not (PLAUSIBLE_PIXEL_NM[0] <= nm <= PLAUSIBLE_PIXEL_NM[1]):
        logger.warning(
            "ignoring implausible pixel size %g nm (%g %s); not a real-space calibration",
            nm,
            value,
            unit,
        )
        return None
    return nm


def time_to_s(value: float, unit: str | None) -> float | None:
    """Convert a duration in ``unit`` to s; None for unknown units or non-positive values."""
    if unit is None:
        return None
    factor = _TIME_S.get(str(unit).strip().lower())
    if factor is None or not np.isfinite(value) or value <= 0:
        return None
    return float(value) * factor


def _is_zarr_dir(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or any(
        (path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray")
    )


def detect_format(path: str | os.PathLike) -> str:
    """Name of the reader for ``path``: tiff, image, image-folder, zarr, video, tem.

    Raises
    ------
    FormatError
        If the path is missing, empty, or of an unsupported kind.
    """
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{str(p)!r} does not exist; check the path (expected {SUPPORTED})")
    if p.is_dir():
        return "zarr" if _is_zarr_dir(p) else "image-folder"
    if p.stat().st_size == 0:
        raise FormatError(f"{str(p)!r} is an empty (zero-byte) file; copy it again from its source")
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in TEM_SUFFIXES:
        return "tem"
    if suffix == ".emi":
        raise FormatError(
            f"{str(p)!r}: a TIA .emi file holds metadata only; open the .ser file next to it "
            f"(e.g. {p.stem}_1.ser)"
        )
    raise FormatError(
        f"{str(p)!r}: unsupported file extension {suffix or '(none)'!r}; supported: "
        f"{SUPPORTED}; convert the file to TIFF or pass the array to lptem_dask.from_array"
    )


def read_header(path: str | os.PathLike) -> Header:
    """Open ``path`` lazily (headers only) with the reader its format needs."""
    kind = detect_format(path)
    p = str(path)
    if kind == "tiff":
        return read_header_tiff(p)
    if kind == "image":
        return read_header_images(p, [p], fmt="image")
    if kind == "image-folder":
        return read_header_folder(p)
    if kind == "zarr":
        return read_header_zarr(p)
    if kind == "video":
        return read_header_video(p)
    return read_header_tem(p)


# --------------------------------------------------------------------- TIFF


def _frame_layout(path: str, shape: tuple, axes: str) -> tuple[int, int, int, int, bool]:
    """(n_frames, ny, nx, samples, samples_last) from a tifffile series shape and axes."""
    if "Y" not in axes or "X" not in axes:
        raise FormatError(f"{path!r}: TIFF series has axes {axes!r}, expected Y and X axes")
    sizes = dict(zip(axes, shape, strict=True))
    extra = [(a, int(s)) for a, s in sizes.items() if a not in "YXS" and int(s) > 1]
    if len(extra) > 1:
        names = ", ".join(f"{a} (size {s})" for a, s in extra)
        raise FormatError(
            f"{path!r}: TIFF has {len(extra) + 2}-D data with axes {axes!r}: more than one "
            f"axis besides Y and X ({names}); the extra axis is {extra[1][0]!r}: export a "
            f"single (frame, y, x) stack, e.g. one channel or one z-slice"
        )
    n_frames = int(np.prod([s for a, s in sizes.items() if a not in "YXS"] or [1]))
    samples = int(sizes.get("S", 1))
    samples_last = "S" not in axes or axes.index("S") == len(axes) - 1
    return n_frames, int(sizes["Y"]), int(sizes["X"]), samples, samples_last


def _tiff_calibration(tif: Any, path: str) -> tuple[float | None, float | None, np.ndarray | None]:
    """Pixel size (nm), frame interval (s), per-frame times (s) from ImageJ/OME/resolution tags."""
    pixel_nm = interval_s = None
    times = None
    page = tif.pages.first
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
            pix = next(el for el in root.iter() if el.tag.endswith("Pixels"))
            if "PhysicalSizeX" in pix.attrib:
                pixel_nm = length_to_nm(
                    float(pix.attrib["PhysicalSizeX"]), pix.attrib.get("PhysicalSizeXUnit", "µm")
                )
            if "TimeIncrement" in pix.attrib:
                interval_s = time_to_s(
                    float(pix.attrib["TimeIncrement"]), pix.attrib.get("TimeIncrementUnit", "s")
                )
            planes = [el for el in pix if el.tag.endswith("Plane") and "DeltaT" in el.attrib]
            if planes:
                planes.sort(key=lambda el: int(el.attrib.get("TheT", 0)))
                factor = _TIME_S.get(planes[0].attrib.get("DeltaTUnit", "s").lower())
                if factor is not None:
                    times = np.array([float(el.attrib["DeltaT"]) for el in planes]) * factor
        except (ET.ParseError, StopIteration, ValueError) as exc:
            logger.warning("%s: ignoring unreadable OME-XML metadata (%s)", path, exc)
    if tif.is_imagej and tif.imagej_metadata:
        meta = tif.imagej_metadata
        if interval_s is None and "finterval" in meta:
            interval_s = time_to_s(float(meta["finterval"]), meta.get("tunit", "s"))
        unit = meta.get("unit")
        if pixel_nm is None and unit and "XResolution" in page.tags:
            num, den = page.tags["XResolution"].value
            if num > 0:
                pixel_nm = length_to_nm(den / num, unit)
    if pixel_nm is None and "XResolution" in page.tags and "ResolutionUnit" in page.tags:
        # only metric resolution units; inch resolutions are display DPI, not calibration
        unit = {3: "cm", 4: "mm", 5: "um"}.get(int(page.tags["ResolutionUnit"].value))
        num, den = page.tags["XResolution"].value
        if unit and num > 0:
            pixel_nm = length_to_nm(den / num, unit)
    return pixel_nm, interval_s, times


def read_header_tiff(path: str) -> Header:
    """Header of a (multi-page) TIFF stack: shape, dtype, layout, calibration."""
    import tifffile

    size = os.path.getsize(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise FormatError(f"{path!r}: the TIFF holds no image; re-export it")
            series = tif.series[0]
            n, ny, nx, samples, samples_last = _frame_layout(path, series.shape, series.axes)
            check_frame_dims(path, n, ny, nx)
            file_dtype = series.dtype.newbyteorder(tif.byteorder)
            dtype = series.dtype.newbyteorder("=")
            offset = series.dataoffset
            pixel_nm, interval_s, times = _tiff_calibration(tif, path)
            source: FrameSource
            if offset is not None and samples_last:
                nbytes = n * ny * nx * samples * dtype.itemsize
                if offset + nbytes > size:
                    raise FormatError(
                        f"{path!r}: the TIFF header promises {n} frames of {ny} x {nx} "
                        f"{dtype} ({offset + nbytes} bytes) but the file has {size} bytes; it "
                        f"is truncated: copy it again from its source"
                    )
                source = TiffContiguousSource(
                    path,
                    (n, ny, nx),
                    dtype,
                    offset=offset,
                    file_dtype=file_dtype,
                    samples=samples,
                )
            else:
                pages = list(series.pages)
                if len(pages) != n:
                    raise FormatError(
                        f"{path!r}: the TIFF series has {len(pages)} pages for {n} frames; "
                        f"it is truncated or not a stack of 2-D frames: re-export it"
                    )
                for i, page in enumerate(tif.pages):
                    ends = [
                        o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)
                    ]
                    if ends and max(ends) > size:
                        raise FormatError(
                            f"{path!r}: page {i} lies beyond the end of the file ({size} bytes); "
                            f"the TIFF is truncated: copy it again from its source"
                        )
                source = TiffPageSource(path, (n, ny, nx), dtype, samples=samples)
    except FormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for bad files
        raise FormatError(
            f"{path!r}: not a readable TIFF ({type(exc).__name__}: {exc}); the file is "
            f"truncated or corrupt: copy it again from its source"
        ) from exc
    if times is not None and len(times) != n:
        times = None
    return Header(path, "tiff", source, pixel_nm, interval_s, times)


# ------------------------------------------------------------- image folders


def _image_info(path: str) -> tuple[tuple[int, int], np.dtype]:
    """(shape (y, x), grey dtype) of one image file from its header only."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                shape, dtype = page.shape, page.dtype
                if len(shape) == 3:
                    if page.axes.startswith("S"):
                        shape = shape[1:]
                    else:
                        shape = shape[:2]
                return (int(shape[0]), int(shape[1])), np.dtype(dtype)
        from PIL import Image

        with Image.open(path) as img:
            w, h = img.size
            mode = img.mode
    except Exception as exc:  # noqa: BLE001 - any header failure is a bad file
        raise FormatError(
            f"{path!r}: not a readable image ({type(exc).__name__}: {exc}); replace it or "
            f"remove it from the folder"
        ) from exc
    dtypes = {
        "I;16": np.uint16,
        "I;16B": np.uint16,
        "I;16L": np.uint16,
        "I": np.int32,
        "F": np.float32,
    }
    return (int(h), int(w)), np.dtype(dtypes.get(mode, np.uint8))


def read_header_images(path: str, files: list[str], *, fmt: str) -> Header:
    """Header of a list of single-frame image files (one frame each)."""
    if os.path.getsize(files[0]) == 0:
        raise FormatError(f"{files[0]!r} is an empty (zero-byte) file; replace or remove it")
    shape, dtype = _image_info(files[0])
    for f in files[1:]:
        if os.path.getsize(f) == 0:
            raise FormatError(f"{f!r} is an empty (zero-byte) file; replace or remove it")
        s, d = _image_info(f)
        if s != shape or d != dtype:
            raise FormatError(
                f"{f!r}: frame of {s[0]} x {s[1]} pixels ({d}), but the first frame "
                f"{Path(files[0]).name!r} is {shape[0]} x {shape[1]} ({dtype}); all frames of "
                f"a folder must share size and type: move the odd file out of {path!r}"
            )
    check_frame_dims(path, len(files), *shape)
    source = ImageFolderSource(path, (len(files), *shape), dtype, files=files)
    return Header(path, fmt, source)


def _natural_key(path: str) -> list:
    """Natural sort key of a file name: ``frame2`` before ``frame10``."""
    return [
        (0, int(t), "") if t.isdigit() else (1, 0, t.lower())
        for t in re.split(r"(\d+)", Path(path).name)
    ]


def read_header_folder(path: str) -> Header:
    """Header of a folder of PNG/JPEG/TIFF frames in natural sort order."""
    files = [
        str(p)
        for p in Path(path).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    if not files:
        raise FormatError(
            f"{path!r}: folder holds no .png/.jpg/.jpeg/.tif/.tiff frames; point to a folder "
            f"of frames, a video file or a .zarr store"
        )
    try:
        import natsort

        files = natsort.natsorted(files, alg=natsort.ns.PATH)
    except ImportError:  # pragma: no cover - natsort is a dependency; same order for names
        files = sorted(files, key=_natural_key)
    return read_header_images(path, files, fmt="image-folder")


# ---------------------------------------------------------------------- zarr


def _clean_attrs(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if not k.startswith("_") and k != "coordinates"}


def read_header_zarr(path: str) -> Header:
    """Header of a Zarr store: an ingested store (group with ``image``) or any 3-D array."""
    try:
        return _read_header_zarr(path)
    except LptemError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt metadata of any member
        raise FormatError(
            f"{path!r}: not a readable Zarr store ({type(exc).__name__}: {exc}); check the path "
            f"or write the store again with lptem ingest"
        ) from exc


def _read_header_zarr(path: str) -> Header:
    import dask.array as da
    import zarr

    node = zarr.open(path, mode="r")
    coords: dict = {}
    attrs: dict = {}
    if isinstance(node, zarr.Array):
        arr = node
    else:
        if "image" in node and isinstance(node["image"], zarr.Array):
            arr = node["image"]
        else:
            arrays = [(k, a) for k, a in node.arrays() if a.ndim == 3]
            if len(arrays) != 1:
                names = sorted(k for k, _ in node.arrays())
                raise FormatError(
                    f"{path!r}: expected a Zarr group with an `image` array or exactly one 3-D "
                    f"array, found arrays {names}; open the one you want with zarr and pass it "
                    f"to lptem_dask.from_array"
                )
            arr = arrays[0][1]
        dims: Any = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get(
            "_ARRAY_DIMENSIONS"
        )
        if dims is not None and tuple(dims) == ("frame", "y", "x"):
            attrs = _clean_attrs(dict(arr.attrs))
            for name in ("frame", "time", "y", "x"):
                c = node.get(name)
                if isinstance(c, zarr.Array):
                    cdims: Any = getattr(c.metadata, "dimension_names", None) or c.attrs.get(
                        "_ARRAY_DIMENSIONS"
                    )
                    coords[name] = (tuple(cdims or ("frame",)), c[...], _clean_attrs(dict(c.attrs)))
    if arr.ndim not in (2, 3):
        raise FormatError(
            f"{path!r}: Zarr array has {arr.ndim} dimensions {arr.shape}; expected (frame, y, x) "
            f"or (y, x)"
        )
    shape = arr.shape if arr.ndim == 3 else (1, *arr.shape)
    check_frame_dims(path, *shape)
    data = da.from_array(
        ZarrChunks(arr, path),
        chunks=arr.chunks,
        name=f"from-zarr-{dask.base.tokenize(path, arr.shape, arr.chunks, str(arr.dtype))}",
        meta=np.empty((0,) * arr.ndim, arr.dtype),
        asarray=False,
        fancy=False,
        lock=False,
    )
    if data.ndim == 2:
        data = data[None]
    pixel_nm = attrs.get("pixel_size_nm") if attrs.get("pixel_size_known", True) else None
    interval = attrs.get("frame_interval_s") if attrs.get("frame_interval_known", True) else None
    times = coords["time"][1] if "time" in coords else None
    stored = int(arr.chunks[0]) if arr.ndim == 3 else 1
    return Header(
        path,
        "zarr",
        data,
        pixel_nm,
        interval,
        times,
        attrs=attrs,
        coords=coords,
        frames_per_chunk=stored,
    )


# --------------------------------------------------------------------- video


def read_header_video(path: str) -> Header:
    """Header of an .mp4/.avi: frame size and per-frame times from packets (not decoded)."""
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(path, pix_fmt="gray", input_params=["-nostdin"])
        try:
            meta = next(gen)
        finally:
            gen.close()
    except Exception as exc:  # noqa: BLE001 - ffmpeg failures
        raise FormatError(
            f"{path!r}: ffmpeg cannot read this video ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); the file is "
            f"truncated, corrupt or not a video: re-export it as .mp4 or .avi"
        ) from exc
    w, h = meta["size"]
    times, start_s = probe_video_packets(path)
    n = len(times)
    check_frame_dims(path, n, int(h), int(w))
    interval: float | None = None
    time_s: np.ndarray | None = None
    if n > 1:
        steps = np.diff(times)
        interval = float(np.median(steps))
        if interval <= 0:
            interval = None
        elif np.any(np.abs(steps - interval) > 0.01 * interval):
            time_s = times - times[0]  # variable frame rate or dropped frames: gaps in time
    else:
        fps = float(meta.get("fps") or 0.0)
        interval = 1.0 / fps if fps > 0 and np.isfinite(fps) else None
    source = VideoFileSource(
        path, (n, int(h), int(w)), np.dtype(np.uint8), times_s=times, start_s=start_s
    )
    return Header(path, Path(path).suffix.lower().lstrip("."), source, None, interval, time_s)


# ----------------------------------------------------- TEM via rosettasciio

_RSCIIO_MODULES = {
    ".dm3": "rsciio.digitalmicrograph",
    ".dm4": "rsciio.digitalmicrograph",
    ".emd": "rsciio.emd",
    ".ser": "rsciio.tia",
    ".mrc": "rsciio.mrc",
}
_MRC_ITEMSIZE = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}


def _check_mrc_header(path: str) -> None:
    """Refuse MRC files whose header dims are absurd or larger than the file."""
    size = os.path.getsize(path)
    if size < 1024:
        raise FormatError(
            f"{path!r}: {size} bytes is shorter than the 1024-byte MRC header; the file is "
            f"truncated or not an MRC file: copy it again from its source"
        )
    with open(path, "rb") as fh:
        head = fh.read(1024)
    words = np.frombuffer(head[:96], "<i4")
    if not (0 < words[0] < 2**24 and 0 < words[1] < 2**24):  # try big-endian
        words = np.frombuffer(head[:96], ">i4")
    nx, ny, nz, mode = (int(v) for v in words[:4])
    next_bytes = int(words[23])
    if mode not in _MRC_ITEMSIZE:
        raise FormatError(
            f"{path!r}: MRC mode {mode} is not an image mode (expected one of "
            f"{sorted(_MRC_ITEMSIZE)}); the header is corrupt or this is not an MRC file: copy "
            f"it again from its source"
        )
    check_frame_dims(path, max(nz, 0), ny, nx)
    need = 1024 + max(next_bytes, 0) + nx * ny * nz * _MRC_ITEMSIZE[mode]
    if need > size:
        raise FormatError(
            f"{path!r}: the MRC header promises {nz} frames of {ny} x {nx} (mode {mode}), "
            f"{need} bytes, but the file has {size}; it is truncated or its header is corrupt: "
            f"copy it again from its source"
        )


def ser_frame_times(path: str) -> np.ndarray | None:
    """Per-frame acquisition times (s, from the first) of a TIA .ser series, if increasing.

    TIA stores a time tag (whole seconds since 1970) with every element; the
    times are returned only when they strictly increase (1-s resolution makes
    faster series repeat a second; those keep a uniform time axis). Headers
    and tags only are read.
    """
    try:
        from rsciio.tia._api import get_header_dtype_list

        with open(path, "rb") as fh:
            header = np.fromfile(fh, dtype=np.dtype(get_header_dtype_list(fh)), count=1)
            total = int(header["TotalNumberElements"][0])
            valid = int(header["ValidNumberElements"][0])
            if not (0 < valid <= total <= 10**8):
                return None
            off_dtype = "<u4" if int(header["SeriesVersion"][0]) <= 528 else "<u8"
            fh.seek(int(header["OffsetArrayOffset"][0]))
            np.fromfile(fh, off_dtype, total)  # data offsets
            tag_offsets = np.fromfile(fh, off_dtype, total)[:valid]
            stamps = []
            for off in tag_offsets:
                fh.seek(int(off))
                tag = np.fromfile(fh, "<u2", 2)
                stamp = np.fromfile(fh, "<u4", 1)
                if tag.size < 2 or stamp.size < 1 or int(tag[0]) not in (0x4152, 0x4142):
                    return None
                stamps.append(int(stamp[0]))
    except Exception as exc:  # noqa: BLE001 - optional metadata: never fail the open
        logger.debug("%s: no per-frame times (%s)", path, exc)
        return None
    times = np.asarray(stamps, dtype=np.float64)
    if times.size < 2 or np.any(np.diff(times) <= 0):
        return None
    return times - times[0]


def _axis_order(axes: list[dict]) -> list[dict]:
    if all("index_in_array" in a for a in axes):
        return sorted(axes, key=lambda a: int(a["index_in_array"]))
    return list(axes)


def read_header_tem(path: str) -> Header:
    """Header of a .dm3/.dm4/.emd/.ser/.mrc file, through rosettasciio in lazy mode."""
    suffix = Path(path).suffix.lower()
    require("rsciio", "tem", f"Reading {suffix} files")
    if suffix == ".mrc":
        _check_mrc_header(path)
    reader = importlib.import_module(_RSCIIO_MODULES[suffix]).file_reader
    try:
        signals = reader(path, lazy=True)
    except Exception as exc:  # noqa: BLE001 - rosettasciio raises many types
        raise FormatError(
            f"{path!r}: rosettasciio cannot read this {suffix} file ({type(exc).__name__}: "
            f"{exc}); it is truncated or corrupt: copy it again from the microscope PC"
        ) from exc
    images = []
    for sig in signals:
        axes = _axis_order(sig["axes"])
        nav = [a for a in axes if a.get("navigate")]
        spatial = [a for a in axes if not a.get("navigate")]
        if len(spatial) == 2 and sig["data"].ndim == len(axes):
            images.append((sig, axes, nav, spatial))
    if not images:
        found = [tuple(s["data"].shape) for s in signals]
        raise FormatError(
            f"{path!r}: no image data (2-D signal) found, only datasets of shapes {found}; "
            f"this reader handles image stacks (frame, y, x)"
        )
    best = max(range(len(images)), key=lambda i: int(np.prod(images[i][0]["data"].shape)))
    sig, axes, nav, spatial = images[best]
    data = sig["data"]
    if len(nav) > 1:
        names = ", ".join(f"{a.get('name')!r} (size {a.get('size')})" for a in nav)
        raise FormatError(
            f"{path!r}: {data.ndim}-D data {tuple(data.shape)}: more than one axis besides "
            f"y and x ({names}); the extra axis is {nav[1].get('name')!r}: export a single "
            f"(frame, y, x) stack"
        )
    # frame axis first and y, x last, in rosettasciio's array order
    order = [axes.index(a) for a in nav + spatial]
    shape = tuple(int(data.shape[i]) for i in order)
    if len(shape) == 2:
        shape = (1, *shape)
    n, ny, nx = shape
    check_frame_dims(path, n, ny, nx)
    source = TemFileSource(
        path,
        (n, ny, nx),
        np.dtype(data.dtype),
        module=_RSCIIO_MODULES[suffix],
        signal_index=signals.index(sig),
        order=tuple(order),
    )
    xa = spatial[-1]
    pixel_nm = length_to_nm(float(xa.get("scale", 1.0)), xa.get("units") or None)
    interval = None
    if nav:
        ta = nav[0]
        interval = time_to_s(float(ta.get("scale", 1.0)), ta.get("units") or None)
    times = ser_frame_times(path) if suffix == ".ser" and n > 1 else None
    if times is not None and len(times) != n:
        times = None
    return Header(path, suffix.lstrip("."), source, pixel_nm, interval, times)
