"""The ``lptem`` command line.

Each pipeline stage is a sub-command. Every error caused by bad input is
printed as one line on stderr and the command exits with status 2 (no
traceback); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._version import __version__
from .errors import STORAGE_ERRNOS, LptemError

__all__ = ["app", "main"]

app = typer.Typer(
    name="lptem",
    help="Liquid-phase TEM videos to physics: simulate, segment, measure, link, analyse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_STATE = {"debug": False, "verbose": False}


def _quiet_dask_logs() -> None:
    """Keep Dask's INFO chatter (worker start/stop) off the terminal unless --verbose."""
    import distributed  # noqa: F401  (configures its loggers on import)

    level = logging.INFO if _STATE["verbose"] else logging.WARNING
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(level)
    if not _STATE["verbose"]:
        # dask's size estimates of task arguments are harmless noise, and a failed task's
        # traceback is reported once, as lptem's own one-line error or in the status table
        logging.getLogger("distributed.sizeof").setLevel(logging.ERROR)
        for name in (
            "distributed.core",
            "distributed.worker",
            "distributed.scheduler",
            "distributed.nanny",
        ):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lptem-dask {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log INFO messages.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    _STATE["verbose"] = verbose
    _STATE["debug"] = debug


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def format_info(info: dict) -> str:
    """Render the dict of :func:`lptem_dask.io.describe` as aligned text lines."""
    lines = []
    for key, value in info.items():
        if key.endswith("bytes") and isinstance(value, (int, float)):
            value = f"{_human_bytes(value)} ({int(value)} bytes)"
        lines.append(f"{key:>22}: {value}")
    return "\n".join(lines)


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="Video file, frame folder or Zarr store.")],
    pixel_size_nm: Annotated[
        float | None, typer.Option(help="Override the pixel size (nm).")
    ] = None,
    frame_interval_s: Annotated[
        float | None, typer.Option(help="Override the frame interval (s).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Describe a video: frames, shape, dtype, chunks, pixel size, frame interval, size on disk."""
    from .io import describe, open_video

    video = open_video(path, pixel_size_nm=pixel_size_nm, frame_interval_s=frame_interval_s)
    desc = describe(video)
    typer.echo(json.dumps(desc, indent=2, default=str) if as_json else format_info(desc))


@app.command()
def ingest(
    src: Annotated[Path, typer.Argument(help="Input video (any supported format).")],
    dst: Annotated[Path, typer.Argument(help="Output Zarr store, e.g. video.zarr.")],
    pixel_size_nm: Annotated[
        float | None, typer.Option(help="Pixel size (nm), overrides the file.")
    ] = None,
    frame_interval_s: Annotated[
        float | None, typer.Option(help="Frame interval (s), overrides the file.")
    ] = None,
    chunk_mb: Annotated[float, typer.Option(help="Target size of one frame chunk (MB).")] = 32.0,
    overwrite: Annotated[bool, typer.Option(help="Replace DST if it exists.")] = False,
) -> None:
    """Stream a video into a chunked, compressed Zarr store."""
    from .io import ingest as _ingest

    _ingest(
        src,
        dst,
        overwrite=overwrite,
        chunk_mb=chunk_mb,
        pixel_size_nm=pixel_size_nm,
        frame_interval_s=frame_interval_s,
    )
    typer.echo(f"wrote {dst}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo_out"),
    overwrite: Annotated[bool, typer.Option(help="Replace earlier demo outputs.")] = True,
) -> None:
    """Run the main job on embedded defaults: a small simulated video, ingested and described."""
    from .demo import run_demo

    _quiet_dask_logs()
    result = run_demo(out, overwrite=overwrite)
    if (result["status"]["status"] == "failed").any():
        raise typer.Exit(1)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML (see configs/default.yaml).")],
    overwrite: Annotated[
        bool, typer.Option(help="Discard earlier outputs of these videos.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show live progress bars per stage.")] = True,
) -> None:
    """Run every video of a manifest through every stage (resumable: rerun to continue)."""
    from .config import PipelineConfig, load_config
    from .pipeline import run_pipeline

    cfg = load_config(config, PipelineConfig)
    _quiet_dask_logs()
    status = run_pipeline(cfg, config_path=config, overwrite=overwrite, progress=progress)
    typer.echo(status.drop(columns=["seconds"]).to_string(index=False))
    out_dir = Path(cfg.output_dir)
    if not out_dir.is_absolute():
        out_dir = config.parent / out_dir
    typer.echo(f"status saved to {out_dir / 'run_status.csv'}")
    storage = status.attrs.get("storage_error")
    if storage:  # the disk is full (or a limit was hit): one line, exit 2, as elsewhere
        raise OSError(storage["errno"], storage["strerror"], storage["filename"])
    if (status["status"] == "failed").any():
        raise typer.Exit(1)


@app.command()
def report(
    store: Annotated[Path, typer.Argument(help="A processed-video store (NAME.zarr).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing report.")] = True,
) -> None:
    """Write the self-contained HTML report of a processed video."""
    from .report import write_report

    typer.echo(f"wrote {write_report(store, overwrite=overwrite)}")


