#!/usr/bin/env python
"""Where the U-Net's pixel IoU on the real msa-train tiles is lost: a diagnosis, not a score.

The frozen default model segments the 20 tiles exactly as ``../shared/tools/score_real.py``
does (``lp.segment(lp.from_array(img[None], pixel_size_nm=1.0), particle_size_px=60)``).
Printed:

- per tile and pooled: predicted area / hand-drawn area, false-positive and
  false-negative pixels, and the share of each within 3 px of the drawn outline;
- the mean intensity and the mean predicted mask at each signed distance (px) from the
  drawn outline (negative inside), pooled over the tiles: where each convention puts
  the edge on the intensity ramp;
- the pooled pixel IoU after eroding the predicted masks by 1-4 px. This only measures
  how much of the gap is a uniform edge offset; no erosion is applied anywhere in the
  package, and none may be chosen from this data (it is never trained or tuned on).

Usage::

    .venv/bin/python benchmarks/diagnose_real_edges.py     # needs ../shared/data/real

Writes ``benchmarks/results/diagnose_real_edges.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import save_result

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "msa-train"
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=60.0, help="particle_size_px, as score_real.py")
    ap.add_argument("--out", default=str(RESULTS / "diagnose_real_edges.json"))
    args = ap.parse_args()
    if not REAL.is_dir():
        sys.exit(f"{REAL} not found: this diagnosis needs the shared real data checkout")
    from PIL import Image
    from scipy import ndimage as ndi

    import lptem_dask as lp

    dists = np.arange(-8, 12)
    prof_i = np.zeros(len(dists))
    prof_p = np.zeros(len(dists))
    prof_n = np.zeros(len(dists))
    erosions = [0, 1, 2, 3, 4]
    inter = np.zeros(len(erosions))
    union = np.zeros(len(erosions))
    tiles = []
    for k in range(20):
        img = np.array(Image.open(REAL / "images" / f"image_{k}.png"))[..., 0].astype(np.float32)
        gt = np.array(Image.open(REAL / "labels" / f"label_{k}.png"))[..., 0] > 0
        labels = lp.segment(lp.from_array(img[None], pixel_size_nm=1.0), particle_size_px=args.size)
        pred = np.asarray(labels)[0] > 0
        inside = ndi.distance_transform_edt(gt)
        outside = ndi.distance_transform_edt(~gt)
        fn, fp = gt & ~pred, pred & ~gt
        tiles.append(
            {
                "tile": k,
                "area_ratio": float(pred.sum() / gt.sum()),
                "iou": float((pred & gt).sum() / (pred | gt).sum()),
                "fn_px": int(fn.sum()),
                "fn_within_3px": int((fn & (inside <= 3)).sum()),
                "fp_px": int(fp.sum()),
                "fp_within_3px": int((fp & (outside <= 3)).sum()),
            }
        )
        signed = np.round(outside - inside).astype(int)
        for i, d in enumerate(dists):
            m = signed == d
            prof_i[i] += img[m].sum()
            prof_p[i] += pred[m].sum()
            prof_n[i] += m.sum()
        depth = ndi.distance_transform_edt(pred)
        for i, e in enumerate(erosions):
            p = depth > e
            inter[i] += (p & gt).sum()
            union[i] += (p | gt).sum()
    ok = prof_n > 0
    profile = [
        {"distance_px": int(d), "mean_intensity": float(a / n), "predicted_fraction": float(b / n)}
        for d, a, b, n in zip(dists[ok], prof_i[ok], prof_p[ok], prof_n[ok], strict=True)
    ]
    res = {
        "particle_size_px": args.size,
        "tiles": tiles,
        "pooled": {
            "area_ratio": float(np.mean([t["area_ratio"] for t in tiles])),
            "fp_px": int(sum(t["fp_px"] for t in tiles)),
            "fp_within_3px": int(sum(t["fp_within_3px"] for t in tiles)),
            "fn_px": int(sum(t["fn_px"] for t in tiles)),
            "fn_within_3px": int(sum(t["fn_within_3px"] for t in tiles)),
        },
        "edge_profile": profile,
        "iou_after_erosion_px": {
            str(e): float(i / u) for e, i, u in zip(erosions, inter, union, strict=True)
        },
    }
    for t in tiles:
        print(
            f"tile {t['tile']:2d}: area ratio {t['area_ratio']:.3f}, IoU {t['iou']:.3f}, "
            f"FP {t['fp_px']} ({t['fp_within_3px']} within 3 px), FN {t['fn_px']} ({t['fn_within_3px']})"
        )
    print(f"pooled: {res['pooled']}")
    print(
        "signed distance from the drawn outline (px, < 0 inside): mean intensity, predicted fraction"
    )
    for row in profile:
        print(
            f"  {row['distance_px']:+3d}: {row['mean_intensity']:7.1f}  {row['predicted_fraction']:.2f}"
        )
    print(
        f"pixel IoU after eroding the predictions (diagnosis only): {res['iou_after_erosion_px']}"
    )
    save_result(res, args.out, "diagnose_real_edges.py")


if __name__ == "__main__":
    main()
