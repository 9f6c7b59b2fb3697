"""Peak memory of a child process tree, shared by the memory benchmarks."""

from __future__ import annotations

import subprocess
import threading
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    """Resident set size summed over ``proc`` and all its descendants, bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
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
