"""``lptem run``: many videos through every stage on one Dask client, resumably.

For each video of the manifest the stages are::

    image (ingest) -> maps (U-Net) -> labels -> regions -> tracks -> analyses -> report

The first four run per frame chunk, as one Dask task per (stage, chunk), each
depending on the same chunk's previous stage; data passes through the video's
Zarr store on disk, so memory is bounded by the chunk size and not by the video
length. After a task has written its chunk it drops a marker file
``.lptem/<stage>/<chunk>.done`` holding the stage's hash; a killed run,
restarted with the same command, recomputes only the chunks without markers (the
ones that were in flight). A marker whose chunk is missing from the store (a
deleted chunk file) is discarded and the chunk recomputed.

Every stage's hash covers its own settings and the hash of the stage before, so
changing a stage's configuration invalidates that stage and those after it, and
never those before. ``overwrite=True`` is the only way to discard everything.

The logs ``.lptem/compute-<stage>.log`` record one line per chunk computed
(stage, chunk, pid, time), across invalidations; tests use them to prove that
completed chunks were not recomputed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import schema
from ._version import __version__
from .config import PipelineConfig, config_hash, dump_config
from .errors import (
    STORAGE_ERRNOS,
    ConfigError,
    InputError,
    LockedError,
    LptemError,
    StoreError,
)
from .store import (
    IMAGE,
    LABELS,
    LABELS_ARRAY,
    aux_dir,
    create_labels_array,
    open_store_dataset,
    remove_path,
    store_lock,
    table_path,
    write_ngff_metadata,
)

__all__ = [
    "run_pipeline",
    "run_videos",
    "plan_video",
    "stored_config",
    "read_compute_log",
    "analysis_runner",
    "VideoPlan",
    "CHUNK_STAGES",
    "STATE_DIR",
]

logger = logging.getLogger(__name__)

STATE_DIR = ".lptem"
CHUNK_STAGES = ("image", "maps", "labels", "regions")
# the SegmentConfig fields that label_frames takes (the labels stage's settings)
LABEL_KEYS = (
    "threshold",
    "min_area_px",
    "split_touching",
    "marker_threshold",
    "min_confidence",
    "min_relative_area",
    "particle_area_px",
)
VIDEO_STAGES = ("tracks", "analyses", "report")
ALL_STAGES = CHUNK_STAGES + VIDEO_STAGES


# --------------------------------------------------------------------------- manifest


def expand_manifest(patterns: Sequence[str], *, base: Path | None = None) -> list[Path]:
    """Expand paths and glob patterns into a sorted list of existing inputs.

    Raises
    ------
    ConfigError
        If the manifest is empty or a pattern matches nothing.
    """
    if not patterns:
        raise ConfigError(
            "the manifest `videos` is empty; list at least one video path or glob pattern"
        )
    out: list[Path] = []
    for pat in patterns:
        p = Path(pat)
        if base is not None and not p.is_absolute():
            p = base / p
        matches = sorted(glob.glob(str(p))) if glob.has_magic(str(p)) else [str(p)]
        if not matches:
            raise ConfigError(f"the manifest pattern {pat!r} matches no file; check the path")
        out.extend(Path(m) for m in matches)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


# --------------------------------------------------------------------------- hashing


def _file_fingerprint(path: Path) -> dict:
    """Identity of an input without reading it all: size and mtime of each file."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    items = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        if f.is_file():
            items.append(
                (
                    str(f.relative_to(path)) if path.is_dir() else f.name,
                    st.st_size,
                    int(st.st_mtime),
                )
            )
    return {"path": str(path.resolve()), "files": items[:10000]}


def _model_fingerprint(model: str) -> str:
    from .models import SHIPPED_MODELS, shipped_model_paths

    if model in SHIPPED_MODELS:
        try:
            data = shipped_model_paths(model)[0].read_bytes()
        except OSError:
            return f"{model}:missing"
        return f"{model}:" + hashlib.sha256(data).hexdigest()[:16]
    p = Path(model)
    if not p.exists():
        raise ConfigError(
            f"`segment.model` {model!r} is neither a shipped model ({sorted(SHIPPED_MODELS)}) "
            "nor an existing checkpoint path; give the path of a file written by `lptem train`"
        )
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
        if f.is_file():
            h.update(f.read_bytes())
    return "file:" + h.hexdigest()[:16]


def stage_hashes(config: PipelineConfig, source: Path) -> dict[str, str]:
    """Hash of every stage for one video; each includes the hash of the stage before."""
    seg = dump_config(config.segment)
    parts: dict[str, dict] = {
        "image": {
            "source": _file_fingerprint(source),
            "ingest": dump_config(config.ingest),
            "pixel_size_nm": config.pixel_size_nm,
            "frame_interval_s": config.frame_interval_s,
            "frames_per_chunk": config.frames_per_chunk,
        },
        "maps": {
            "model": _model_fingerprint(config.segment.model),
            **{k: seg[k] for k in ("particle_size_px", "polarity", "precision")},
            # only when on, so the hashes of stores made before the option stay valid
            **({"tta": True} if seg.get("tta") else {}),
        },
        # an unset particle_area_px leaves the hash of stores made before it existed
        "labels": {
            k: seg[k]
            for k in (*LABEL_KEYS, "method", "baseline_params")
            if not (k == "particle_area_px" and seg[k] is None)
        },
        # the tables' columns are part of what the stage makes: a resumed run after
        # a schema change recomputes the regions instead of mixing old and new parts
        "regions": {
            **dump_config(config.measure),
            "columns": [*schema.REGIONS, *schema.CONTOURS],
        },
        "tracks": dump_config(config.link),
        "analyses": {"analyses": list(config.analyses)},
        "report": {"report": config.report},
    }
    out: dict[str, str] = {}
    prev = __version__
    for stage in ALL_STAGES:
        prev = config_hash({"prev": prev, "stage": stage, **parts[stage]})
        out[stage] = prev
    return out


# --------------------------------------------------------------------------- state on disk


def _state_dir(store: Path, stage: str) -> Path:
    return aux_dir(store, STATE_DIR) / stage


