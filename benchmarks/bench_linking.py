"""Benchmark of linking: lptem_dask.link vs bare trackpy.link, and windowed linking memory.

1. Overhead: the same synthetic Brownian table (default 200 particles x 500 frames =
   1e5 rows) linked by ``trackpy.link`` on (y_nm, x_nm) and by ``lptem_dask.track.link``
   (sorting, drift columns, orientation unwrapping, schema). Reports the throughput
   ratio bare_time / project_time (target >= 0.9), best of ``--repeat`` runs.
2. Bounded memory: ``link_store`` on Parquet regions tables of 1e5 and 1e6 rows
   (written part by part, never whole in memory), each in a fresh child process;
   reports wall time and the child's peak RSS. Fixed memory means the peak RSS does
   not grow with the number of rows.

Usage::

    .venv/bin/python benchmarks/bench_linking.py            # full (a few minutes)
    .venv/bin/python benchmarks/bench_linking.py --quick    # small sizes

Prints a summary and writes ``benchmarks/results/bench_linking.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def brownian_frames(n_particles: int, n_frames: int, *, seed: int = 0, block: int = 100):
    """Yield DataFrames of ``block`` frames: Brownian particles (2-D step 0.3 x spacing)."""
    rng = np.random.default_rng(seed)
    box = 10.0 * np.sqrt(n_particles) * 10.0  # spacing ~ 50 nm
    pos = rng.uniform(0, box, (n_particles, 2))
    spacing = 0.5 * box / np.sqrt(n_particles)
    sigma = 0.3 * spacing / np.sqrt(2) / 2  # per axis; rms 2-D step 0.15 x spacing
    for start in range(0, n_frames, block):
        stop = min(start + block, n_frames)
        rows = []
        for f in range(start, stop):
            if f:
                pos = np.mod(pos + rng.normal(0, sigma, pos.shape), box)
            order = rng.permutation(n_particles)
            rows.append(
                pd.DataFrame(
                    {
                        "frame": np.full(n_particles, f, np.int64),
                        "label": np.arange(1, n_particles + 1, dtype=np.int32),
                        "y_nm": pos[order, 0] + rng.normal(0, 0.5, n_particles),
                        "x_nm": pos[order, 1] + rng.normal(0, 0.5, n_particles),
                        "orientation_deg": rng.uniform(-90, 90, n_particles),
                    }
                )
            )
        yield pd.concat(rows, ignore_index=True), spacing


def bench_overhead(n_particles: int, n_frames: int, repeat: int) -> dict:
    import trackpy

    from lptem_dask.track import link

    trackpy.quiet()
    parts = list(brownian_frames(n_particles, n_frames))
    table = pd.concat([p for p, _ in parts], ignore_index=True)
    spacing = parts[0][1]
    sr = 0.6 * spacing
    # warm up (numba compilation of trackpy's linker) outside the timings
    warm = table[table.frame < 3]
    trackpy.link(warm, sr, pos_columns=["y_nm", "x_nm"], memory=3)
    link(warm, search_range_nm=sr, memory=3)
    bare_t, ours_t = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        bare = trackpy.link(table, sr, pos_columns=["y_nm", "x_nm"], memory=3)
        bare_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = link(table, search_range_nm=sr, memory=3)
        ours_t.append(time.perf_counter() - t0)
    same = len(bare) == len(ours) and bare.particle.nunique() == ours.particle.nunique()
    return {
        "rows": len(table),
        "particles": n_particles,
        "frames": n_frames,
        "search_range_nm": sr,
        "bare_trackpy_s": min(bare_t),
        "lptem_link_s": min(ours_t),
        "throughput_ratio": min(bare_t) / min(ours_t),
        "same_number_of_trajectories": bool(same),
    }


def _write_regions(store: Path, n_particles: int, n_frames: int) -> tuple[int, float]:
    from lptem_dask import schema
    from lptem_dask.measure import _write_part
    from lptem_dask.store import table_path

    d = table_path(store, "regions")
    d.mkdir(parents=True)
    n = 0
    spacings = []
    for i, (df, sp) in enumerate(brownian_frames(n_particles, n_frames, block=100)):
        _write_part(df, str(d / f"part.{i:05d}.parquet"), "regions", schema.units(df))
        n += len(df)
        spacings.append(sp)
    return n, spacings[0]


def _child_link(store: str, sr: float, window_frames: int, q) -> None:
    import trackpy

    from lptem_dask.track import link_store

    trackpy.quiet()
    t0 = time.perf_counter()
    link_store(store, search_range_nm=sr, memory=3, window_frames=window_frames)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put({"wall_s": wall, "peak_rss_mib": peak_kib / 1024})


def _child_whole(store: str, sr: float, q) -> None:
    import trackpy

    from lptem_dask.measure import read_table
    from lptem_dask.track import link

    trackpy.quiet()
    t0 = time.perf_counter()
    tracks = link(read_table(store, "regions").compute(), search_range_nm=sr, memory=3)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put({"wall_s": wall, "peak_rss_mib": peak_kib / 1024, "rows": len(tracks)})


def _child_baseline(q) -> None:
    import trackpy  # noqa: F401

    import lptem_dask.track  # noqa: F401

    q.put({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def bench_windowed(n_particles: int, n_frames: int, window_frames: int, whole: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        rows, spacing = _write_regions(store, n_particles, n_frames)
        write_s = time.perf_counter() - t0
        res = _in_child(_child_link, str(store), 0.6 * spacing, window_frames)
        if whole:
            w = _in_child(_child_whole, str(store), 0.6 * spacing)
            res["whole_table_link"] = {k: w[k] for k in ("wall_s", "peak_rss_mib")}
        n_parts = len(list((store / "tables" / "tracks.parquet").glob("part.*.parquet")))
    res.update(
        rows=rows,
        particles=n_particles,
        frames=n_frames,
        window_frames=window_frames,
        tracks_parts=n_parts,
        write_regions_s=write_s,
        rows_per_s=rows / res["wall_s"],
        # what the whole table (5 columns) would take in memory
        whole_table_mib=rows * (8 + 4 + 8 + 8 + 8) / 2**20,
    )
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--frames",
        type=int,
        nargs="+",
        default=None,
        help="frames of each windowed run (1000 particles per frame); default 100 1000",
    )
    ap.add_argument("--no-whole", action="store_true", help="skip whole-table linking runs")
    ap.add_argument("--overhead-only", action="store_true", help="only part 1")
    args = ap.parse_args(argv)
    if args.quick:
        overhead = (100, 100)
        sizes = [(100, 100), (100, 1000)]
        window = 50
    else:
        overhead = (200, 500)
        sizes = [(1000, f) for f in (args.frames or (100, 1000))]
        window = 100
    out: dict = {
        "benchmark": "bench_linking",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    print("1) link overhead vs bare trackpy.link ...", flush=True)
    out["overhead"] = bench_overhead(*overhead, repeat=args.repeat)
    o = out["overhead"]
    print(
        f"   {o['rows']} rows: trackpy {o['bare_trackpy_s']:.2f} s, lptem link "
        f"{o['lptem_link_s']:.2f} s, throughput ratio {o['throughput_ratio']:.3f} "
        f"(target >= 0.9)",
        flush=True,
    )
    if args.overhead_only:
        sizes = []
    print("2) link_store peak memory ...", flush=True)
    out["baseline_import_rss_mib"] = _in_child(_child_baseline)["peak_rss_mib"]
    out["windowed"] = []
    for n_p, n_f in sizes:
        r = bench_windowed(n_p, n_f, window, whole=not args.no_whole)
        whole_txt = (
            f"; whole-table lp.link: {r['whole_table_link']['wall_s']:.1f} s, peak RSS "
            f"{r['whole_table_link']['peak_rss_mib']:.0f} MiB"
            if "whole_table_link" in r
            else ""
        )
        out["windowed"].append(r)
        print(
            f"   {r['rows']:>8} rows ({r['tracks_parts']} windows): {r['wall_s']:.1f} s, "
            f"{r['rows_per_s']:.0f} rows/s, peak RSS {r['peak_rss_mib']:.0f} MiB "
            f"(imports alone {out['baseline_import_rss_mib']:.0f} MiB; whole table would be "
            f"{r['whole_table_mib']:.0f} MiB){whole_txt}",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "bench_linking_quick.json" if args.quick else "bench_linking.json"
    if args.frames and not args.quick:
        name = "bench_linking_frames_" + "_".join(map(str, args.frames)) + ".json"
    if args.overhead_only:
        name = "bench_linking_overhead.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2))
    print(f"saved {RESULTS / name}")
    return out


if __name__ == "__main__":
    main()