@app.command()
def simulate(
    config: Annotated[
        str, typer.Argument(help="Preset name (prisms, rods, cubes, spheres, mixed) or YAML path.")
    ],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of images.")],
    out: Annotated[Path, typer.Option("--out", help="Output Zarr store, e.g. train.zarr.")],
    seed: Annotated[int, typer.Option(help="Seed; with the image index it fixes every image.")] = 0,
    chunk_size: Annotated[int, typer.Option(min=1, help="Images per chunk.")] = 8,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Simulate a training set of LPTEM images with exact ground truth into Zarr."""
    from .simulate import write_training_set

    path = write_training_set(
        out, n, config, seed=seed, chunk_size=chunk_size, overwrite=overwrite, progress=True
    )
    typer.echo(f"wrote {path}")


@app.command()
def analyze(
    kind: Annotated[str, typer.Argument(help="diffusion | interaction | etching | assembly")],
    store: Annotated[Path, typer.Argument(help="A processed-video store (NAME.zarr) with tables.")],
    overwrite: Annotated[
        bool, typer.Option(help="Replace earlier results of this analysis.")
    ] = True,
) -> None:
    """Fit the physics of one store; results go to STORE/results/KIND/ (JSON, xarray, figures)."""
    from .pipeline import analysis_runner

    result = analysis_runner(kind)(store, overwrite=overwrite)
    typer.echo(f"wrote {Path(store) / 'results' / kind}")
    summary = getattr(result, "summary", None)
    if callable(summary):
        summary = summary()
    if isinstance(summary, dict):
        typer.echo(json.dumps(summary, indent=1, default=str))


def _print_status(status) -> None:
    typer.echo(status.drop(columns=["seconds"]).to_string(index=False))
    if (status["status"] == "failed").any():
        raise typer.Exit(1)


@app.command("segment")
def segment_cmd(
    video: Annotated[
        Path, typer.Argument(help="Input video (any format) or a store from `lptem ingest`.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output store; default: in place for a store, else VIDEO.zarr beside it."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="'default', 'rods' (shipped models) or a checkpoint path.")
    ] = "default",
    particle_size_px: Annotated[
        float | None, typer.Option(help="Typical particle diameter (px).")
    ] = None,
    polarity: Annotated[str, typer.Option(help="dark | bright | auto")] = "dark",
    tta: Annotated[
        bool,
        typer.Option(help="Test-time augmentation: mean of 8 rotated/flipped copies (8x slower)."),
    ] = False,
    threshold: Annotated[float, typer.Option(help="Probability threshold.")] = 0.5,
    min_confidence: Annotated[
        float, typer.Option(help="Drop regions whose mean probability is lower (0: keep all).")
    ] = 0.65,
    min_relative_area: Annotated[
        float,
        typer.Option(
            help="Drop regions smaller than this fraction of the frame's median region "
            "(0 for frames that mix particles ten times apart in area)."
        ),
    ] = 0.1,
    particle_area_px: Annotated[
        float | None,
        typer.Option(
            help="Monodisperse samples: area of one particle (px); regions of n >= 2 "
            "particle areas are split into n. Leave unset for polydisperse samples."
        ),
    ] = None,
    pixel_size_nm: Annotated[
        float | None, typer.Option(help="Override the pixel size (nm).")
    ] = None,
    frame_interval_s: Annotated[
        float | None, typer.Option(help="Override the frame interval (s).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Recompute maps and labels.")] = False,
) -> None:
    """U-Net maps and particle labels of every frame, written into the video's store."""
    from .config import PipelineConfig, SegmentConfig, config_from_mapping
    from .pipeline import run_videos

    if out is None:
        out = video if (video / "zarr.json").exists() else video.with_suffix(".zarr")
    seg = config_from_mapping(
        SegmentConfig,
        {
            "model": model,
            "particle_size_px": particle_size_px,
            "polarity": polarity,
            "tta": tta,
            "threshold": threshold,
            "min_confidence": min_confidence,
            "min_relative_area": min_relative_area,
            "particle_area_px": particle_area_px,
        },
        source="the command line",
    )
    cfg = PipelineConfig(
        videos=(str(video),),
        pixel_size_nm=pixel_size_nm,
        frame_interval_s=frame_interval_s,
        segment=seg,
    )
    _quiet_dask_logs()
    _print_status(run_videos([(video, out)], cfg, until="labels", overwrite=overwrite))


@app.command()
def measure(
    store: Annotated[Path, typer.Argument(help="A segmented store (NAME.zarr).")],
    shape: Annotated[
        str | None, typer.Option(help="prism | rod | cube: add shape descriptors.")
    ] = None,
    contours: Annotated[bool, typer.Option(help="Also write outlines with curvature.")] = True,
) -> None:
    """Region properties of every particle in every frame -> STORE/tables/regions.parquet."""
    from .config import MeasureConfig, config_from_mapping
    from .pipeline import run_videos, stored_config

    cfg = stored_config(store)
    m = config_from_mapping(
        MeasureConfig, {"shape": shape, "contours": contours}, source="the command line"
    )
    cfg = cfg.model_copy(update={"measure": m})
    _quiet_dask_logs()
    _print_status(run_videos([(store, store)], cfg, until="regions"))


@app.command()
def track(
    store: Annotated[Path, typer.Argument(help="A measured store (NAME.zarr).")],
    search_range_nm: Annotated[
        float, typer.Option(help="Largest displacement between frames (nm).")
    ],
    memory: Annotated[int, typer.Option(help="Frames a particle may vanish.")] = 3,
    drift: Annotated[str | None, typer.Option(help="tracks | registration")] = None,
    symmetry_deg: Annotated[float | None, typer.Option(help="120 prism, 90 cube, 180 rod.")] = None,
    min_length: Annotated[int, typer.Option(help="Shortest track kept (frames).")] = 3,
    window_frames: Annotated[int, typer.Option(help="Frames per linking window.")] = 500,
) -> None:
    """Link regions into trajectories (trackpy) -> STORE/tables/tracks.parquet."""
    from .config import LinkConfig, config_from_mapping
    from .pipeline import run_videos, stored_config

    cfg = stored_config(store)
    link = config_from_mapping(
        LinkConfig,
        {
            "search_range_nm": search_range_nm,
            "memory": memory,
            "drift": drift,
            "symmetry_deg": symmetry_deg,
            "min_length": min_length,
            "window_frames": window_frames,
        },
        source="the command line",
    )
    cfg = cfg.model_copy(update={"link": link, "report": False})
    _quiet_dask_logs()
    _print_status(run_videos([(store, store)], cfg, until="tracks"))


@app.command()
def export(
    store: Annotated[Path, typer.Argument(help="A processed store.")],
    table: Annotated[str, typer.Argument(help="regions | contours | tracks | ...")],
    out: Annotated[Path, typer.Argument(help="Output CSV file.")],
    overwrite: Annotated[bool, typer.Option(help="Replace OUT.")] = False,
) -> None:
    """Write one table of a store to CSV."""
    from .results import export_csv

    typer.echo(f"wrote {export_csv(store, table, out, overwrite=overwrite)}")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training YAML (see configs/train/).")],
    out: Annotated[
        Path, typer.Option(help="Folder for the checkpoint (.safetensors + .json card).")
    ] = Path("models"),
    name: Annotated[str, typer.Option(help="Checkpoint name.")] = "model",
    finetune: Annotated[
        Path | None, typer.Option(help="Folder of your own images/ and masks/ to fine-tune on.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing checkpoint of that name.")
    ] = False,
) -> None:
    """Train (or fine-tune) a U-Net on simulated LPTEM images; writes weights and a model card."""
    from .segment.train import train_command

    path = train_command(
        config, out_dir=out, name=name, finetune=finetune, overwrite=overwrite, progress=True
    )
    typer.echo(f"wrote {path}")