def _marker(store: Path, stage: str, chunk: int) -> Path:
    return _state_dir(store, stage) / f"{chunk:06d}.done"


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _compute_log(store: Path, stage: str) -> Path:
    # beside, not inside, the stage's folder: the log outlives invalidations
    return aux_dir(store, STATE_DIR) / f"compute-{stage}.log"


def _log_compute(store: Path, stage: str, chunk: int) -> None:
    log = _compute_log(store, stage)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:  # O_APPEND: one short line per write, never interleaved
        fh.write(f"{stage} {chunk} {os.getpid()} {time.time():.3f}\n")


def read_compute_log(store: str | os.PathLike, stage: str) -> list[int]:
    """Chunk indices computed so far for ``stage`` (one entry per computation)."""
    log = _compute_log(Path(store), stage)
    if not log.exists():
        return []
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.strip()]


def _stage_record(store: Path, stage: str) -> dict:
    path = _state_dir(store, stage) / "stage.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _set_stage_record(store: Path, stage: str, record: dict) -> None:
    _write_text_atomic(_state_dir(store, stage) / "stage.json", json.dumps(record, indent=1))


def _stage_outputs(store: Path, stage: str) -> list[Path]:
    return {
        "image": [store / IMAGE],
        "maps": [store / "probability", store / "boundary", store / "distance"],
        "labels": [store / LABELS],
        "regions": [table_path(store, "regions"), table_path(store, "contours")],
        "tracks": [table_path(store, "tracks")],
        "analyses": [store / "results"],
        "report": [store / "report"],
    }[stage]


def _invalidate(store: Path, stage: str) -> None:
    logger.info("%s: stage %s changed or is new; discarding its outputs", store, stage)
    for p in _stage_outputs(store, stage):
        remove_path(p)
    remove_path(_state_dir(store, stage))


# --------------------------------------------------------------------------- plan


@dataclass
class VideoPlan:
    """What to do for one video: its chunks and which stage parts remain."""

    source: Path
    store: Path
    n_frames: int
    chunks: list[tuple[int, int]]
    hashes: dict[str, str]
    todo: dict[str, list[int]] = field(default_factory=dict)
    video_todo: list[str] = field(default_factory=list)
    maps_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.store.name


def _chunk_frames(shape: tuple[int, ...], itemsize: int, config: PipelineConfig) -> int:
    if config.frames_per_chunk:
        return int(config.frames_per_chunk)
    per_frame = int(np.prod(shape[1:])) * max(itemsize, 4)  # float32 maps dominate
    return max(1, int(config.ingest.chunk_mb * 1e6 // per_frame))


def _zarr_chunk_exists(store: Path, name: str, chunk: int) -> bool:
    import zarr

    try:
        arr = zarr.open_array(str(store / name), mode="r")
    except Exception:
        return False
    key = arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))
    return (store / name / key).exists()


def _chunk_outputs_exist(store: Path, stage: str, chunk: int, map_vars: Sequence[str]) -> bool:
    if stage == "image":
        return _zarr_chunk_exists(store, IMAGE, chunk)
    if stage == "maps":
        return all(_zarr_chunk_exists(store, v, chunk) for v in map_vars)
    if stage == "labels":
        return _zarr_chunk_exists(store, LABELS_ARRAY, chunk)
    if stage == "regions":
        listed = _marker(store, stage, chunk).read_text().split()[1:]
        return bool(listed) and all((store / p).exists() for p in listed)
    raise ValueError(stage)  # pragma: no cover


def _check_video_store(store: Path) -> None:
    """Refuse to write into a Zarr store whose ``image`` is not a video (frame, y, x).

    A training set written by ``lptem simulate`` holds an ``image`` of (index, y, x)
    beside its ground truth (``labels``, ``boundary``, ``mask``); processing it in place
    would replace that truth with the pipeline's own arrays of the same names.
    """
    import xarray as xr

    try:
        dims = xr.open_zarr(store, consolidated=False)[IMAGE].dims
    except Exception:  # noqa: BLE001 - not readable this way: open_video reports it
        return
    if tuple(dims) != ("frame", "y", "x"):
        raise InputError(
            f"store {str(store)!r} is not a video store: its `{IMAGE}` has dims {tuple(dims)}, "
            "not ('frame', 'y', 'x') (a training set written by `lptem simulate`?); the "
            "pipeline would overwrite its arrays. Give an output store elsewhere (`--out` "
            "or `output_dir`), or ingest the frames first with `lptem ingest`"
        )


