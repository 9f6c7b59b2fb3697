"""Peak memory of ``lptem_dask.io.ingest`` on a large uint16 TIFF stack.

Writes a TIFF stack of 2048 x 2048 uint16 frames (about 2 GB by default;
``--gb`` shrinks it) to a temporary folder under /tmp, ingests it into a Zarr
store with :func:`lptem_dask.io.ingest` (default settings: 32 MB chunks, local
threaded scheduler), and samples the resident memory (RSS) summed over this
process and all its children every 50 ms in a background thread. Prints the
figures and saves them as JSON to ``benchmarks/results/ingest_memory.json``.
The temporary folder is removed afterwards.

Target (issue 2): peak RSS below 1 GB for the 2 GB stack.

Run::

    .venv/bin/python benchmarks/bench_ingest_memory.py            # full 2 GB
    .venv/bin/python benchmarks/bench_ingest_memory.py --gb 0.25  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile

import lptem_dask
from lptem_dask.io import ingest, open_video

RESULTS = Path(__file__).resolve().parent / "results" / "ingest_memory.json"


def frame(i: int, size: int) -> np.ndarray:
    """Deterministic, TEM-like frame ``i``: a smooth background plus Poisson-like noise."""
    rng = np.random.default_rng(i)
    yy = np.arange(size, dtype=np.float32)[:, None]
    base = 20000 + 2000 * np.sin(yy / 97.0 + i / 10.0)
    noise = rng.integers(0, 512, (size, size), dtype=np.uint16)
    return (base + noise).astype(np.uint16)


def tree_rss() -> int:
    """RSS in bytes of this process plus all its descendants."""
    proc = psutil.Process()
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakSampler(threading.Thread):
    """Samples :func:`tree_rss` every ``interval_s`` until stopped; keeps the peak."""

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, tree_rss())
            self.samples += 1
            self._halt.wait(self.interval_s)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, tree_rss())
        return self.peak


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="stack size in GB (1e9 bytes)")
    parser.add_argument("--size", type=int, default=2048, help="frame side in pixels")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)

    frame_bytes = args.size * args.size * 2
    n = max(1, round(args.gb * 1e9 / frame_bytes))
    tmp = Path(tempfile.mkdtemp(prefix="lptem-bench-ingest-", dir="/tmp"))
    try:
        src = tmp / "stack.tif"
        t0 = time.perf_counter()
        tifffile.imwrite(
            src,
            (frame(i, args.size) for i in range(n)),
            shape=(n, args.size, args.size),
            dtype=np.uint16,
            photometric="minisblack",
        )
        write_s = time.perf_counter() - t0
        src_bytes = src.stat().st_size

        baseline = tree_rss()
        sampler = PeakSampler(0.05)
        sampler.start()
        t0 = time.perf_counter()
        dst = ingest(src, tmp / "stack.zarr")
        ingest_s = time.perf_counter() - t0
        peak = sampler.stop()

        store_bytes = sum(f.stat().st_size for f in (tmp / "stack.zarr").rglob("*") if f.is_file())
        video = open_video(dst)
        checked = sorted({0, n // 2, n - 1})
        exact = all(np.array_equal(video[i].values, frame(i, args.size)) for i in checked)
        result = {
            "benchmark": "ingest_memory",
            "lptem_dask_version": lptem_dask.__version__,
            "frames": n,
            "frame_shape": [args.size, args.size],
            "dtype": "uint16",
            "source_bytes": src_bytes,
            "store_bytes": store_bytes,
            "chunks_frames": list(video.chunks[0][:1]),
            "write_tiff_s": round(write_s, 2),
            "ingest_s": round(ingest_s, 2),
            "ingest_MB_per_s": round(src_bytes / 1e6 / ingest_s, 1),
            "baseline_rss_bytes": baseline,
            "peak_rss_bytes": peak,
            "peak_rss_GB": round(peak / 1e9, 3),
            "rss_samples": sampler.samples,
            "sample_interval_s": 0.05,
            "target_peak_rss_GB": 1.0,
            "meets_target": peak < 1e9,
            "spot_check_frames": checked,
            "spot_check_bit_exact": exact,
            "cpu_count": os.cpu_count(),
            "machine": platform.platform(),
            "python": platform.python_version(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
