"""Calibrate the simulator to a real LPTEM frame and compare noise spectra.

Run: .venv/bin/python benchmarks/calibrate_real.py

Real frame: ../shared/data/real/lptem-supracrystal-frame/SAMPLE_0001.tif
(1024x1024 uint16, minus 32768; dark particles ~20 px, ~41 px apart, 2.59 nm/px;
positions from a circle detector in SAMPLE_0001.txt). Steps:

1. mask disks around the listed particles; ``calibrate_to`` fits the noise level,
   MTF, gain/dose and the smooth background (gradient, liquid field);
2. simulate the same field: spheres at the listed positions, defocused, with the
   sphere mean free path chosen so that the noise-free particle contrast equals
   the real one (bisection), rendered with the calibrated optics;
3. compare the background noise power spectra (same estimator, same mask) over
   0.05-0.5 cycles/px; the target is agreement within 10%.

Saves benchmarks/results/calibrate_real.json and calibrate_real.png (real and
simulated crops side by side, and the two spectra).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lptem_dask.simulate import (
    SimulationConfig,
    calibrate_to,
    measure_cnr,
    render_frame,
    residual_nps,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "real" / "lptem-supracrystal-frame"
RESULTS = Path(__file__).parent / "results"
PIXEL_NM = 2.59
DIAMETER_PX = 24.0
MASK_RADIUS_PX = 14.0
DEFOCUS_PX = 8.0


def disks(shape, ys, xs, r):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    m = np.zeros(shape, bool)
    for y, x in zip(ys, xs, strict=True):
        y0, y1 = int(max(y - r - 1, 0)), int(min(y + r + 2, shape[0]))
        x0, x1 = int(max(x - r - 1, 0)), int(min(x + r + 2, shape[1]))
        m[y0:y1, x0:x1] |= (yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2 <= r * r
    return m


def particles_table(ys, xs, lam):
    return pd.DataFrame(
        {
            "y": ys,
            "x": xs,
            "shape": "sphere",
            "size_nm": DIAMETER_PX * PIXEL_NM,
            "lambda_nm": lam,
            "defocus_radius_px": DEFOCUS_PX,
        }
    )


def main() -> None:
    import tifffile

    tif = DATA / "SAMPLE_0001.tif"
    if not tif.exists():
        raise SystemExit(f"real frame {tif} is absent")
    real = tifffile.imread(tif).astype(np.float64) - 32768.0
    pos = np.loadtxt(DATA / "SAMPLE_0001.txt")
    xs, ys = pos[:, 1] - 1.0, pos[:, 2] - 1.0
    mask = disks(real.shape, ys, xs, MASK_RADIUS_PX)
    core = disks(real.shape, ys, xs, DIAMETER_PX / 2)

    base = SimulationConfig.model_validate(
        {
            "optics": {"image_size_px": real.shape[0], "pixel_size_nm": PIXEL_NM},
            "particles": {"diffusion_nm2_s": 0.0},
        }
    )
    cal = calibrate_to(real, mask=mask, base=base, pixel_size_nm=PIXEL_NM)
    cfg = cal.config
    real_contrast = 1.0 - real[core].mean() / real[~mask].mean()
    real_cnr = measure_cnr(real, core, exclude=mask & ~core)

    # contrast matching on the noise-free image (bisection on the sphere's mean free path)
    quiet = cfg.model_copy(update={"optics": cfg.optics.model_copy(update={"shot_noise": False})})
    lo, hi = 5.0, 2000.0
    for _ in range(25):
        lam = np.sqrt(lo * hi)
        img = render_frame(particles_table(ys, xs, lam), quiet, seed=1)["image"]
        c = 1.0 - img[core].mean() / img[~mask].mean()
        lo, hi = (lam, hi) if c > real_contrast else (lo, lam)
    lam = float(np.sqrt(lo * hi))
    sim_out = render_frame(particles_table(ys, xs, lam), cfg, seed=1)
    sim = sim_out["image"].astype(np.float64)
    sim_cnr = measure_cnr(sim, core, exclude=mask & ~core)

    f, nps_real = residual_nps(real, mask=mask)
    _, nps_sim = residual_nps(sim, mask=mask)
    band = (f >= 0.05) & (f <= 0.5)
    ratio = nps_sim[band] / nps_real[band]
    # the same comparison in 0.05-wide bands (1-px rings are noisy)
    edges = np.arange(0.05, 0.5001, 0.05)
    band_ratio = [
        float(
            nps_sim[(f >= a) & (f < b + 1e-9)].mean() / nps_real[(f >= a) & (f < b + 1e-9)].mean()
        )
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    res = {
        "real_frame": str(tif.relative_to(ROOT / "..")),
        "calibration": cal.summary(),
        "mtf_table": {"freq": cal.mtf_freq[::8].tolist(), "mtf": cal.mtf[::8].tolist()},
        "real_particle_contrast": float(real_contrast),
        "sim_particle_contrast": float(1.0 - sim[core].mean() / sim[~mask].mean()),
        "sphere_lambda_nm": lam,
        "real_cnr": float(real_cnr),
        "sim_cnr": float(sim_cnr),
        "real_background_mean": float(real[~mask].mean()),
        "sim_background_mean": float(sim[~mask].mean()),
        "nps_ratio_sim_over_real_0.05_0.5": {
            "mean": float(ratio.mean()),
            "max_abs_dev_per_ring": float(np.max(np.abs(ratio - 1))),
            "rms_dev_per_ring": float(np.sqrt(np.mean((ratio - 1) ** 2))),
            "band_ratios_0.05_wide": band_ratio,
            "max_abs_dev_bands": float(np.max(np.abs(np.array(band_ratio) - 1))),
        },
        "within_10_percent": bool(np.max(np.abs(np.array(band_ratio) - 1)) < 0.10),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "calibrate_real.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k not in ("mtf_table",)}, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 5))
    sl = (slice(300, 556), slice(300, 556))
    for a, im, title in (
        (ax[0], real, "real (SAMPLE_0001, crop)"),
        (ax[1], sim, "calibrated simulation"),
    ):
        c = im[sl]
        vlo, vhi = np.percentile(c, [0.5, 99.5])
        a.imshow(c, cmap="gray", vmin=vlo, vmax=vhi)
        a.set_title(title)
        a.axis("off")
    ax[2].semilogy(f[1:], nps_real[1:], label="real")
    ax[2].semilogy(f[1:], nps_sim[1:], label="simulated")
    ax[2].axvspan(0.05, 0.5, color="0.9", zorder=-1)
    ax[2].set_xlabel("frequency (cycles/px)")
    ax[2].set_ylabel("background noise power (counts$^2$)")
    ax[2].set_title(
        f"NPS, band ratios within {res['nps_ratio_sim_over_real_0.05_0.5']['max_abs_dev_bands']:.1%}"
    )
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "calibrate_real.png", dpi=80)
    print(f"saved {RESULTS / 'calibrate_real.json'} and calibrate_real.png")


if __name__ == "__main__":
    main()