def plan_video(
    source: Path,
    store: Path,
    config: PipelineConfig,
    *,
    overwrite: bool = False,
    until: str = "report",
) -> VideoPlan:
    """Open ``source`` lazily, prepare ``store`` and list the work that remains."""
    from .io import open_video

    video = open_video(
        source, pixel_size_nm=config.pixel_size_nm, frame_interval_s=config.frame_interval_s
    )
    if video.sizes["frame"] == 0:
        raise InputError(f"video {str(source)!r} has no frames; check the file")
    in_place = source.resolve() == store.resolve()
    if in_place:
        _check_video_store(store)  # before anything in it is invalidated or overwritten
    hashes = stage_hashes(config, store / IMAGE if in_place else source)
    upto = ALL_STAGES[: ALL_STAGES.index(until) + 1]
    if overwrite and not in_place:
        remove_path(store)
    nf = int(video.sizes["frame"])
    if in_place:  # keep the store's own frame chunks
        step = int(video.chunks[0][0]) if video.chunks else nf
    else:
        step = _chunk_frames(tuple(video.shape), video.dtype.itemsize, config)
    chunks = [(a, min(a + step, nf)) for a in range(0, nf, step)]
    store.mkdir(parents=True, exist_ok=True)
    for sub in (STATE_DIR, "results", "tables"):
        aux_dir(store, sub)  # folders Zarr should not warn about

    plan = VideoPlan(source=source, store=store, n_frames=nf, chunks=chunks, hashes=hashes)
    if in_place:  # the frames are the store's own: never discarded, always complete
        _set_stage_record(store, "image", {"hash": hashes["image"], "complete": True})
        for i in range(len(chunks)):
            _write_text_atomic(_marker(store, "image", i), hashes["image"] + "\n")
    invalid_from = None
    for stage in ALL_STAGES:
        rec = _stage_record(store, stage)
        if invalid_from is None and (
            rec.get("hash") != hashes[stage] or (overwrite and stage != "image")
        ):
            invalid_from = stage
        if invalid_from is not None:
            _invalidate(store, stage)
    if _stage_record(store, "image").get("hash") != hashes["image"]:
        _create_image_array(video, store, step, config)
        _set_stage_record(store, "image", {"hash": hashes["image"], "complete": False})

    unet = config.segment.method == "unet"
    map_vars = ["probability"] if unet else []
    if "maps" in upto and unet:
        map_vars = _ensure_map_arrays(video, store, step, config, hashes)
    if "labels" in upto and _stage_record(store, "labels").get("hash") != hashes["labels"]:
        create_labels_array(
            store, video.shape, (step, *video.shape[1:]), compressors=_compressors(config)
        )
        _set_stage_record(store, "labels", {"hash": hashes["labels"], "complete": False})
    write_ngff_metadata(
        store,
        pixel_size_nm=float(video.attrs.get("pixel_size_nm", 1.0)),
        frame_interval_s=float(video.attrs.get("frame_interval_s", 1.0)),
    )
    for stage in ALL_STAGES:
        if _stage_record(store, stage).get("hash") != hashes[stage]:
            _set_stage_record(store, stage, {"hash": hashes[stage], "complete": False})

    _write_text_atomic(store / STATE_DIR / "config.json", json.dumps(dump_config(config), indent=1))
    for stage in CHUNK_STAGES:
        if stage not in upto or (stage == "maps" and not unet):
            continue
        todo = []
        for i in range(len(chunks)):
            marker = _marker(store, stage, i)
            text = marker.read_text().split() if marker.exists() else []
            ok = bool(text) and text[0] == hashes[stage]
            if ok and not _chunk_outputs_exist(store, stage, i, map_vars):
                logger.warning("%s: chunk %d of stage %s is missing; recomputing", store, i, stage)
                marker.unlink()
                ok = False
            if not ok:
                todo.append(i)
        plan.todo[stage] = todo
        rec = _stage_record(store, stage)
        if bool(rec.get("complete")) != (not todo):
            _set_stage_record(store, stage, {**rec, "hash": hashes[stage], "complete": not todo})
    if unet and plan.todo.get("maps"):
        plan.maps_overrides = _video_wide_maps_settings(video, config, store)
    # anything downstream of a chunk stage with work left is redone
    downstream_dirty = any(plan.todo.get(s) for s in CHUNK_STAGES)
    for stage in VIDEO_STAGES:
        if stage not in upto or (stage == "report" and not config.report):
            continue
        rec = _stage_record(store, stage)
        if downstream_dirty or not rec.get("complete") or rec.get("hash") != hashes[stage]:
            plan.video_todo.append(stage)
            downstream_dirty = True
    return plan


def _video_wide_maps_settings(video, config: PipelineConfig, store: Path) -> dict[str, Any]:
    """Particle size and polarity decided once per video, not once per chunk.

    With ``segment.particle_size_px: null`` (and a model that states its training
    size) or ``polarity: auto``, ``predict_maps`` estimates them from a sample of the
    frames it is given; per chunk, two chunks of one video could be rescaled
    differently. The pipeline estimates them from frames spread over the whole
    video (as ``lp.segment`` on the whole video does), records them in the maps
    stage record (a resumed run reuses them) and passes them to every chunk.
    """
    from .segment.infer import _make_plan, _sample_index, _train_size, prepare_model

    s = config.segment
    rec = _stage_record(store, "maps")
    if isinstance(rec.get("resolved"), dict):
        return dict(rec["resolved"])
    spec = prepare_model(s.model)
    train = _train_size(spec.card)
    if not (s.polarity == "auto" or (s.particle_size_px is None and train is not None)):
        return {}
    sample = np.asarray(video.isel(frame=_sample_index(int(video.shape[0]))).values)
    decided = _make_plan(sample, s.polarity, s.particle_size_px, train, spec)
    out: dict[str, Any] = {"polarity": decided["polarity"]}
    if train is not None:
        # every chunk gets the size that gives the decided rescaling (train / size);
        # an estimate that failed, or one inside the model's range, means scale 1
        out["particle_size_px"] = float(train) / float(decided["scale"])
    logger.info(
        "%s: segmenting every chunk with %s (estimated particle diameter: %s px)",
        store,
        out,
        decided.get("particle_size_px"),
    )
    _set_stage_record(
        store,
        "maps",
        {**rec, "resolved": out, "estimated_particle_size_px": decided.get("particle_size_px")},
    )
    return out


def _compressors(config: PipelineConfig, *, fast: bool = False):
    """Blosc zstd for frames and labels; with ``fast``, lz4 (the float maps).

    Probability maps are noisy float32 that no codec shrinks much (measured on
    512 px U-Net maps: zstd-3 bitshuffle 0.79 of the raw size at 14.6 ms per frame
    to write, lz4 0.80 at 7.9 ms, and 1.6 ms against 8.1 ms to read back).
    """
    if config.ingest.compression_level == 0:
        return None
    from zarr.codecs import BloscCodec

    if fast:
        return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    return [BloscCodec(cname="zstd", clevel=config.ingest.compression_level, shuffle="bitshuffle")]


def _create_image_array(video, store: Path, step: int, config: PipelineConfig) -> None:
    """Write coordinates and metadata of ``video`` into ``store``; frames come per chunk."""
    remove_path(store / IMAGE)
    for c in ("frame", "time", "y", "x"):
        remove_path(store / c)
    ds = video.to_dataset(name=IMAGE)
    ds[IMAGE].encoding = {}
    ds = ds.chunk({"frame": step})
    # coordinates must be in memory: with compute=False, to_zarr writes only their
    # metadata when they are dask arrays (non-index coordinates such as `time` are)
    for name in list(ds.coords):
        if name not in ds.dims:
            coord = video.coords[name]
            ds = ds.assign_coords({name: (coord.dims, np.asarray(coord.values), coord.attrs)})
    ds.attrs = {}
    attrs = dict(video.attrs)
    attrs.setdefault("history", [])
    ds[IMAGE].attrs = _jsonable(attrs)
    enc = {IMAGE: {"chunks": (step, *video.shape[1:]), "compressors": _compressors(config)}}
    ds.to_zarr(str(store), mode="a", compute=False, encoding=enc, consolidated=False, zarr_format=3)


