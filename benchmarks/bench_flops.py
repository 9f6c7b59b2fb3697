#!/usr/bin/env python
"""Achieved FLOP/s of the default U-Net at inference, as a fraction of this CPU's matmul FLOP/s.

In one run, with ``--threads`` torch threads:

1. FLOPs of one forward pass on one ``--size`` frame, counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2), for the
   default model (``load_model("default")``, preset ``fast``) and, for reference,
   the paper preset (``build_unet("paper")``, random-initialised weights: the cost
   does not depend on them).
2. Forward time of the default model as ``infer.py`` runs it: channels_last input
   and weights, ``torch.inference_mode()``, and the precision ``precision="auto"``
   picks on CPU (float32 unless ``infer.CPU_AUTO_BFLOAT16``, then bfloat16
   autocast); median of ``--repeats`` timed passes after ``--warmup`` untimed ones.
   Timed at two batch sizes: ``--batch-size`` (default 1, the headline: what
   ``segment.batch_size: null`` picks on CPU, ``infer.auto_batch_size``) and 4
   (the default before that was measured). The paper preset is timed the same way
   at ``--paper-batch`` (default 1) frames.
3. The machine's matmul FLOP/s in the same precision: ``torch.matmul`` of two
   ``--matmul-n`` square matrices (default 2048; 2 n^3 FLOPs), median of repeats.

Figure: efficiency = achieved FLOP/s (default model) / matmul FLOP/s (target >= 0.3).
When it is below the target (or with ``--profile``), ``torch.profiler`` records
``--profile-passes`` forward passes of the default model and the top-10 operators by
self CPU time are printed and saved in the JSON.

Usage::

    nice -n 19 .venv/bin/python benchmarks/bench_flops.py                 # full: 512 px, 2 threads
    nice -n 19 .venv/bin/python benchmarks/bench_flops.py --size 128 --repeats 2 --matmul-n 512

Writes ``benchmarks/results/flops.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from _common import save_result

RESULTS = Path(__file__).resolve().parent / "results"


def count_forward_flops(module: torch.nn.Module, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(torch.zeros(1, 1, size, size))
    return int(counter.get_total_flops())


def precision_ctx(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def time_forward(module, batch: int, size: int, bf16: bool, warmup: int, repeats: int) -> float:
    """Median seconds of one forward pass of ``batch`` frames (as infer._run_network)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            with precision_ctx(bf16):
                y = module(x)
            torch.sigmoid(y.float())
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops_per_s(n: int, dtype: torch.dtype, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=g).to(dtype)
    b = torch.rand(n, n, generator=g).to(dtype)
    times = []
    with torch.inference_mode():
        torch.matmul(a, b)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


