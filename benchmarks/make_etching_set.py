#!/usr/bin/env python
"""Labelled frames of simulated etching videos, for ``lptem train --finetune`` (issue 7).

Renders etching videos (``simulate_etching_video``) with randomised rods, stages
and imaging, and writes every ``--every``-th frame as ``images/STEM.tif`` (the
rendered frame, as the simulator returns it) and ``masks/STEM.png`` (its truth
labels > 0): the folder layout ``lptem train --finetune FOLDER`` reads. Nothing
here is drawn from the committed test configs (``configs/etching/*.yaml``,
seeds 0-3 in ``eval_etching.py``): the seeds start at ``--seed0`` (default 100)
and every rate, size, stage time, rod count and CNR is drawn at random from wide
ranges around them, so a model trained on these frames learns the imaging of
etched rods, not the answers of the benchmark.

Usage::

    .venv/bin/python benchmarks/make_etching_set.py --out /tmp/etching_set --videos 40
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def random_config(rng: np.random.Generator):
    """One randomised :class:`EtchingConfig` (same imaging preset and pixel size as the tests)."""
    from lptem_dask.simulate.etching import EtchingConfig, EtchStage

    n_frames = 31
    dt = 2.0
    n_stages = int(rng.integers(1, 4))
    starts = [0.0] + sorted(rng.uniform(8.0, 52.0, n_stages - 1).round(1).tolist())
    if any(b - a < 4.0 for a, b in zip(starts, starts[1:], strict=False)):
        starts = starts[:1]
    stages = []
    for s in starts:
        a = float(rng.uniform(0.02, 0.15))
        b = 0.0 if rng.random() < 0.25 else float(rng.uniform(0.05, 1.2))
        stages.append(EtchStage(start_s=s, a_nm_per_s=a, b_nm2_per_s=b))
    diameter = float(rng.uniform(14.0, 24.0))
    return EtchingConfig(
        n_rods=int(rng.integers(1, 5)),
        length_nm=float(diameter * rng.uniform(1.8, 3.5)),
        diameter_nm=diameter,
        size_dispersity=float(rng.uniform(0.0, 0.12)),
        stages=tuple(stages),
        n_frames=n_frames,
        frame_interval_s=dt,
        pixel_size_nm=0.2,
        gap_nm=float(rng.uniform(5.0, 12.0)),
        simulation="rods",
        target_cnr=float(rng.uniform(3.0, 8.0)),
    )


def main() -> None:
    import imageio.v3 as iio
    import tifffile

    from lptem_dask.simulate.etching import simulate_etching_video

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write images/ and masks/ into")
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--seed0", type=int, default=100, help="first seed (tests use 0-3)")
    ap.add_argument("--every", type=int, default=3, help="keep every n-th frame")
    args = ap.parse_args()
    if args.seed0 < 10:
        ap.error("--seed0 must be >= 10: seeds 0-9 are the benchmark's test seeds")
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    n = 0
    for v in range(args.videos):
        seed = args.seed0 + v
        cfg = random_config(np.random.default_rng(seed))
        video, truth = simulate_etching_video(cfg, seed=seed)
        frames = np.asarray(video.values)
        for f in range(int(seed) % args.every, frames.shape[0], args.every):
            stem = f"etch_s{seed}_f{f:02d}"
            tifffile.imwrite(out / "images" / f"{stem}.tif", frames[f].astype(np.float32))
            iio.imwrite(out / "masks" / f"{stem}.png", (truth.labels[f] > 0).astype(np.uint8) * 255)
            n += 1
        print(
            f"seed {seed}: {cfg.n_rods} rods, d {cfg.diameter_nm:.1f} nm, "
            f"{len(cfg.stages)} stages, CNR {cfg.target_cnr:.1f}, frames {frames.shape}",
            flush=True,
        )
    print(f"{n} labelled frames in {out}")


if __name__ == "__main__":
    main()