def _create_array(
    store: Path, name: str, video, step: int, dtype: np.dtype, config, attrs=None, fast=False
) -> None:
    import zarr

    remove_path(store / name)
    group = zarr.open_group(str(store), mode="a", zarr_format=3)
    group.create_array(
        name,
        shape=tuple(video.shape),
        chunks=(step, *video.shape[1:]),
        dtype=dtype,
        dimension_names=("frame", "y", "x"),
        compressors=_compressors(config, fast=fast),
        fill_value=0,
        attributes=_jsonable(attrs or {}),
        overwrite=True,
    )


def _ensure_map_arrays(video, store: Path, step: int, config: PipelineConfig, hashes) -> list[str]:
    rec = _stage_record(store, "maps")
    if rec.get("hash") == hashes["maps"] and rec.get("variables"):
        return list(rec["variables"])
    from .segment.infer import predict_maps

    maps = predict_maps(video, **_maps_kwargs(config))  # lazy: only the structure is used
    names = [str(v) for v in maps.data_vars]
    for v in names:
        _create_array(
            store, v, video, step, np.dtype("float32"), config, attrs=dict(maps[v].attrs), fast=True
        )
    _set_stage_record(
        store, "maps", {"hash": hashes["maps"], "complete": False, "variables": names}
    )
    return names


def _maps_kwargs(config: PipelineConfig) -> dict[str, Any]:
    s = config.segment
    return dict(
        model=s.model,
        particle_size_px=s.particle_size_px,
        polarity=s.polarity,
        batch_size=s.batch_size,
        precision=s.precision,
        tta=s.tta,
    )


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# --------------------------------------------------------------------------- chunk tasks


def _open_chunk(store: Path, a: int, b: int):
    return open_store_dataset(store).isel(frame=slice(a, b))


def _in_task(modules: Sequence[str]) -> Callable[[Callable], Callable]:
    """Decorate a pipeline task: ``modules`` imported, then the task, synchronous Dask inside.

    The imports go through :func:`_import_serially` (one thread at a time; a set
    lookup once done). Chunk tasks name :data:`CHUNK_MODULES`, the per-video tasks
    :data:`TASK_MODULES`. Dask's synchronous scheduler for any lazy work inside
    the task: without it, ``.load()`` or ``.compute()`` inside a task on a distributed
    worker goes to the cluster through a worker client and the task secedes from
    its thread: the worker then starts more chunk tasks than it has threads, each
    with a full set of torch threads, and the cores are oversubscribed (measured:
    4 chunk tasks at once on a 2-thread worker, 2 torch threads each).
    """
    import functools

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import dask

            _import_serially(modules)
            with dask.config.set(scheduler="synchronous"):
                return func(*args, **kwargs)

        return wrapper

    return decorate


_IMPORT_LOCK = threading.Lock()
_IMPORTED: set[str] = set()  # imported to the end through the lock, in this process


def _import_serially(modules: Sequence[str]) -> None:
    """Import ``modules`` one thread at a time in this process.

    Two threads of one Dask worker that import the same packages for the first
    time side by side can fail with ``_DeadlockError`` or a partially initialised
    module (seen: fsspec, in ``lptem demo``). Every pipeline task and the warm-up
    import what they need through this lock first. The lock-free check is on
    the modules whose import has *finished* (``sys.modules`` already holds a
    module while another thread is still executing it); once done it is a
    set lookup.
    """
    if _IMPORTED.issuperset(modules):
        return
    import importlib

    with _IMPORT_LOCK:
        for m in modules:
            if m not in _IMPORTED:
                importlib.import_module(m)
                _IMPORTED.add(m)


def task_warm_imports(modules: Sequence[str], _after: Any = None) -> float:
    """Import ``modules`` in this worker; the seconds it took.

    Submitted once per worker when a run starts with :data:`CHUNK_MODULES`, so
    that each worker imports torch, scikit-image and the rest while the client
    process plans the videos, instead of after planning, inside the first chunk
    task of each thread; and once more with :data:`TASK_MODULES` (linking, the
    analyses, the report) behind the chunk tasks (see :func:`run_videos`).
    ``_after``: a future this task waits for, unused.
    """
    t0 = time.perf_counter()
    _import_serially(modules)
    _freeze_imported_objects()
    return time.perf_counter() - t0


def _freeze_imported_objects() -> None:
    """Move this worker process's objects so far to the GC's permanent generation.

    Only in a worker *process* (not a thread of the client's own process). The
    objects alive after the imports (modules, functions, torch's operator
    registry: about 400,000 of them) are never garbage, yet every full collection
    traverses them, and so does the interpreter when the worker exits at the end
    of a run. :func:`gc.freeze` takes them out of the collector's way: measured
    on 2 cores, a process that had imported ``TASK_MODULES`` took 0.98 s to exit,
    0.18 s after ``gc.freeze()``. No ``gc.collect()`` first: a full collection of
    those objects takes 0.19 s, on the path to the first chunk task, to
    free the little cyclic garbage importing leaves (kept until exit instead).
    """
    import gc
    import multiprocessing

    if multiprocessing.parent_process() is None:  # the client's process: leave it alone
        return
    gc.freeze()


