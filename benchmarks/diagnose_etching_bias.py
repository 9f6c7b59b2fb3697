#!/usr/bin/env python
"""How the U-Net's rod outlines drift against the true outlines during etching: a diagnosis.

For each committed etching config and seed the video is simulated and segmented as in
``eval_etching.py`` (``lp.predict_maps`` -> ``lp.label_frames`` -> ``measure_contours`` on
the probability map). In every frame each point of the true outline (the simulator's
labels, outlined the same way) is projected along its inward normal onto the U-Net
outline of the same rod: ``delta`` (nm, positive where the U-Net outline lies inside the
truth). A velocity measured on U-Net outlines is the true one plus ``d delta / dt``.

Printed and saved per stage (the true stages of the config, one frame left out at each
change): the slope of ``delta`` against time (nm/s) on the caps (true curvature
> 0.06 /nm) and on the sides (< 0.02 /nm), pooled over the rods, and what that drift
does to the fitted law: ``a`` off by the sides' slope, ``b`` off by
``(cap slope - side slope) / mean cap curvature``. Nothing is fitted or corrected with
this; it says where the remaining error of ``b`` comes from.

Usage::

    .venv/bin/python benchmarks/diagnose_etching_bias.py \\
        --model benchmarks/models/etching.safetensors --native   # ~4 min
    .venv/bin/python benchmarks/diagnose_etching_bias.py          # default model, rods' diameter

Writes ``benchmarks/results/diagnose_etching_bias.json`` (``--out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _common import save_result

ROOT = Path(__file__).resolve().parents[1]
CAP_KAPPA, SIDE_KAPPA = 0.06, 0.02  # /nm: the rods' caps (radius ~ 8-10 nm) and sides


def _smoothed(g: pd.DataFrame):
    from lptem_dask.analysis.etching import _ccw_screen, _smooth_outline

    X = _ccw_screen(g.sort_values("point")[["y_nm", "x_nm"]].to_numpy(np.float64))
    return _smooth_outline(X, 1.0)


def edge_offsets(unet: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per true outline point: frame, true curvature, offset of the U-Net outline (nm)."""
    from lptem_dask.analysis.etching import _project

    rows = []
    for f, gt in truth.groupby("frame"):
        gu = unet[unet["frame"] == f]
        outl = [_smoothed(g) for _, g in gu.groupby("label") if len(g) >= 8]
        if not outl:
            continue
        centres = np.array([X.mean(0) for X, _ in outl])
        for _, g in gt.groupby("label"):
            if len(g) < 8:
                continue
            XT, kT = _smoothed(g)
            j = int(np.argmin(np.hypot(*(centres - XT.mean(0)).T)))
            if np.hypot(*(centres[j] - XT.mean(0))) > 5.0:
                continue
            d, _ = _project(XT, outl[j][0], outl[j][1], 5.0)
            rows.append(pd.DataFrame({"frame": int(f), "kappa": kT, "delta_nm": d}))
    return pd.concat(rows, ignore_index=True).dropna()


def stage_drift(off: pd.DataFrame, bounds: list[tuple[int, int]], dt: float) -> list[dict]:
    out = []
    for lo, hi in bounds:
        s = off[(off["frame"] >= lo) & (off["frame"] <= hi)]
        slopes = {}
        for part, sel in (("cap", s["kappa"] > CAP_KAPPA), ("side", s["kappa"] < SIDE_KAPPA)):
            m = s[sel].groupby("frame")["delta_nm"].mean()
            slopes[part] = float(np.polyfit(m.index.to_numpy() * dt, m.to_numpy(), 1)[0])
        k_cap = float(s.loc[s["kappa"] > CAP_KAPPA, "kappa"].mean())
        out.append(
            {
                "frames": [lo, hi],
                "cap_drift_nm_per_s": slopes["cap"],
                "side_drift_nm_per_s": slopes["side"],
                "mean_cap_curvature_per_nm": k_cap,
                "a_error_nm_per_s": slopes["side"],
                "b_error_nm2_per_s": (slopes["cap"] - slopes["side"]) / k_cap,
            }
        )
    return out


def main() -> None:
    import xarray as xr

    import lptem_dask as lp
    from lptem_dask.measure import measure_contours
    from lptem_dask.simulate.etching import load_etching_config, simulate_etching_video

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["staged", "b_zero"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--model", default="default")
    ap.add_argument("--native", action="store_true", help="as eval_etching.py --native")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/diagnose_etching_bias.json"))
    args = ap.parse_args()
    size_native = None
    if args.native:
        from lptem_dask.models import load_model
        from lptem_dask.segment.infer import _train_size

        size_native = _train_size(load_model(args.model)[1])
    runs = []
    for name in args.configs:
        cfg = load_etching_config(ROOT / "configs" / "etching" / f"{name}.yaml")
        changes = [s.start_s / cfg.frame_interval_s for s in cfg.stages[1:]]
        cut = [0, *changes, cfg.n_frames - 1]
        bounds = [
            (
                int(np.ceil(cut[i])) + (1 if i else 0),
                int(np.floor(cut[i + 1])) - (1 if i < len(cut) - 2 else 0),
            )
            for i in range(len(cut) - 1)
        ]
        for seed in args.seeds:
            video, truth = simulate_etching_video(cfg, seed=seed)
            size_px = size_native or cfg.diameter_nm / cfg.pixel_size_nm
            maps = lp.predict_maps(video, model=args.model, particle_size_px=size_px)
            unet = measure_contours(
                lp.label_frames(maps),
                probability=maps["probability"],
                pixel_size_nm=cfg.pixel_size_nm,
            ).compute()
            lab = xr.DataArray(truth.labels, dims=video.dims, coords=video.coords)
            true_c = measure_contours(lab, pixel_size_nm=cfg.pixel_size_nm).compute()
            stages = stage_drift(edge_offsets(unet, true_c), bounds, cfg.frame_interval_s)
            for st, tr in zip(stages, cfg.stages, strict=True):
                st["truth"] = {"a_nm_per_s": tr.a_nm_per_s, "b_nm2_per_s": tr.b_nm2_per_s}
            runs.append({"config": name, "seed": seed, "stages": stages})
            print(
                f"{name} seed {seed}: "
                + "; ".join(
                    f"frames {s['frames']}: drift cap {s['cap_drift_nm_per_s']:+.4f}, side "
                    f"{s['side_drift_nm_per_s']:+.4f} nm/s -> a {s['a_error_nm_per_s']:+.4f}, "
                    f"b {s['b_error_nm2_per_s']:+.3f}"
                    for s in stages
                ),
                flush=True,
            )
    save_result(
        {"model": args.model, "native": args.native, "runs": runs},
        args.out,
        "diagnose_etching_bias.py",
    )


if __name__ == "__main__":
    main()
