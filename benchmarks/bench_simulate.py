"""Speed of the LPTEM image simulator (frames per second per core).

Run: .venv/bin/python benchmarks/bench_simulate.py [--n 40]

Measures the numpy kernel ``simulate_one`` on 512x512 frames with 20 particles
(the seed's default prisms, physical dose) and on the default model's training
mix ("mixed", 5-60 particles, all effects on, target CNR), single-threaded.
Reports CPU time per frame (what one core delivers; robust to other load on
the machine) and wall time. Prints and saves benchmarks/results/simulate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from lptem_dask.simulate import load_simulation_config, simulate_images, simulate_one  # noqa: E402


def bench(name: str, n: int) -> dict:
    cfg = load_simulation_config(name)
    simulate_one(0, cfg, seed=123)  # warm caches (MTF tables, kernels)
    cpu, wall, counts = [], [], []
    for i in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        out = simulate_one(i, cfg, seed=0)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        counts.append(int(out["truth"]["labelled"].sum()))
    return {
        "config": name,
        "image_size_px": cfg.optics.image_size_px,
        "frames": n,
        "mean_labelled_particles": float(np.mean(counts)),
        "cpu_ms_per_frame": 1e3 * float(np.mean(cpu)),
        "wall_ms_per_frame": 1e3 * float(np.mean(wall)),
        "frames_per_s_per_core": float(1.0 / np.mean(cpu)),
    }


def bench_dask(name: str, n: int) -> dict:
    import dask

    cfg = load_simulation_config(name)
    ds = simulate_images(n, cfg, seed=0, chunk_size=4, truth=False)
    w0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        ds["image"].data.compute()
    dt = time.perf_counter() - w0
    return {"config": name, "frames": n, "wall_s": dt, "frames_per_s": n / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=40, help="frames per configuration")
    args = ap.parse_args()
    res = {
        "kernel": [bench("prisms", args.n), bench("mixed", args.n)],
        "dask_threads": bench_dask("prisms", max(8, args.n // 2)),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for r in res["kernel"]:
        print(
            f"{r['config']:>7}: {r['cpu_ms_per_frame']:.1f} ms CPU/frame "
            f"({r['frames_per_s_per_core']:.1f} frames/s/core; wall {r['wall_ms_per_frame']:.1f} ms), "
            f"{r['mean_labelled_particles']:.1f} particles, {r['image_size_px']} px"
        )
    d = res["dask_threads"]
    print(f"dask (threads, {os.cpu_count()} cores): {d['frames_per_s']:.1f} frames/s")
    print(f"load average during the run: {res['load_average']}")
    out = Path(__file__).parent / "results" / "simulate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