#: what the chunk tasks (ingest, maps, labels, regions) import before they start;
#: the warm-up at the start of a run imports these only (measured on 2 cores: 3.5 s
#: alone, against 5.3 s for :data:`TASK_MODULES`)
CHUNK_MODULES = (
    "lptem_dask.io",
    "lptem_dask.segment.infer",
    "lptem_dask.segment.postprocess",
    "lptem_dask.measure",
)
#: everything a per-video task imports the first time it runs in a process: the
#: chunk modules, then linking, the analyses and the report (two videos' analyses
#: ran side by side)
TASK_MODULES = (
    *CHUNK_MODULES,
    "lptem_dask.track",
    "trackpy",
    "matplotlib.pyplot",
    "lptem_dask.analysis.diffusion",
    "lptem_dask.analysis.interaction",
    "lptem_dask.analysis.etching",
    "lptem_dask.analysis.assembly",
    "lptem_dask.report",
)


def _await_warm_up(futures: list, timeout_s: float = 120.0) -> None:
    """Wait for the warm-up imports before any other task reaches the workers.

    Two threads of one process importing the same packages at once can fail
    with ``_DeadlockError`` (seen: fsspec, in ``lptem demo``, when a chunk task
    imported beside the warm-up), so nothing else runs until the imports are
    done. A warm-up that fails or hangs is ignored: the tasks import for
    themselves, as they did before.
    """
    if not futures:
        return
    from distributed import wait

    try:
        wait(futures, timeout=timeout_s)
    except Exception:  # noqa: BLE001 - an optimisation only
        logger.debug("worker warm-up did not finish:\n%s", traceback.format_exc())


