#!/usr/bin/env python
"""D and D_r of Brownian nanoprisms through the U-Net: the particle size given or estimated.

For each named CNR level and seed, one video of ``configs/dynamics/brownian_prisms.yaml``
(19-px prisms, 300 frames by default) is simulated and segmented with the shipped model
twice: with ``particle_size_px`` = the true edge length in px (frames rescaled to the
model's training median) and with ``particle_size_px=None`` (the default path of
``lp.segment`` and of ``lptem run``: the size and the rescaling are decided by
:func:`lptem_dask.segment.infer.estimate_size_with_model`). D and D_r are then measured
the same way (:func:`lptem_dask.testing.prism_diffusion_from_labels`) and compared with
the truth (issue 6's targets: D within 10%, D_r within 15%).

Usage::

    .venv/bin/python benchmarks/eval_size_policy.py                  # moderate, otsu_fail; seeds 1-3
    .venv/bin/python benchmarks/eval_size_policy.py --levels otsu_fail --seeds 1

Writes ``benchmarks/results/size_policy.json`` (``--out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import save_result

RESULTS = Path(__file__).resolve().parent / "results"


def run_one(level: str, seed: int, n_frames: int) -> dict:
    import lptem_dask as lp
    from lptem_dask.segment.infer import _sample_index, estimate_size_with_model, prepare_model
    from lptem_dask.simulate.dynamics import load_dynamics_config, simulate_video
    from lptem_dask.testing import prism_diffusion_from_labels

    c = load_dynamics_config("brownian_prisms")
    video, _ = simulate_video(config=c, seed=seed, n_frames=n_frames, target_cnr=level)
    truth_px = c.size_nm / c.pixel_size_nm
    sample = np.asarray(video[_sample_index(n_frames)])
    est, scale = estimate_size_with_model(sample, prepare_model("default"), polarity="dark")
    out = {
        "level": level,
        "seed": seed,
        "frames": n_frames,
        "size_px_truth": truth_px,
        "size_px_estimated": est,
        "auto_scale": scale,
    }
    for name, size in (("given", truth_px), ("auto", None)):
        labels = lp.segment(video, model="default", particle_size_px=size)
        D, Dr = prism_diffusion_from_labels(video, labels, exposure_s=c.exposure_s)
        out[name] = {
            "D_nm2_per_s": D,
            "D_rel_err": D / c.diffusion_nm2_s - 1,
            "Dr_rad2_per_s": Dr,
            "Dr_rel_err": Dr / c.rotational_diffusion_rad2_s - 1,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", nargs="+", default=["moderate", "otsu_fail"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", default=str(RESULTS / "size_policy.json"))
    args = ap.parse_args()
    runs = []
    for level in args.levels:
        for seed in args.seeds:
            r = run_one(level, seed, args.frames)
            runs.append(r)
            print(
                f"{level} seed {seed}: estimated {r['size_px_estimated']:.1f} px "
                f"(truth {r['size_px_truth']:.1f}), scale {r['auto_scale']:.2f}; "
                + "; ".join(
                    f"{k}: D {r[k]['D_rel_err']:+.1%}, D_r {r[k]['Dr_rel_err']:+.1%}"
                    for k in ("given", "auto")
                ),
                flush=True,
            )
    summary = {
        k: {
            "D_within_10pct": sum(abs(r[k]["D_rel_err"]) <= 0.10 for r in runs),
            "Dr_within_15pct": sum(abs(r[k]["Dr_rel_err"]) <= 0.15 for r in runs),
            "runs": len(runs),
        }
        for k in ("given", "auto")
    }
    print(summary)
    save_result({"summary": summary, "runs": runs}, args.out, "eval_size_policy.py")


if __name__ == "__main__":
    main()
