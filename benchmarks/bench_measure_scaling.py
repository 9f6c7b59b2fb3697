#!/usr/bin/env python
"""Scaling of the measure stage with Dask workers: 1 worker x 1 thread vs 2 workers x 1 thread.

A labelled video is made without any U-Net: ``--frames`` images of ``--size`` px
from the simulator's ``prisms`` preset (``lptem_dask.simulate.simulate_images``,
about 20 prisms per 512x512 frame, scaled with the area), whose **ground-truth
instance labels** are the label video. Images (8-bit) and labels go into one Zarr
store (``lptem_dask.io.ingest`` + ``store.create_labels_array``), chunked by
``--frames-per-chunk`` frames, so there are many more chunks than workers.

Timed: ``lptem_dask.measure.measure_store(store, contours=True, overwrite=True)``
(regions table: ``measure_regions``, regionprops_table + mean intensity per label;
contours table: ``measure_contours``; both lazily mapped over the frame chunks and
written as Parquet parts by ``write_table``, i.e. computed by ``dask.compute`` on
the cluster), on two LocalClusters of worker processes started beforehand: 1 x 1
and 2 x 1 threads. Both clusters stay up; the runs alternate (1, 2, 1, 2, ...)
``--repeats`` times and the best of each counts. Cluster start and worker imports
(a warm-up call on every worker) are excluded. The store has no ``probability``
array, so ``confidence`` is NaN and contours follow the smoothed mask.

Figure: speedup = time(1 x 1) / time(2 x 1) (target >= 1.5 on 2 cores; the
core count is recorded).

Usage::

    nice -n 19 .venv/bin/python benchmarks/bench_measure_scaling.py            # full: 400 frames of 512 px
    nice -n 19 .venv/bin/python benchmarks/bench_measure_scaling.py --frames 8 --size 128

Writes ``benchmarks/results/measure_scaling.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import save_result

RESULTS = Path(__file__).resolve().parent / "results"


def labelled_video(n: int, size: int, seed: int = 0):
    """(image uint8, labels int32, pixel_size_nm) of ``n`` simulated prism frames."""
    import dask

    from lptem_dask.simulate import load_simulation_config, simulate_images

    cfg = load_simulation_config("prisms")
    count = max(1, round(20 * (size / 512) ** 2))
    cfg = cfg.model_copy(
        update={
            "optics": cfg.optics.model_copy(update={"image_size_px": size}),
            "particles": cfg.particles.model_copy(update={"count": count}),
        }
    )
    ds = simulate_images(n, cfg, seed=seed, chunk_size=8, truth=False)
    with dask.config.set(scheduler="threads"):
        image, labels, ps = dask.compute(
            ds["image"].data, ds["labels"].data, ds["pixel_size_nm"].data
        )
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels.astype(np.int32), float(ps[0])


def write_store(store: Path, image, labels, ps: float, frames_per_chunk: int) -> None:
    import zarr

    from lptem_dask.io import from_array, ingest
    from lptem_dask.store import LABELS_ARRAY, create_labels_array

    n, ny, nx = image.shape
    video = from_array(image, pixel_size_nm=ps, frame_interval_s=0.1, source="simulate_images")
    ingest(video, store, chunk_mb=(frames_per_chunk + 0.5) * ny * nx / 1e6)
    create_labels_array(store, image.shape, (frames_per_chunk, ny, nx))
    zarr.open_array(str(store / LABELS_ARRAY), mode="r+")[:] = labels


def _warm() -> int:
    """Import and run the measure kernels once on a worker (outside the timings)."""
    from lptem_dask.measure import _contours_block, _measure_block

    lab = np.zeros((1, 32, 32), np.int32)
    lab[0, 5:15, 5:15] = 1
    _measure_block(lab, frames=[0], times_s=[0.0], pixel_size_nm=1.0)
    _contours_block(lab, frames=[0], pixel_size_nm=1.0)
    return os.getpid()


def _executed(client) -> list[int]:
    counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
    return [counts[w] for w in sorted(counts)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames-per-chunk", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-contours", dest="contours", action="store_false")
    ap.add_argument("--out", default=str(RESULTS / "measure_scaling.json"))
    args = ap.parse_args()

    import dask
    import pandas as pd
    from distributed import Client, LocalCluster

    from lptem_dask.measure import measure_store

    res: dict = {
        "frames": args.frames,
        "size_px": args.size,
        "frames_per_chunk": args.frames_per_chunk,
        "contours": args.contours,
        "cpu_count": os.cpu_count(),
        "nproc_affinity": len(os.sched_getaffinity(0)),
        "machine": platform.machine(),
    }
    layouts = {"1x1": 1, "2x1": 2}
    with tempfile.TemporaryDirectory(prefix="bench_measure_") as d:
        store = Path(d) / "labels.zarr"
        t0 = time.perf_counter()
        image, labels, ps = labelled_video(args.frames, args.size)
        write_store(store, image, labels, ps, args.frames_per_chunk)
        res["setup_s"] = time.perf_counter() - t0
        res["labels_per_frame"] = float(np.mean([len(np.unique(f)) - 1 for f in labels]))
        del image, labels
        print(
            f"store: {args.frames} frames, {res['labels_per_frame']:.1f} labels/frame", flush=True
        )

        clients = {}
        try:
            for name, nw in layouts.items():
                t0 = time.perf_counter()
                cluster = LocalCluster(
                    n_workers=nw,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",
                    silence_logs=logging.WARNING,
                )
                client = Client(cluster, set_as_default=False)
                client.run(_warm)
                clients[name] = client
                res[f"cluster_start_s_{name}"] = time.perf_counter() - t0
            load_before = os.getloadavg()[0]
            executed_before = {k: _executed(c) for k, c in clients.items()}
            times: dict[str, list[float]] = {k: [] for k in layouts}
            rows = None
            for _ in range(args.repeats):
                for name, client in clients.items():
                    with dask.config.set(scheduler=client):
                        t0 = time.perf_counter()
                        measure_store(store, contours=args.contours, overwrite=True)
                        times[name].append(time.perf_counter() - t0)
                    n_rows = len(pd.read_parquet(store / "tables" / "regions.parquet"))
                    if rows is not None and n_rows != rows:
                        raise SystemExit(f"row counts differ between runs: {rows} vs {n_rows}")
                    rows = n_rows
                    print(f"{name}: {times[name][-1]:.2f} s", flush=True)
            # evidence that the work ran on the workers: tasks executed per worker
            res["tasks_executed_per_worker"] = {
                k: [a - b for a, b in zip(_executed(c), executed_before[k], strict=True)]
                for k, c in clients.items()
            }
        finally:
            for client in clients.values():
                logging.getLogger("distributed").setLevel(logging.WARNING)  # quiet shutdown
                cluster = client.cluster
                client.close()
                cluster.close()

    best = {k: min(v) for k, v in times.items()}
    res["seconds"] = times
    res["best_s"] = best
    res["frames_per_s"] = {k: args.frames / v for k, v in best.items()}
    res["regions_rows"] = rows
    res["speedup_2x1_over_1x1"] = best["1x1"] / best["2x1"]
    res["target"] = ">= 1.5"
    res["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    print(
        f"measure_store: 1x1 {res['frames_per_s']['1x1']:.2f} frames/s, 2x1 "
        f"{res['frames_per_s']['2x1']:.2f} frames/s, speedup {res['speedup_2x1_over_1x1']:.2f} "
        f"(target >= 1.5; {res['cpu_count']} cores)"
    )
    save_result(res, args.out, "bench_measure_scaling.py")


if __name__ == "__main__":
    main()
