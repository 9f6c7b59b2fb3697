"""Helpers shared by the benchmarks: peak memory of a process tree, saving results."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


def tree_rss(proc: psutil.Process) -> int:
    """Resident set size summed over ``proc`` and all its descendants, bytes."""
    total = 0
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # the process exited between two samples
        family = [proc]
    for p in family:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; wall time and peak RSS summed over its process tree (0.1 s sampling).

    Exits with the command's stderr tail when it fails.
    """
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(p.pid)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(proc))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = p.communicate()
    stop.set()
    th.join()
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({p.returncode}): {err.decode()[-3000:]}")
    return {"wall_s": time.perf_counter() - t0, "peak_rss_gb": peak[0] / 1e9}


def save_result(res: dict, out: str | Path, script: str) -> None:
    """Stamp ``res`` with the command line and UTC date, write it as JSON to ``out``."""
    res["command"] = f"python benchmarks/{script} " + " ".join(sys.argv[1:])
    res["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


def brownian_prisms(
    n_frames: int, size: int, *, seed: int = 0, particles: int | None = None, **overrides
):
    """Lazy video of Brownian 100-nm prisms (20 per 512×512 frame unless ``particles``).

    ``overrides`` go to ``simulate_video`` (e.g. ``pixel_size_nm``). Returns
    ``(video, particles_per_frame)``.
    """
    from lptem_dask.simulate import simulate_video

    n_p = particles or max(1, round(20 * (size / 512) ** 2))
    video, _ = simulate_video(
        "brownian",
        "brownian_prisms",
        seed=seed,
        n_frames=n_frames,
        frames_per_chunk=8,
        image_size_px=size,
        n_particles=n_p,
        size_nm=100.5,
        **overrides,
    )
    return video, n_p
