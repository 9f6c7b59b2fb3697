#!/usr/bin/env python
"""Peak memory of `lptem run` against video length (memory bounded by chunk size).

Writes two 512x512 uint16 TIFF videos (short and long) of dark particles on a noisy
background, runs ``lptem run`` (segment + measure + link, no report) on each in a
fresh process, samples the RSS summed over that process and all its children (the
Dask workers) every 0.1 s, and prints and saves the peak of each and their ratio.

    python benchmarks/bench_pipeline_memory.py [--short 200] [--long 2000]

Target: peak(long) / peak(short) <= 1.3. Saves benchmarks/results/pipeline_memory.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml
from _common import run_measured

RESULTS = Path(__file__).parent / "results"


def write_video(path: Path, n_frames: int, size: int = 512, seed: int = 0) -> None:
    """Dark discs (radius 10 px) drifting on a Poisson background, frame by frame."""
    rng = np.random.default_rng(seed)
    r = 10
    yy, xx = np.mgrid[-r - 1 : r + 2, -r - 1 : r + 2]
    centres = rng.uniform(30, size - 30, size=(20, 2))
    with tifffile.TiffWriter(path) as tif:
        for _ in range(n_frames):
            centres = np.clip(centres + rng.normal(0, 1.5, centres.shape), 20, size - 20)
            t = np.zeros((size, size))
            for cy, cx in centres:
                iy, ix = int(cy), int(cx)
                patch = np.clip(r**2 - (yy + iy - cy) ** 2 - (xx + ix - cx) ** 2, 0, None) ** 0.5
                t[iy - r - 1 : iy + r + 2, ix - r - 1 : ix + r + 2] += patch
            tif.write(rng.poisson(1000 * np.exp(-t / 40)).astype(np.uint16), contiguous=True)


def run(config: Path) -> dict:
    exe = Path(sys.executable).with_name("lptem")
    return run_measured([str(exe), "run", str(config), "--no-progress", "--overwrite"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, default=200)
    ap.add_argument("--long", type=int, default=2000)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, n in (("short", args.short), ("long", args.long)):
            video = d / f"{name}.tif"
            write_video(video, n)
            cfg = d / f"{name}.yaml"
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "videos": [str(video)],
                        "output_dir": str(d / f"out_{name}"),
                        "frames_per_chunk": 20,
                        "report": False,
                        "cluster": {
                            "kind": "local",
                            "n_workers": 2,
                            "threads_per_worker": 1,
                            "dashboard_port": 0,
                        },
                        "segment": {
                            "particle_size_px": 41.6
                        },  # the model's own scale: no rescaling
                        "link": {"search_range_nm": 20.0, "memory": 2},
                    }
                )
            )
            out[name] = {"frames": n, **run(cfg)}
            print(name, out[name], flush=True)
    out["ratio_long_over_short"] = out["long"]["peak_rss_gb"] / out["short"]["peak_rss_gb"]
    out["command"] = "python benchmarks/bench_pipeline_memory.py " + " ".join(sys.argv[1:])
    out["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline_memory.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
