#!/usr/bin/env python
"""U-Net against tuned classical baselines across CNR levels and on real images (issue 8).

Thin wrapper of :func:`lptem_dask.benchmark.benchmark_segmentation`; the same as
``lptem benchmark segmentation [CONFIG]``. Run from the repository root::

    .venv/bin/python benchmarks/compare_segmentation.py configs/benchmark/segmentation.yaml \
        --out benchmarks/results/segmentation [--model PATH] [--quick]

Writes metrics.csv, tuning.csv, tuned_params.json, metrics_vs_cnr.png,
metrics_vs_snr.png, examples.png and table.md into ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/benchmark/segmentation.yaml")
    ap.add_argument("--out", default="benchmarks/results/segmentation")
    ap.add_argument("--model", default=None, help="U-Net checkpoint (overrides the config)")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from lptem_dask.benchmark import benchmark_segmentation, load_benchmark_config

    cfg = load_benchmark_config(args.config)
    if args.model is not None:
        cfg = cfg.model_copy(update={"model": args.model})
    df = benchmark_segmentation(cfg, args.out, quick=args.quick)
    print(f"U-Net IoU first below {cfg.stop_iou}: {df.attrs.get('unet_fail_level')}")
    print((__import__("pathlib").Path(args.out) / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
