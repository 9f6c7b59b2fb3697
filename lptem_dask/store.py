"""Layout of one processed video on disk, and atomic writes.

A *store* is a Zarr v3 group directory, conventionally ``NAME.zarr``::

    NAME.zarr/
      zarr.json              group metadata; attrs["lptem"] holds history and configs
      image/                 (frame, y, x) raw frames, written by ``ingest``
      probability/           (frame, y, x) float32 U-Net probability
      labels/particles/0     (frame, y, x) int32 particle instances (where OME-Zarr
                             viewers look for label images; see open_store_dataset)
      tables/
        regions.parquet/     one row per particle per frame (one part per frame chunk)
        contours.parquet/    outlines resampled at uniform arc length
        tracks.parquet/      regions with a `particle` column
      results/               analysis outputs (JSON, NetCDF/Zarr, figures)

Every stage writes its output to a temporary sibling path and renames it into
place when complete, so an output appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputExistsError

__all__ = [
    "IMAGE",
    "PROBABILITY",
    "LABELS",
    "TABLES",
    "RESULTS",
    "table_path",
    "check_output_path",
    "atomic_path",
    "remove_path",
    "store_lock",
    "aux_dir",
    "mark_aux_dir",
    "LABELS_ARRAY",
    "write_ngff_metadata",
    "create_labels_array",
    "open_store_dataset",
]

IMAGE = "image"
PROBABILITY = "probability"
LABELS = "labels"
TABLES = "tables"
RESULTS = "results"


def table_path(store: str | os.PathLike, name: str) -> Path:
    """Path of the Parquet dataset ``name`` (e.g. ``"regions"``) inside a store.

    The ``tables`` folder is created (marked for Zarr, see :func:`mark_aux_dir`)
    when the store exists; the table itself is not.
    """
    store = Path(store)
    if store.is_dir():
        aux_dir(store, TABLES)
    return store / TABLES / f"{name}.parquet"


def check_output_path(path: str | os.PathLike, *, overwrite: bool, what: str = "output") -> Path:
    """Refuse an existing output unless ``overwrite``; nothing is touched.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"{what} {str(path)!r} already exists; choose another path or pass "
            f"overwrite=True (CLI: --overwrite) to replace it"
        )
    return path


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``final``.

    The caller writes a file or directory at the yielded path. If the block
    raises, the temporary output is removed and ``final`` is left as it was.
    If ``final`` exists it is replaced only when ``overwrite`` is True (the old
    one is moved aside first and removed after the rename succeeded).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    final = Path(final)
    check_output_path(final, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = final.with_name(f".tmp-{final.name}-{token}")
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".old-{final.name}-{token}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        remove_path(tmp)
        raise
    if old is not None:
        remove_path(old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - alive, owned by someone else
        return True
    return True


@contextlib.contextmanager
def store_lock(path: str | os.PathLike, *, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock file ``PATH.lock`` beside an output for a whole run.

    The lock records the owner's pid and host. A second run on the same output
    refuses with :class:`~lptem_dask.errors.LockedError`. A lock left by a process
    that no longer exists on this host is taken over.
    """
    import json
    import socket

    from .errors import LockedError

    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "what": what}
    for _attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                owner = {}
            pid, ohost = owner.get("pid"), owner.get("host")
            if ohost == host and isinstance(pid, int) and not _pid_alive(pid):
                lock.unlink(missing_ok=True)  # stale: its owner died
                continue
            raise LockedError(
                f"{str(path)!r} is in use by another run (pid {pid} on host {ohost}, lock file "
                f"{str(lock)!r}); wait for it to finish, or if that process is gone, delete the lock file"
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


_AUX_MARKER = (
    '{"zarr_format": 3, "node_type": "group", "attributes": {"lptem_dask": "non-zarr folder"}}'
)


def mark_aux_dir(path: str | os.PathLike) -> Path:
    """Mark a non-Zarr folder inside a store as an empty Zarr group.

    Zarr warns about every folder of a store it does not recognise; a
    ``zarr.json`` of an empty group silences that without hiding the folder's
    own files (Parquet parts, JSON results, figures).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / "zarr.json"
    if not marker.exists():
        marker.write_text(_AUX_MARKER)
    return path


def aux_dir(store: str | os.PathLike, name: str) -> Path:
    """``STORE/NAME`` created (with its parents inside the store) as a marked folder."""
    store = Path(store)
    path = store / name
    rel = Path(name).parts
    for i in range(1, len(rel) + 1):
        mark_aux_dir(store.joinpath(*rel[:i]))
    return path


# --------------------------------------------------------------------------- NGFF / xarray views
#
# The particle instances live where OME-Zarr (NGFF 0.5) viewers look for label
# images, ``labels/particles/0``, so napari and other NGFF viewers open the
# image and its labels; :func:`open_store_dataset` presents them to xarray as
# the variable ``labels`` beside ``image`` and the U-Net maps.

LABELS_GROUP = "labels/particles"
LABELS_ARRAY = "labels/particles/0"
NGFF_VERSION = "0.5"


def _ngff_axes() -> list[dict]:
    return [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space", "unit": "nanometer"},
    ]


def _ngff_multiscales(
    name: str, path: str, pixel_size_nm: float, frame_interval_s: float
) -> list[dict]:
    return [
        {
            "name": name,
            "axes": _ngff_axes(),
            "datasets": [
                {
                    "path": path,
                    "coordinateTransformations": [
                        {
                            "type": "scale",
                            "scale": [
                                float(frame_interval_s),
                                float(pixel_size_nm),
                                float(pixel_size_nm),
                            ],
                        }
                    ],
                }
            ],
        }
    ]


def write_ngff_metadata(
    store: str | os.PathLike, *, pixel_size_nm: float, frame_interval_s: float, name: str = "image"
) -> None:
    """Add OME-Zarr 0.5 ``multiscales`` (and ``labels`` where present) to a store's groups."""
    import zarr

    store = Path(store)
    root = zarr.open_group(str(store), mode="a", zarr_format=3)
    prev = root.attrs.get("ome", {})
    ome: dict[str, Any] = dict(prev) if isinstance(prev, dict) else {}
    ome.update(
        version=NGFF_VERSION,
        multiscales=_ngff_multiscales(name, IMAGE, pixel_size_nm, frame_interval_s),
    )
    root.attrs["ome"] = ome
    if (store / LABELS_ARRAY / "zarr.json").exists():
        lab_root = zarr.open_group(str(store / "labels"), mode="a", zarr_format=3)
        lab_root.attrs["ome"] = {"version": NGFF_VERSION, "labels": ["particles"]}
        grp = zarr.open_group(str(store / LABELS_GROUP), mode="a", zarr_format=3)
        grp.attrs["ome"] = {
            "version": NGFF_VERSION,
            "multiscales": _ngff_multiscales("particles", "0", pixel_size_nm, frame_interval_s),
            "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}},
        }


def create_labels_array(
    store: str | os.PathLike, shape: tuple[int, ...], chunks: tuple[int, ...], *, compressors=None
):
    """Create the int32 particle-instance array at ``labels/particles/0`` (fill 0)."""
    import zarr

    store = Path(store)
    remove_path(store / "labels")
    zarr.open_group(str(store / "labels"), mode="a", zarr_format=3)
    grp = zarr.open_group(str(store / LABELS_GROUP), mode="a", zarr_format=3)
    return grp.create_array(
        "0",
        shape=tuple(shape),
        chunks=tuple(chunks),
        dtype="int32",
        dimension_names=("frame", "y", "x"),
        compressors=compressors,
        fill_value=0,
        overwrite=True,
    )


def open_store_dataset(store: str | os.PathLike, *, chunks: dict | str | None = None):
    """The store's arrays as one lazy ``xr.Dataset``: image, U-Net maps and ``labels``.

    Raises
    ------
    StoreError
        If ``store`` is not a Zarr store.
    """
    import warnings

    import xarray as xr

    from .errors import StoreError

    store = Path(store)
    if not (store / "zarr.json").exists():
        raise StoreError(
            f"{str(store)!r} is not a lptem store (no zarr.json); create one with "
            "`lptem ingest VIDEO STORE` or `lptem run CONFIG`"
        )
    kw: dict[str, Any] = {} if chunks is None else {"chunks": chunks}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*not recognized as a component of a Zarr hierarchy"
        )
        ds = xr.open_zarr(str(store), consolidated=False, zarr_format=3, **kw)
        if (store / LABELS_ARRAY / "zarr.json").exists():
            lab = xr.open_zarr(
                str(store), group=LABELS_GROUP, consolidated=False, zarr_format=3, **kw
            )["0"]
            ds[LABELS] = lab.assign_coords(
                {c: ds.coords[c] for c in ds.coords if set(ds.coords[c].dims) <= set(lab.dims)}
            )
    return ds
