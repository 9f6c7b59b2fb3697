"""Configuration: one pydantic model per pipeline stage, loaded from YAML.

Every model forbids unknown keys and is frozen, so a typo in a YAML file is an
error that names the key, the file and the allowed keys, never a silently
ignored setting. Units are part of the field names (``pixel_size_nm``,
``frame_interval_s``). The resolved configuration is saved beside every
output (see :func:`config_hash` and :mod:`lptem_dask.store`).

Stage models defined in other modules (the simulator's, the U-Net trainer's)
derive from :class:`StageConfig` as well.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

__all__ = [
    "StageConfig",
    "ClusterConfig",
    "IngestConfig",
    "SegmentConfig",
    "MeasureConfig",
    "LinkConfig",
    "PipelineConfig",
    "load_config",
    "config_from_mapping",
    "config_hash",
    "dump_config",
]

T = TypeVar("T", bound=BaseModel)


class StageConfig(BaseModel):
    """Base of every configuration model: unknown keys are refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ClusterConfig(StageConfig):
    """Where Dask runs.

    ``kind`` is ``"local"`` (a LocalCluster of processes on this machine, the
    default), ``"address"`` (connect to a running scheduler at ``address``),
    ``"slurm"`` (dask-jobqueue SLURMCluster, ``jobs`` jobs) or ``"cuda"``
    (dask-cuda LocalCUDACluster, one worker per GPU).
    """

    kind: Literal["local", "address", "slurm", "cuda", "synchronous"] = "local"
    n_workers: int | None = Field(
        default=None, ge=1, description="workers (local); None: one per 2 cores"
    )
    threads_per_worker: int | None = Field(default=None, ge=1)
    memory_limit: str | None = Field(default="auto", description="per worker, e.g. '4GiB'")
    dashboard_host: str = Field(default="127.0.0.1", description="interface the dashboard binds to")
    dashboard_port: int = Field(default=8787, ge=0, le=65535, description="0 picks a free port")
    address: str | None = Field(default=None, description="scheduler address for kind='address'")
    # slurm
    queue: str | None = None
    account: str | None = None
    cores: int = Field(default=8, ge=1)
    memory: str = "32GiB"
    walltime: str = "04:00:00"
    jobs: int = Field(default=1, ge=1)
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    local_directory: str | None = None
    # cuda
    cuda_visible_devices: str | None = None


class IngestConfig(StageConfig):
    """How a video is written to a chunked Zarr store."""

    chunk_mb: float = Field(default=32.0, gt=0, description="target size of one frame chunk, MB")
    compression_level: int = Field(
        default=3, ge=0, le=9, description="zstd level (0 = no compression)"
    )


def _format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        kind = err["type"]
        if kind == "extra_forbidden":
            # find the sub-model the key belongs to, to list allowed keys
            sub: Any = model
            for p in err["loc"][:-1]:
                field = getattr(sub, "model_fields", {}).get(p)
                ann = getattr(field, "annotation", None)
                sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
                if sub is None:
                    break
            allowed = sorted(sub.model_fields) if sub is not None else []
            parts.append(f"unknown key `{loc}`; allowed keys: {', '.join(allowed)}")
        else:
            given = err.get("input")
            given_s = repr(given)
            if len(given_s) > 60:
                given_s = given_s[:57] + "..."
            parts.append(f"`{loc}`: {err['msg']} (given {given_s})")
    return f"invalid configuration in {source}: " + "; ".join(parts)


def config_from_mapping(model: type[T], data: dict | None, *, source: str = "<mapping>") -> T:
    """Validate a mapping into ``model``, raising :class:`ConfigError` with a clear message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid configuration in {source}: expected a mapping of keys to values, "
            f"got {type(data).__name__}; write `key: value` lines"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, model, source)) from None


def load_config(path: str | Path, model: type[T]) -> T:
    """Load a YAML file into a configuration model.

    Parameters
    ----------
    path : str or Path
        YAML file.
    model : type
        A :class:`StageConfig` subclass.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML, or has unknown keys or
        wrong types; the message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {str(path)!r} does not exist; check the path")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"configuration file {str(path)!r} is not UTF-8 text; save it as UTF-8 YAML"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = str(exc).replace("\n", " ")
        raise ConfigError(f"configuration file {str(path)!r} is not valid YAML: {msg}") from None
    except RecursionError:
        raise ConfigError(
            f"configuration file {str(path)!r} nests lists or mappings too deeply; "
            "a configuration is a few levels of `key: value` lines"
        ) from None
    if _n_nodes(data, _MAX_CONFIG_NODES) > _MAX_CONFIG_NODES:
        raise ConfigError(
            f"configuration file {str(path)!r} expands to more than {_MAX_CONFIG_NODES} values "
            "(YAML aliases `*name` repeated?); write the values out instead of aliases"
        )
    return config_from_mapping(model, data, source=repr(str(path)))


