"""CPU inference throughput: the default ("fast") U-Net against the paper's U-Net.

Both networks run through the same public path, ``predict_probability`` on a
video of 512x512 uint8 frames, computed with Dask's synchronous scheduler and
the same number of torch threads, in one run (so the machine's load is as
similar as it can be). Throughput depends on the architecture, not on the
weights: the trained default model is used when installed, else a randomly
initialised network of its preset. Each configuration is timed after one
warm-up frame, over ``--frames`` frames (paper: ``--paper-frames``), as the
best of ``--repeats`` repeats.

Precision: float32 and bfloat16 autocast are both timed for each network;
``precision="auto"`` on CPU uses whichever ``infer.CPU_AUTO_BFLOAT16`` says.

Usage::

    python benchmarks/bench_inference.py --threads 2

Writes ``benchmarks/results/bench_inference.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import dask.array as da
import numpy as np
import torch
import xarray as xr

from lptem_dask.models import default_model_paths
from lptem_dask.segment.infer import predict_probability
from lptem_dask.segment.unet import build_unet, count_flops, count_parameters

RESULTS = Path(__file__).resolve().parent / "results"


def frames(n: int, size: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        img = 150 + rng.normal(0, 12, (size, size))
        for _ in range(20):
            cy, cx = rng.uniform(0, size, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 15**2] -= 30
        out[i] = np.clip(img, 0, 255)
    return out


def time_model(model, arr: np.ndarray, precision: str, repeats: int, batch_size: int) -> float:
    """Frames per second of predict_probability over ``arr`` (best of ``repeats``).

    ``particle_size_px`` is the model's training size (no rescaling, no estimate).
    """
    from lptem_dask.segment.infer import _train_size, prepare_model

    model = prepare_model(model)
    size = _train_size(model.card)
    warm = xr.DataArray(da.from_array(arr[:1], chunks=(1, -1, -1)), dims=("frame", "y", "x"))
    predict_probability(
        warm, model=model, precision=precision, particle_size_px=size, batch_size=batch_size
    ).compute(scheduler="synchronous")
    best = np.inf
    for _ in range(repeats):
        v = xr.DataArray(da.from_array(arr, chunks=(batch_size, -1, -1)), dims=("frame", "y", "x"))
        t0 = time.perf_counter()
        predict_probability(
            v, model=model, precision=precision, particle_size_px=size, batch_size=batch_size
        ).compute(scheduler="synchronous")
        best = min(best, time.perf_counter() - t0)
    return len(arr) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--paper-frames", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "bench_inference.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    weights = default_model_paths()[0]
    if weights.exists():
        default_model: object = "default"
        default_source = str(weights)
    else:
        torch.manual_seed(0)
        default_model = build_unet("fast").eval()
        default_source = "random-init preset 'fast' (default model not installed)"
    torch.manual_seed(0)
    paper = build_unet("paper").eval()
    fast_net = build_unet("fast")

    arr = frames(max(args.frames, args.paper_frames))
    load_before = os.getloadavg()
    res: dict = {
        "threads": args.threads,
        "frame_px": 512,
        "batch_size": args.batch_size,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "default_model": default_source,
        "flops_per_frame": {
            "default": count_flops(fast_net, 512),
            "paper": count_flops(paper, 512),
        },
        "parameters": {"default": count_parameters(fast_net), "paper": count_parameters(paper)},
        "frames_per_s": {},
    }
    for prec in ("float32", "bfloat16"):
        fd = time_model(default_model, arr[: args.frames], prec, args.repeats, args.batch_size)
        fp = time_model(paper, arr[: args.paper_frames], prec, 1, args.batch_size)
        res["frames_per_s"][prec] = {"default": fd, "paper": fp, "ratio": fd / fp}
        print(
            f"{prec}: default {fd:.2f} frames/s, paper {fp:.3f} frames/s, ratio {fd / fp:.1f}",
            flush=True,
        )
    # other processes on the machine distort the figures: record the load
    res["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    res["cpu_count"] = os.cpu_count()
    res["flop_ratio"] = res["flops_per_frame"]["paper"] / res["flops_per_frame"]["default"]
    res["command"] = (
        f"python benchmarks/bench_inference.py --threads {args.threads} --frames "
        f"{args.frames} --paper-frames {args.paper_frames} --repeats {args.repeats}"
    )
    res["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