def profile_top(module, batch: int, size: int, bf16: bool, passes: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        module(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            for _ in range(passes):
                with precision_ctx(bf16):
                    module(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    print(
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10),
        flush=True,
    )
    return [
        {
            "op": e.key,
            "self_cpu_ms_per_pass": e.self_cpu_time_total / 1e3 / passes,
            "self_cpu_share": e.self_cpu_time_total / total,
            "calls_per_pass": e.count / passes,
        }
        for e in events[:10]
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="frame side, px (multiple of 16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--batch-size", type=int, default=1, help="headline batch (1: what lptem run runs)"
    )
    ap.add_argument("--paper-batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--paper-repeats", type=int, default=2)
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--profile", action="store_true", help="profile even above the target")
    ap.add_argument("--profile-passes", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "flops.json"))
    args = ap.parse_args()
    if args.size % 16:
        ap.error("--size must be a multiple of 16 (the U-Net's 2**depth)")

    from lptem_dask.models import load_model
    from lptem_dask.segment import infer
    from lptem_dask.segment.unet import build_unet

    torch.set_num_threads(args.threads)
    batch = args.batch_size
    batches = sorted({batch, 4})
    bf16 = bool(infer.CPU_AUTO_BFLOAT16)
    dtype = torch.bfloat16 if bf16 else torch.float32
    target = 0.3

    default, card = load_model("default")
    default = default.eval().to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    paper = build_unet("paper").eval().to(memory_format=torch.channels_last)
    load_before = os.getloadavg()[0]

    res: dict = {
        "size_px": args.size,
        "threads": args.threads,
        "precision": "bfloat16 autocast" if bf16 else "float32",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    flops_default = count_forward_flops(default, args.size)
    flops_paper = count_forward_flops(paper, args.size)
    # interleave: matmul, default, paper, matmul again (load drift shows as a spread)
    mm1 = matmul_flops_per_s(args.matmul_n, dtype, args.repeats)
    t_def = {
        b: time_forward(default, b, args.size, bf16, args.warmup, args.repeats) for b in batches
    }
    t_pap = time_forward(paper, args.paper_batch, args.size, bf16, 1, args.paper_repeats)
    mm2 = matmul_flops_per_s(args.matmul_n, dtype, args.repeats)
    mm = max(mm1, mm2)
    ach_def = flops_default * batch / t_def[batch]
    ach_pap = flops_paper * args.paper_batch / t_pap
    res["matmul"] = {
        "n": args.matmul_n,
        "dtype": str(dtype),
        "gflop_per_s": mm / 1e9,
        "gflop_per_s_before_after": [mm1 / 1e9, mm2 / 1e9],
    }
    res["default"] = {
        "flops_per_frame": flops_default,
        "batch_size": batch,
        "forward_s_per_batch": t_def[batch],
        "frames_per_s": batch / t_def[batch],
        "achieved_gflop_per_s": ach_def / 1e9,
        "efficiency_vs_matmul": ach_def / mm,
        "weights": card.get("source", "default"),
        "by_batch_size": {
            str(b): {
                "forward_s_per_batch": t,
                "frames_per_s": b / t,
                "achieved_gflop_per_s": flops_default * b / t / 1e9,
                "efficiency_vs_matmul": flops_default * b / t / mm,
            }
            for b, t in t_def.items()
        },
    }
    res["paper"] = {
        "flops_per_frame": flops_paper,
        "batch_size": args.paper_batch,
        "forward_s_per_batch": t_pap,
        "frames_per_s": args.paper_batch / t_pap,
        "achieved_gflop_per_s": ach_pap / 1e9,
        "efficiency_vs_matmul": ach_pap / mm,
        "weights": "random-initialised (timing only)",
    }
    res["efficiency"] = ach_def / mm
    res["target"] = f">= {target}"
    print(
        f"matmul {args.matmul_n}^2 {dtype}: {mm / 1e9:.1f} GFLOP/s "
        f"(before {mm1 / 1e9:.1f}, after {mm2 / 1e9:.1f})"
    )
    rows = [
        ("default", res["default"]["flops_per_frame"], b, r)
        for b, r in ((int(b), r) for b, r in res["default"]["by_batch_size"].items())
    ]
    rows.append(("paper", res["paper"]["flops_per_frame"], args.paper_batch, res["paper"]))
    for name, flops, b, r in rows:
        print(
            f"{name}: {flops / 1e9:.2f} GFLOP/frame, batch {b}, "
            f"{r['frames_per_s']:.3f} frames/s, {r['achieved_gflop_per_s']:.1f} GFLOP/s, "
            f"{r['efficiency_vs_matmul']:.3f} of matmul",
            flush=True,
        )
    print(
        f"efficiency (default model, batch {batch}): {res['efficiency']:.3f} (target >= {target})"
    )
    if res["efficiency"] < target or args.profile:
        res["profile_top10_default"] = profile_top(
            default, batch, args.size, bf16, args.profile_passes
        )
    res["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    save_result(res, args.out, "bench_flops.py")


if __name__ == "__main__":
    main()