#: values a configuration may hold once YAML aliases are expanded
_MAX_CONFIG_NODES = 100_000


def _n_nodes(data: object, limit: int) -> int:
    """Values in ``data`` counting repeats of aliased ones; stops counting past ``limit``."""
    n, stack = 0, [data]
    while stack and n <= limit:
        item = stack.pop()
        n += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return n


def dump_config(config: BaseModel) -> dict:
    """Resolved configuration as a JSON-compatible dict."""
    return json.loads(config.model_dump_json())


def config_hash(config: BaseModel | dict) -> str:
    """A short, stable hash of a resolved configuration (16 hex digits)."""
    data = dump_config(config) if isinstance(config, BaseModel) else config
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class SegmentConfig(StageConfig):
    """U-Net inference and labelling (``predict_maps`` + ``label_frames``).

    ``method`` other than ``"unet"`` picks a classical baseline of
    :mod:`lptem_dask.segment.baselines` (with ``baseline_params``, e.g. the
    settings tuned by ``lptem benchmark segmentation``); it writes labels but no
    probability maps.
    """

    method: Literal[
        "unet", "otsu", "li", "triangle", "sauvola", "local", "watershed", "canny", "random_forest"
    ] = "unet"
    baseline_params: dict[str, Any] = Field(default_factory=dict)

    model: str = Field(
        default="default", description='"default", "rods" (shipped models) or a checkpoint path'
    )
    particle_size_px: float | None = Field(
        default=None, gt=0, description="typical particle diameter, px"
    )
    polarity: Literal["dark", "bright", "auto"] = "dark"
    batch_size: int | None = Field(
        default=None, ge=1, description="frames per forward pass; null: 1 on CPU, 8 on GPU"
    )
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tta: bool = Field(
        default=False,
        description="test-time augmentation: mean maps of 8 rotated/flipped copies (8x slower)",
    )
    threshold: float = Field(default=0.5, gt=0, lt=1)
    min_area_px: int = Field(default=4, ge=1)
    split_touching: bool = True
    marker_threshold: float = Field(
        default=0.3, ge=0, lt=1, description="watershed seeds: probability - boundary above this"
    )
    min_confidence: float = Field(
        default=0.65, ge=0, lt=1, description="drop regions whose mean probability is lower"
    )
    min_relative_area: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="drop regions smaller than this fraction of the frame's median region area",
    )
    particle_area_px: float | None = Field(
        default=None,
        gt=0,
        description="monodisperse samples: split regions of n >= 2 particle areas (px) into n",
    )


class MeasureConfig(StageConfig):
    """Per-frame region properties and outlines."""

    shape: Literal["prism", "rod", "cube"] | None = Field(
        default=None,
        description="add this shape's descriptors (prism/cube vertices, rod length and caps)",
    )
    contours: bool = Field(default=True, description="also write the contours table")
    contour_spacing_px: float = Field(
        default=1.0, gt=0, description="arc-length spacing of outline points, px"
    )


class LinkConfig(StageConfig):
    """Linking regions into trajectories with trackpy."""

    search_range_nm: float = Field(default=20.0, gt=0)
    memory: int = Field(
        default=3, ge=0, description="frames a particle may vanish and still be linked"
    )
    adaptive_stop: float | None = Field(
        default=None, gt=0, description="nm; enables adaptive search"
    )
    adaptive_step: float = Field(default=0.95, gt=0, lt=1)
    drift: Literal["tracks", "registration"] | None = None
    symmetry_deg: float | None = Field(
        default=None, gt=0, le=360, description="120 prism, 90 cube, 180 rod"
    )
    min_length: int = Field(default=3, ge=1, description="drop tracks shorter than this (frames)")
    window_frames: int = Field(
        default=500, ge=2, description="frames per linking window (bounded memory)"
    )


class PipelineConfig(StageConfig):
    """Everything ``lptem run`` needs: which videos, where, and each stage's settings."""

    videos: tuple[str, ...] = Field(description="paths or glob patterns of input videos")
    output_dir: str = "lptem_out"
    pixel_size_nm: float | None = Field(default=None, gt=0, description="overrides the files")
    frame_interval_s: float | None = Field(default=None, gt=0, description="overrides the files")
    frames_per_chunk: int | None = Field(
        default=None, ge=1, description="None: about 32 MB per chunk"
    )
    cluster: ClusterConfig = ClusterConfig()
    ingest: IngestConfig = IngestConfig()
    segment: SegmentConfig = SegmentConfig()
    measure: MeasureConfig = MeasureConfig()
    link: LinkConfig = LinkConfig()
    analyses: tuple[Literal["diffusion", "interaction", "etching", "assembly"], ...] = ()
    report: bool = True
