#!/usr/bin/env python
"""The naive way against `lptem run`: wall time and peak memory, end to end, same video.

One simulated video (``--frames`` 8-bit frames of ``--size`` px, Brownian 100-nm
nanoprisms from ``lptem_dask.simulate.simulate_video``, written as a TIFF stack)
is processed twice, each in a fresh child process whose RSS, summed over it and
all its children (the Dask workers), is sampled every 0.1 s (psutil):

- **naive**: ``tifffile.imread`` the whole video into memory; build the PAPER
  preset U-Net (``build_unet("paper")``, 31 M parameters) with **random-initialised
  weights** (``torch.manual_seed(0)``; the cost of a forward pass does not depend on
  the weights; ``--naive-weights PATH`` takes a trained checkpoint instead); for each
  frame: min-max scale to [0, 1], one float32 forward (batch 1) under
  ``torch.inference_mode()`` with ``--threads`` torch threads, sigmoid > 0.5,
  ``skimage.measure.label``, ``skimage.measure.regionprops_table`` (centroid, area,
  orientation, axes, eccentricity, solidity, mean intensity); then one
  ``trackpy.link`` of the whole table (search range and memory of the pipeline's
  ``link`` settings). With random weights the thresholded maps are not particles,
  so the naive labelling/regionprops/linking work is not representative; it is
  timed separately (``naive.phases_s``) and is tiny next to the forward passes.
- **pipeline**: ``lptem run CONFIG --no-progress --overwrite`` on the TIFF: ingest
  -> U-Net maps (default model) -> labels -> regions + contours -> tracks
  (``link_store``), no report, LocalCluster with the default worker layout of this
  machine (``configs/default.yaml``: one worker per 2 cores), default settings,
  except ``particle_size_px`` = the model's training size (no rescaling) and the
  video's calibration (2.09 nm/px, 0.1 s).

Figures: the speed ratio naive wall / pipeline wall (headline: whole child
processes, imports, cluster start and model loads included; target >= 15x), the
same ratio without start-up (naive: from ``imread`` to the end of linking;
pipeline: the ``seconds`` of ``run_status.csv``, which starts after the cluster is
up), and the peak RSS of each. ``--naive-frames K`` (< ``--frames``) runs the naive
loop on the first K frames only and EXTRAPOLATES its loop time linearly to all
frames; the output and the JSON then say so (``naive.extrapolated``). Prefer the
default (both on the same frames).

Usage::

    nice -n 19 .venv/bin/python benchmarks/bench_naive.py               # full: 48 frames of 512 px
    nice -n 19 .venv/bin/python benchmarks/bench_naive.py --frames 4 --size 128   # smoke test

Writes ``benchmarks/results/naive.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import brownian_prisms, run_measured, save_result

RESULTS = Path(__file__).resolve().parent / "results"
PIXEL_SIZE_NM = 2.09
FRAME_INTERVAL_S = 0.1
SEARCH_RANGE_NM = 20.0  # configs/default.yaml link settings
MEMORY = 3


def write_video(path: Path, n_frames: int, size: int, seed: int = 0) -> int:
    """Brownian 100-nm prisms (about 36 px across), 8-bit TIFF pages; returns particles/frame."""
    import tifffile

    video, n_p = brownian_prisms(
        n_frames, size, seed=seed, pixel_size_nm=PIXEL_SIZE_NM, frame_interval_s=FRAME_INTERVAL_S
    )
    with tifffile.TiffWriter(path) as tif:
        for a in range(0, n_frames, 8):
            block = np.clip(np.rint(video[a : a + 8].values), 0, 255).astype(np.uint8)
            for f in block:
                tif.write(f, contiguous=True)
    return n_p


# --------------------------------------------------------------------------- naive child


def naive_child(video_path: str, out_json: str, threads: int, n_run: int, weights: str) -> None:
    """The naive processing (runs in its own process; writes its timings to ``out_json``)."""
    t_start = time.perf_counter()
    import pandas as pd
    import tifffile
    import torch
    import trackpy
    from skimage.measure import label, regionprops_table

    from lptem_dask.segment.unet import build_unet

    trackpy.quiet()
    t_imports = time.perf_counter() - t_start
    torch.set_num_threads(threads)
    phases = {"read": 0.0, "model": 0.0, "forward": 0.0, "label_regionprops": 0.0, "link": 0.0}
    t0 = time.perf_counter()
    video = tifffile.imread(video_path)  # the whole video in memory
    phases["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if weights == "random":
        torch.manual_seed(0)
        net = build_unet("paper").eval()
    else:
        from lptem_dask.models import load_model

        net, _ = load_model(weights)
        net.eval()
    phases["model"] = time.perf_counter() - t0
    tables = []
    for i, frame in enumerate(video[:n_run]):
        t0 = time.perf_counter()
        f = frame.astype(np.float32)
        f = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
        with torch.inference_mode():
            p = torch.sigmoid(net(torch.from_numpy(f)[None, None]))[0, 0].numpy()
        t1 = time.perf_counter()
        lab = label(p > 0.5)
        t = regionprops_table(
            lab,
            intensity_image=frame,
            properties=(
                "label",
                "centroid",
                "area",
                "orientation",
                "axis_major_length",
                "axis_minor_length",
                "eccentricity",
                "solidity",
                "intensity_mean",
            ),
        )
        df = pd.DataFrame(t).rename(columns={"centroid-0": "y", "centroid-1": "x"})
        df["frame"] = i
        tables.append(df)
        phases["forward"] += t1 - t0
        phases["label_regionprops"] += time.perf_counter() - t1
    table = pd.concat(tables, ignore_index=True)
    t0 = time.perf_counter()
    link_error = ""
    n_tracks = 0
    if len(table):
        try:
            tracks = trackpy.link(table, SEARCH_RANGE_NM / PIXEL_SIZE_NM, memory=MEMORY)
            n_tracks = int(tracks["particle"].nunique())
        except Exception as exc:  # random weights can give unlinkable maps: record it
            link_error = f"{type(exc).__name__}: {exc}"
    phases["link"] = time.perf_counter() - t0
    out = {
        "imports_s": t_imports,
        "phases_s": phases,
        "compute_s": sum(phases.values()),
        "frames_run": int(min(n_run, len(video))),
        "frames_in_memory": int(len(video)),
        "regions": int(len(table)),
        "regions_per_frame": float(len(table) / max(1, min(n_run, len(video)))),
        "tracks": n_tracks,
        "link_error": link_error,
        "weights": weights,
    }
    Path(out_json).write_text(json.dumps(out))


# --------------------------------------------------------------------------- parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=512, help="frame side, px (multiple of 16)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the naive loop")
    ap.add_argument(
        "--naive-frames",
        type=int,
        default=None,
        help="run the naive loop on this many frames and EXTRAPOLATE (default: all frames)",
    )
    ap.add_argument("--naive-weights", default="random", help="'random' or a paper checkpoint")
    ap.add_argument("--out", default=str(RESULTS / "naive.json"))
    ap.add_argument("--child", choices=["naive"], help=argparse.SUPPRESS)
    ap.add_argument("--video", help=argparse.SUPPRESS)
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "naive":
        naive_child(
            args.video,
            args.child_json,
            args.threads,
            args.naive_frames or args.frames,
            args.naive_weights,
        )
        return
    if args.size % 16:
        ap.error("--size must be a multiple of 16 (the U-Net's 2**depth)")
    n_naive = min(args.naive_frames or args.frames, args.frames)
    extrapolated = n_naive < args.frames

    import pandas as pd
    import yaml

    from lptem_dask.models import load_model
    from lptem_dask.segment.infer import _train_size

    train_size = _train_size(load_model("default")[1])
    res: dict = {
        "frames": args.frames,
        "size_px": args.size,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "naive_threads": args.threads,
    }
    with tempfile.TemporaryDirectory(prefix="bench_naive_") as d:
        d = Path(d)
        video = d / "video.tif"
        res["particles_per_frame"] = write_video(video, args.frames, args.size)
        load_before = os.getloadavg()[0]

        child_json = d / "naive.json"
        naive = run_measured(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "naive",
                "--video",
                str(video),
                "--child-json",
                str(child_json),
                "--threads",
                str(args.threads),
                "--frames",
                str(args.frames),
                "--naive-frames",
                str(n_naive),
                "--naive-weights",
                args.naive_weights,
            ]
        )
        naive.update(json.loads(child_json.read_text()))
        print(f"naive: {naive}", flush=True)

        out_dir = d / "out"
        cfg = d / "run.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "videos": [str(video)],
                    "output_dir": str(out_dir),
                    "pixel_size_nm": PIXEL_SIZE_NM,
                    "frame_interval_s": FRAME_INTERVAL_S,
                    "report": False,
                    "cluster": {"kind": "local", "dashboard_port": 0},
                    "segment": {"particle_size_px": train_size},
                    "link": {"search_range_nm": SEARCH_RANGE_NM, "memory": MEMORY},
                }
            )
        )
        exe = Path(sys.executable).with_name("lptem")
        pipe = run_measured([str(exe), "run", str(cfg), "--no-progress", "--overwrite"])
        status = pd.read_csv(out_dir / "run_status.csv")
        store = Path(status["store"].iloc[0])
        pipe["run_status_seconds"] = float(status["seconds"].iloc[0])
        pipe["regions"] = len(
            pd.read_parquet(store / "tables" / "regions.parquet", columns=["frame"])
        )
        tracks = store / "tables" / "tracks.parquet"
        pipe["tracks"] = (
            int(pd.read_parquet(tracks, columns=["particle"])["particle"].nunique())
            if tracks.exists()
            else 0
        )
        print(f"pipeline: {pipe}", flush=True)

    loop = naive["phases_s"]["forward"] + naive["phases_s"]["label_regionprops"]
    naive_wall = naive["wall_s"]
    naive_compute = naive["compute_s"]
    if extrapolated:
        scale = args.frames / n_naive
        naive_wall = naive_wall - loop + loop * scale
        naive_compute = naive_compute - loop + loop * scale
    naive["extrapolated"] = extrapolated
    naive["wall_s_for_all_frames"] = naive_wall
    naive["compute_s_for_all_frames"] = naive_compute
    res["naive"] = naive
    res["pipeline"] = pipe
    res["speed_ratio_end_to_end"] = naive_wall / pipe["wall_s"]
    res["speed_ratio_without_startup"] = naive_compute / pipe["run_status_seconds"]
    res["peak_rss_gb"] = {"naive": naive["peak_rss_gb"], "pipeline": pipe["peak_rss_gb"]}
    res["headline"] = "speed_ratio_end_to_end"
    res["target"] = "speed ratio >= 15"
    res["extrapolated"] = extrapolated
    res["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    tag = f"  (EXTRAPOLATED from {n_naive} of {args.frames} naive frames)" if extrapolated else ""
    print(
        f"speed ratio naive/pipeline: end to end {res['speed_ratio_end_to_end']:.2f}x "
        f"(headline, target >= 15x), without start-up "
        f"{res['speed_ratio_without_startup']:.2f}x{tag}"
    )
    print(
        f"peak RSS: naive {naive['peak_rss_gb']:.2f} GB, pipeline {pipe['peak_rss_gb']:.2f} GB "
        "(summed over each process tree)"
    )
    save_result(res, args.out, "bench_naive.py")


if __name__ == "__main__":
    main()