def _warm_workers(
    client, modules: Sequence[str] = CHUNK_MODULES, *, after: Any = None, priority: int = 0
) -> list:
    """One task per worker of ``client`` importing ``modules``; the futures.

    ``after``: a future the imports wait for; ``priority``: Dask's task priority
    (lower runs later). Best effort: a cluster whose workers have not joined
    yet gets none. See ``_await_warm_up`` and :func:`run_videos`.
    """
    try:
        workers = list(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - an optimisation only
        return []
    return [
        client.submit(
            task_warm_imports,
            tuple(modules),
            after,
            key=f"warm-imports-{i}-{uuid.uuid4().hex[:8]}",
            workers=[w],
            allow_other_workers=False,
            pure=False,
            priority=priority,
        )
        for i, w in enumerate(workers)
    ]


FAULT_PAUSE_ENV = "LPTEM_FAULT_WRITE_PAUSE_S"


def _write_region(store: Path, name: str, a: int, values: np.ndarray) -> None:
    """Write frames ``a:a+len(values)`` (whole chunks) of the array ``name``.

    Testing hook: with the environment variable ``LPTEM_FAULT_WRITE_PAUSE_S``
    set, the first half of the frames is written, a sentinel file
    ``.lptem/writing-NAME-A`` appears, and the write pauses that many seconds
    before the second half, so that fault tests can kill a run in the middle of
    a chunk write.
    """
    import zarr

    # every chunk is written, even all-zero ones (a frame chunk without particles):
    # resuming checks that each finished chunk's file exists
    arr = zarr.open_array(str(store / name), mode="r+").with_config({"write_empty_chunks": True})
    pause = float(os.environ.get(FAULT_PAUSE_ENV, "0") or 0)
    if pause > 0 and values.shape[0] > 1:
        half = values.shape[0] // 2
        arr[a : a + half] = values[:half]
        sentinel = aux_dir(store, STATE_DIR) / f"writing-{name.replace('/', '_')}-{a}"
        sentinel.touch()
        time.sleep(pause)
        arr[a + half : a + values.shape[0]] = values[half:]
        sentinel.unlink(missing_ok=True)
        return
    arr[a : a + values.shape[0]] = values


def _finish_chunk(
    store: Path, stage: str, chunk: int, stage_hash: str, outputs: Sequence[Path] = ()
) -> None:
    """Log the computation and drop the chunk's marker: its stage hash, then its files."""
    _log_compute(store, stage, chunk)
    lines = [stage_hash, *(str(Path(p).resolve().relative_to(store.resolve())) for p in outputs)]
    _write_text_atomic(_marker(store, stage, chunk), "\n".join(lines) + "\n")


@_in_task(CHUNK_MODULES)
def task_image(
    source: str, store: str, chunk: int, a: int, b: int, stage_hash: str, overrides: dict
) -> int:
    """Copy frames ``a:b`` of the source video into the store's ``image`` array."""
    from .io import open_video

    video = open_video(source, **overrides)
    values = np.asarray(video.isel(frame=slice(a, b)).values)
    _write_region(Path(store), IMAGE, a, values)
    _finish_chunk(Path(store), "image", chunk, stage_hash)
    return chunk


@_in_task(CHUNK_MODULES)
def task_maps(
    store: str, chunk: int, a: int, b: int, stage_hash: str, kwargs: dict, _dep: Any = None
) -> int:
    """U-Net maps of frames ``a:b`` (the model is cached once per worker process)."""
    from .segment.infer import predict_maps

    ds = _open_chunk(Path(store), a, b)
    video = ds[IMAGE].load()
    maps = predict_maps(video, **kwargs).compute(scheduler="synchronous")
    for v in maps.data_vars:
        _write_region(Path(store), str(v), a, np.asarray(maps[v].values, dtype=np.float32))
    _finish_chunk(Path(store), "maps", chunk, stage_hash)
    return chunk


def _labels_of(video: xr.DataArray, maps: xr.Dataset | None, kwargs: dict) -> np.ndarray:
    """int32 labels of a chunk: from the U-Net maps, or a classical baseline on the frames."""
    if kwargs.get("method", "unet") != "unet":
        from .segment.baselines import segment_baseline

        labels = segment_baseline(
            video,
            method=kwargs["method"],
            params=kwargs.get("baseline_params") or None,
            polarity=kwargs.get("polarity", "dark"),
            particle_size_px=kwargs.get("particle_size_px"),
        ).compute(scheduler="synchronous")
    else:
        from .segment.postprocess import label_frames

        assert maps is not None
        arg = maps if len(maps.data_vars) > 1 else maps[next(iter(maps.data_vars))]
        labels = label_frames(arg, **{k: kwargs[k] for k in LABEL_KEYS}).compute(
            scheduler="synchronous"
        )
    return np.asarray(labels.values, dtype=np.int32)


@_in_task(CHUNK_MODULES)
def task_labels(
    store: str,
    chunk: int,
    a: int,
    b: int,
    stage_hash: str,
    kwargs: dict,
    map_vars: list,
    _dep: Any = None,
) -> int:
    """Particle instances of frames ``a:b`` from the stored maps (or a classical baseline)."""
    ds = _open_chunk(Path(store), a, b)
    unet = kwargs.get("method", "unet") == "unet"
    maps = ds[list(map_vars)].load() if unet else None
    video = ds[IMAGE] if unet else ds[IMAGE].load()
    labels = _labels_of(video, maps, kwargs)
    _write_region(Path(store), LABELS_ARRAY, a, labels)
    _finish_chunk(Path(store), "labels", chunk, stage_hash)
    return chunk


def _measure_chunk(
    store: Path,
    chunk: int,
    video: xr.DataArray,
    labels: xr.DataArray,
    prob: xr.DataArray | None,
    stage_hash: str,
    kwargs: dict,
) -> None:
    """Regions (and contours) of one chunk in memory -> Parquet parts + marker."""
    from .measure import measure_contours, measure_regions, write_table_part

    labels = labels.assign_attrs(
        {k: video.attrs[k] for k in ("pixel_size_nm", "frame_interval_s") if k in video.attrs}
    )
    table = measure_regions(labels, video, probability=prob, shape=kwargs.get("shape")).compute(
        scheduler="synchronous"
    )
    outputs = [write_table_part(table, store, "regions", chunk)]
    if kwargs.get("contours", True):
        contours = measure_contours(
            labels, probability=prob, spacing_px=kwargs.get("contour_spacing_px", 1.0)
        ).compute(scheduler="synchronous")
        outputs.append(write_table_part(contours, store, "contours", chunk))
    _finish_chunk(store, "regions", chunk, stage_hash, outputs)


@_in_task(CHUNK_MODULES)
def task_regions(
    store: str, chunk: int, a: int, b: int, stage_hash: str, kwargs: dict, _dep: Any = None
) -> int:
    """Region properties (and contours) of frames ``a:b`` as one Parquet part per table."""
    ds = _open_chunk(Path(store), a, b)
    names = [IMAGE, LABELS] + (["probability"] if "probability" in ds else [])
    ds = ds[names].load()  # not the other maps: measuring does not read them
    prob = ds["probability"] if "probability" in ds else None
    _measure_chunk(Path(store), chunk, ds[IMAGE], ds[LABELS], prob, stage_hash, kwargs)
    return chunk


@_in_task(CHUNK_MODULES)
def task_chunk(
    store: str,
    chunk: int,
    a: int,
    b: int,
    hashes: dict,
    maps_kw: dict,
    labels_kw: dict,
    measure_kw: dict,
    _dep: Any = None,
) -> int:
    """Maps, labels and regions of frames ``a:b`` in one task (a chunk none of them has).

    The same outputs and markers, in the same order, as ``task_maps``,
    ``task_labels`` and ``task_regions`` one after the other, without reading
    back from the store what this task has just written.
    """
    from .segment.infer import predict_maps

    path = Path(store)
    video = _open_chunk(path, a, b)[IMAGE].load()
    maps = predict_maps(video, **maps_kw).compute(scheduler="synchronous")
    for v in maps.data_vars:
        _write_region(path, str(v), a, np.asarray(maps[v].values, dtype=np.float32))
    _finish_chunk(path, "maps", chunk, hashes["maps"])
    labels = _labels_of(video, maps, labels_kw)
    _write_region(path, LABELS_ARRAY, a, labels)
    _finish_chunk(path, "labels", chunk, hashes["labels"])
    labels_da = xr.DataArray(labels, dims=video.dims, coords=video.coords, name=LABELS)
    prob = maps["probability"].assign_coords(video.coords)
    _measure_chunk(path, chunk, video, labels_da, prob, hashes["regions"], measure_kw)
    return chunk


@_in_task(TASK_MODULES)
def task_tracks(store: str, stage_hash: str, kwargs: dict, _deps: Any = None) -> int:
    """Link the whole video's regions into tracks (bounded memory, windowed)."""
    import trackpy

    from .track import link_store

    trackpy.quiet()  # no per-frame messages from the worker

    link_store(store, overwrite=True, **kwargs)
    _set_stage_record(Path(store), "tracks", {"hash": stage_hash, "complete": True})
    tracks = table_path(store, "tracks")
    return (
        int(pd.read_parquet(tracks, columns=["particle"])["particle"].nunique())
        if tracks.exists()
        else 0
    )


ANALYSES = ("diffusion", "interaction", "etching", "assembly")


def analysis_runner(name: str) -> Callable:
    """The ``run_<name>(store, *, overwrite)`` function of an analysis."""
    import importlib

    if name not in ANALYSES:
        raise ConfigError(f"unknown analysis {name!r}; available: {', '.join(ANALYSES)}")
    module = importlib.import_module(f"lptem_dask.analysis.{name}")
    return getattr(module, f"run_{name}")


@_in_task(TASK_MODULES)
def task_analyses(store: str, stage_hash: str, analyses: list, _dep: Any = None) -> list:
    done = []
    for name in analyses:
        runner = analysis_runner(name)
        runner(store, overwrite=True)
        done.append(name)
    _set_stage_record(Path(store), "analyses", {"hash": stage_hash, "complete": True})
    return done


@_in_task(TASK_MODULES)
def task_report(store: str, stage_hash: str, _dep: Any = None) -> str:
    from .report import write_report

    path = write_report(store, overwrite=True)
    _set_stage_record(Path(store), "report", {"hash": stage_hash, "complete": True})
    return str(path)


# --------------------------------------------------------------------------- run


def _link_kwargs(config: PipelineConfig) -> dict[str, Any]:
    return dump_config(config.link)


def _submit_video(client, plan: VideoPlan, config: PipelineConfig) -> dict[str, list]:
    """Submit the remaining tasks of one video; return futures per stage."""
    store = str(plan.store)
    h = plan.hashes
    overrides = {"pixel_size_nm": config.pixel_size_nm, "frame_interval_s": config.frame_interval_s}
    maps_kw = {**_maps_kwargs(config), **plan.maps_overrides}
    s = config.segment
    labels_kw = dict(
        threshold=s.threshold,
        min_area_px=s.min_area_px,
        split_touching=s.split_touching,
        marker_threshold=s.marker_threshold,
        min_confidence=s.min_confidence,
        min_relative_area=s.min_relative_area,
        particle_area_px=s.particle_area_px,
        method=s.method,
        baseline_params=dict(s.baseline_params),
        polarity=s.polarity,
        particle_size_px=s.particle_size_px,
    )
    measure_kw = dump_config(config.measure)
    map_vars = _stage_record(plan.store, "maps").get("variables", ["probability"])
    futures: dict[str, list] = {st: [] for st in ALL_STAGES}
    prev: dict[int, Any] = {}
    tag = plan.store.name
    fusable = ("maps", "labels", "regions")
    fused: set[int] = set()
    if config.segment.method == "unet":
        fused = set.intersection(*(set(plan.todo.get(st, ())) for st in fusable))
    for stage in CHUNK_STAGES:
        todo = set(plan.todo.get(stage, ()))
        for i, (a, b) in enumerate(plan.chunks):
            dep: Any = prev.get(i)
            if i not in todo:
                continue
            if i in fused and stage in fusable:
                if stage == "maps":  # one task for the three stages of this chunk
                    key = f"chunk-{tag}-{i}-{h['regions'][:8]}"
                    f = client.submit(
                        task_chunk, store, i, a, b, h, maps_kw, labels_kw, measure_kw, dep, key=key
                    )
                    prev[i] = f
                    for st in fusable:
                        futures[st].append(f)
                continue
            key = f"{stage}-{tag}-{i}-{h[stage][:8]}"
            if stage == "image":
                f = client.submit(
                    task_image, str(plan.source), store, i, a, b, h[stage], overrides, key=key
                )
            elif stage == "maps":
                f = client.submit(task_maps, store, i, a, b, h[stage], maps_kw, dep, key=key)
            elif stage == "labels":
                f = client.submit(
                    task_labels, store, i, a, b, h[stage], labels_kw, map_vars, dep, key=key
                )
            else:
                f = client.submit(task_regions, store, i, a, b, h[stage], measure_kw, dep, key=key)
            prev[i] = f
            futures[stage].append(f)
    last_chunk = list(prev.values())
    dep = last_chunk
    if "tracks" in plan.video_todo:
        dep = client.submit(
            task_tracks,
            store,
            h["tracks"],
            _link_kwargs(config),
            last_chunk,
            key=f"tracks-{tag}-{h['tracks'][:8]}",
        )
        futures["tracks"].append(dep)
    if "analyses" in plan.video_todo:
        dep = client.submit(
            task_analyses,
            store,
            h["analyses"],
            list(config.analyses),
            dep,
            key=f"analyses-{tag}-{h['analyses'][:8]}",
        )
        futures["analyses"].append(dep)
    if "report" in plan.video_todo and config.report:
        dep = client.submit(
            task_report, store, h["report"], dep, key=f"report-{tag}-{h['report'][:8]}"
        )
        futures["report"].append(dep)
    return futures


def _short_error(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if isinstance(exc, LptemError) else f"{type(exc).__name__}: {msg}"


def run_pipeline(
    config: PipelineConfig,
    *,
    config_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    client=None,
) -> pd.DataFrame:
    """Run every video of ``config`` through every stage; return the status table.

    Parameters
    ----------
    config : PipelineConfig
        The run's configuration (videos, output folder, cluster, stages).
    config_path : path, optional
        Where ``config`` came from; relative video paths are taken relative to
        its folder.
    overwrite : bool
        Discard earlier outputs of these videos and start afresh.
    progress : bool
        Show one live progress bar per stage.
    client : distributed.Client, optional
        Use this client instead of starting one from ``config.cluster``.

    Returns
    -------
    pandas.DataFrame
        One row per video: ``video``, ``store``, ``status`` (done, skipped,
        failed), ``error``, ``frames``, ``chunks_computed``, ``seconds``. Also
        saved as ``run_status.csv`` in the output folder. When a task failed
        because the disk is full (or a file-size, quota or permission limit was
        hit), ``status.attrs["storage_error"]`` holds the first such error
        (``errno``, ``strerror``, ``filename``); ``lptem run`` then exits with
        status 2 and one line.
    """
    base = Path(config_path).parent if config_path else None
    sources = expand_manifest(config.videos, base=base)
    out_dir = Path(config.output_dir)
    if base is not None and not out_dir.is_absolute():
        out_dir = base / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    stores = [out_dir / f"{_stem(s)}.zarr" for s in sources]
    if len(set(stores)) != len(stores):
        raise ConfigError("two videos of the manifest have the same name; rename one of them")
    _write_text_atomic(out_dir / "run_config.json", json.dumps(dump_config(config), indent=1))
    status = run_videos(
        list(zip(sources, stores, strict=True)),
        config,
        overwrite=overwrite,
        progress=progress,
        client=client,
        report_dir=out_dir,
    )
    status.to_csv(out_dir / "run_status.csv", index=False)
    return status


def stored_config(store: str | os.PathLike) -> PipelineConfig:
    """The resolved configuration of the last run on ``store``.

    Raises
    ------
    StoreError
        If the store was never processed by ``lptem run``/``lptem segment``.
    """
    from .config import config_from_mapping

    path = Path(store) / STATE_DIR / "config.json"
    if not path.exists():
        raise StoreError(
            f"{str(store)!r} has not been segmented yet (no {STATE_DIR}/config.json); "
            f"run `lptem segment {store}` or `lptem run CONFIG` first"
        )
    return config_from_mapping(PipelineConfig, json.loads(path.read_text()), source=repr(str(path)))


def _stem(source: Path) -> str:
    stem = source.stem if source.is_file() else source.name
    return stem[: -len(".zarr")] if stem.endswith(".zarr") else stem


def run_videos(
    pairs: Sequence[tuple[Path, Path]],
    config: PipelineConfig,
    *,
    until: str = "report",
    overwrite: bool = False,
    progress: bool = True,
    client=None,
    report_dir: Path | None = None,
) -> pd.DataFrame:
    """Run (source, store) pairs through the stages up to ``until``; the status table.

    A source equal to its store (a store written by ``lptem ingest``) is
    processed in place: its ``image`` is kept as it is.
    """
    from distributed import as_completed

    from .cluster import dashboard_link, make_client

    if until not in ALL_STAGES:
        raise ConfigError(f"unknown stage {until!r}; stages: {', '.join(ALL_STAGES)}")
    own_client = client is None
    if own_client:
        client = make_client(config.cluster)
    print(f"Dask dashboard: {dashboard_link(client)}", flush=True)
    warm = _warm_workers(client)  # workers import torch & co while this process plans
    rows: dict[str, dict[str, Any]] = {}
    storage_error: dict[str, Any] | None = None  # the first full-disk (or limit) error
    t0 = time.time()
    try:
        import contextlib

        with contextlib.ExitStack() as stack:
            plans: list[VideoPlan] = []
            for src, store in pairs:
                row: dict[str, Any] = {
                    "video": str(src),
                    "store": str(store),
                    "status": "pending",
                    "error": "",
                    "frames": 0,
                    "chunks_computed": 0,
                    "seconds": 0.0,
                }
                rows[str(store)] = row
                try:
                    stack.enter_context(store_lock(store))
                    plan = plan_video(src, store, config, overwrite=overwrite, until=until)
                except LockedError:
                    raise  # another run owns this output: refuse the whole run
                except Exception as exc:  # a broken file must not stop the others
                    logger.debug("planning %s failed:\n%s", src, traceback.format_exc())
                    row.update(status="failed", error=_short_error(exc))
                    continue
                row["frames"] = plan.n_frames
                n_work = sum(len(v) for v in plan.todo.values()) + len(plan.video_todo)
                if n_work == 0:
                    row["status"] = "skipped"
                    continue
                plans.append(plan)
            if report_dir is not None:
                stack.enter_context(_best_effort_performance_report(report_dir))
            all_futs: dict[str, list] = {st: [] for st in ALL_STAGES}
            owner: dict[str, str] = {}
            if plans:  # nothing to compute: no need to wait
                _await_warm_up(warm)
            for plan in plans:
                futs = _submit_video(client, plan, config)
                for st, fl in futs.items():
                    all_futs[st].extend(fl)
                    for f in fl:
                        owner[f.key] = str(plan.store)
            # what linking, the analyses and the report import (1.8 s on 2 cores), off
            # the path to the first chunk task: at the lowest priority, so it runs when a
            # worker thread has no chunk task ready, and after the first chunk task, whose
            # own lazy imports (scikit-image's submodules, ...) are then done, so no chunk
            # task imports beside it; only for runs with a per-video stage to do
            first = next((f for st in CHUNK_STAGES for f in all_futs[st]), None)
            if first is not None and any(plan.video_todo for plan in plans):
                warm += _warm_workers(client, TASK_MODULES, after=first, priority=-100)
            bars = _progress_bars(all_futs, enabled=progress)
            every = list({f.key: f for fl in all_futs.values() for f in fl}.values())
            stages_of: dict[str, list[str]] = {}
            for st, fl in all_futs.items():
                for f in fl:  # a fused chunk task belongs to several stages
                    stages_of.setdefault(f.key, []).append(st)
            for fut in as_completed(every):
                row = rows[owner[fut.key]]
                if fut.status == "error":
                    failure = fut.exception()
                    if row["status"] != "failed":
                        row.update(status="failed", error=_short_error(failure))
                    if isinstance(failure, OSError) and failure.errno in STORAGE_ERRNOS:
                        storage_error = storage_error or {
                            "errno": failure.errno,
                            "strerror": failure.strerror or str(failure),
                            "filename": failure.filename,
                        }
                else:
                    row["chunks_computed"] += sum(st in CHUNK_STAGES for st in stages_of[fut.key])
                for st in stages_of[fut.key]:
                    bars.update(st)
            bars.close()
            for plan in plans:
                row = rows[str(plan.store)]
                if row["status"] != "failed":
                    for stage in plan.todo:
                        rec = _stage_record(plan.store, stage)
                        _set_stage_record(plan.store, stage, {**rec, "complete": True})
                    row["status"] = "done"
    finally:
        warm.clear()  # held until now: a released future may be cancelled unrun
        if own_client:
            client.close()
    status = pd.DataFrame(list(rows.values()))
    status["seconds"] = round(time.time() - t0, 2)
    if storage_error is not None:
        status.attrs["storage_error"] = storage_error
    return status


@contextlib.contextmanager
def _best_effort_performance_report(report_dir: Path):
    """Dask's performance report of the run; failing to write it never fails the run."""
    from distributed import performance_report

    report = performance_report(filename=str(report_dir / "dask-performance-report.html"))
    try:
        report.__enter__()
    except Exception as exc:  # pragma: no cover - dashboard not available
        logger.warning("no Dask performance report: %s", exc)
        yield
        return
    try:
        yield
    finally:
        try:
            report.__exit__(None, None, None)
        except Exception as exc:
            logger.warning("could not write the Dask performance report: %s", exc)


class _Bars:
    def __init__(self, totals: dict[str, int], enabled: bool):
        self.bars = {}
        if enabled:
            from tqdm.auto import tqdm

            for i, (stage, n) in enumerate(totals.items()):
                if n:
                    self.bars[stage] = tqdm(
                        total=n, desc=f"{stage:>8}", position=i, leave=True, unit="task"
                    )

    def update(self, stage: str) -> None:
        if stage in self.bars:
            self.bars[stage].update(1)

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


def _progress_bars(futs: dict[str, list], *, enabled: bool) -> _Bars:
    return _Bars({st: len(fl) for st, fl in futs.items()}, enabled)


def clear_outputs(store: str | os.PathLike) -> None:
    """Remove a store and its lock (what ``--overwrite`` does before a run)."""
    shutil.rmtree(store, ignore_errors=True)