benchmark_app = typer.Typer(
    help="Reproducible benchmarks (figures saved as CSV/JSON/PNG).", no_args_is_help=True
)
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("segmentation")
def benchmark_segmentation_cmd(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Benchmark YAML (default: configs/benchmark/segmentation.yaml settings)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("benchmark_segmentation"),
    quick: Annotated[bool, typer.Option(help="A small, fast version (for tests).")] = False,
) -> None:
    """U-Net against tuned classical methods across CNR levels, shapes and real images."""
    from .benchmark import benchmark_segmentation

    table = benchmark_segmentation(config, out, quick=quick, progress=True)
    typer.echo(table.to_string(index=False))
    typer.echo(f"results in {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lptem`` console script."""
    for stream in (sys.stdout, sys.stderr):
        # file names that are not UTF-8 come back out as the bytes they were given
        try:
            stream.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # pragma: no cover - not a text file
            pass
    try:
        app(args=argv, standalone_mode=True)
    except LptemError as exc:
        if _STATE["debug"]:
            raise
        msg = " ".join(str(exc).split())
        typer.echo(f"lptem: error: {msg}", err=True)
        sys.exit(2)
    except OSError as exc:
        # the disk is full, a file-size or quota limit was hit, or the output is
        # read-only: the environment, not a bug; one line and exit 2 like bad input
        if _STATE["debug"] or exc.errno not in STORAGE_ERRNOS:
            raise
        where = f" writing {exc.filename!r}" if exc.filename else ""
        typer.echo(
            f"lptem: error: {exc.strerror or exc}{where} (errno {errno.errorcode.get(exc.errno or 0, exc.errno)});"
            " free disk space, raise the file-size/quota limit or choose another output,"
            " then run the command again",
            err=True,
        )
        sys.exit(2)
    except KeyboardInterrupt:  # pragma: no cover
        typer.echo("lptem: interrupted", err=True)
        sys.exit(130)
    finally:
        if argv is None:  # the console script, about to exit: see pipeline._freeze_imported_objects
            import gc

            gc.freeze()  # the exit then skips a GC pass over every imported object


if __name__ == "__main__":  # pragma: no cover
    main()
