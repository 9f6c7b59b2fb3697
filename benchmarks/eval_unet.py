"""Accuracy of a U-Net checkpoint on held-out simulated test sets.

Test sets (seeds from 1000 up, never used in training: training uses seed 1,
validation seed 2):

- one per shape: the simulator presets ``prisms``, ``rods``, ``cubes``,
  ``spheres`` (their own physics and dose);
- one per named CNR level (``lptem_dask.simulate.cnr_levels()``): the
  ``mixed`` training preset with ``target_cnr`` fixed to the level;
- ``different``: a deliberately different simulator configuration (inelastic
  mean free paths 100-150 nm instead of 20-85, the 1024-px camera's measured
  MTF, thick and uneven liquid, a strong illumination gradient, many specks,
  60-100 particles per frame, uint16 output).

Every image goes through the public path ``predict_maps`` -> ``label_frames``
as a one-frame video. Scale modes: ``native`` (no rescaling: the test images
have the training sizes) and ``auto`` (``particle_size_px=None``: estimated
per image); a ``+bf16`` suffix (e.g. ``native+bf16``) runs under bfloat16
autocast instead of float32, to measure what bfloat16 costs in IoU. Scores, pooled over the images of a set: pixel IoU of
``probability > 0.5`` against the exact mask, object F1 with IoU >= 0.5
matching; for reference, the pixel IoU of a global Otsu threshold.

Usage::

    python benchmarks/eval_unet.py --model lptem_dask/models/default.safetensors --n 16

Writes ``benchmarks/results/eval_unet.json`` and ``eval_unet.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

from lptem_dask.config import config_from_mapping, dump_config
from lptem_dask.segment._metrics import match_counts, object_f1, pixel_counts
from lptem_dask.segment.infer import predict_maps, prepare_model
from lptem_dask.segment.postprocess import label_frames
from lptem_dask.simulate import SimulationConfig, cnr_levels, load_simulation_config, simulate_one

RESULTS = Path(__file__).resolve().parent / "results"


def different_config() -> SimulationConfig:
    data = dump_config(load_simulation_config("mixed"))
    for s in data["particles"]["shapes"]:
        s["mfp_nm"] = [100.0, 150.0]
    data["optics"].update(
        mtf="camera1024",
        liquid_thickness_nm=[300.0, 500.0],
        quantisation="uint16",
        correlated_noise_rel=0.0,
    )
    data["background"].update(
        liquid_variation_nm=[4.0, 8.0], illumination_gradient=[0.05, 0.15], specks=[10, 30]
    )
    data["particles"]["count"] = [60, 100]
    data["target_cnr"] = [1.0, 5.0]
    return config_from_mapping(SimulationConfig, data, source="different_config")


def test_sets() -> dict[str, tuple[SimulationConfig, int]]:
    sets: dict[str, tuple[SimulationConfig, int]] = {}
    seed = 1000
    for shape in ("prisms", "rods", "cubes", "spheres"):
        sets[f"shape:{shape}"] = (load_simulation_config(shape), seed)
        seed += 1
    mixed = dump_config(load_simulation_config("mixed"))
    for name, cnr in cnr_levels().items():
        d = dict(mixed)
        d["target_cnr"] = float(cnr)
        sets[f"cnr:{name}"] = (config_from_mapping(SimulationConfig, d, source=name), seed)
        seed += 1
    sets["different"] = (different_config(), seed)
    return sets


def otsu_iou(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    from skimage.filters import threshold_otsu as otsu

    t = otsu(image.astype(np.float64))
    return pixel_counts(image < t, mask)


def evaluate(model, n: int, modes: list[str], sets: list[str] | None = None) -> dict:
    spec = prepare_model(model)
    out: dict = {
        "model_sha256": spec.sha256,
        "model_card_metrics": spec.card.get("metrics", {}).get("best"),
        "n_images_per_set": n,
        "sets": {},
    }
    for name, (cfg, seed) in test_sets().items():
        if sets and name not in sets:
            continue
        t0 = time.perf_counter()
        acc = {m: [0, 0, 0, 0, 0] for m in modes}
        otsu_c = [0, 0]
        cnrs = []
        for i in range(n):
            sim = simulate_one(i, cfg, seed=seed)
            cnrs.append(float(sim["cnr"]))
            img = sim["image"]
            video = xr.DataArray(img[None], dims=("frame", "y", "x"))
            for m in modes:
                scale_mode, _, prec = m.partition("+")
                kw: dict = {"precision": "bfloat16" if prec == "bf16" else "float32"}
                if scale_mode == "native":
                    train = spec.card.get("particle_size_px") or {}
                    kw["particle_size_px"] = train.get("median") if train else None
                maps = predict_maps(video, model=spec, **kw).compute(scheduler="synchronous")
                prob = maps["probability"].values[0]
                labels = label_frames(maps).values[0]
                a, b = pixel_counts(prob > 0.5, sim["mask"])
                tp, fp, fn = match_counts(labels, sim["labels"])
                for k, v in enumerate((a, b, tp, fp, fn)):
                    acc[m][k] += v
            o = otsu_iou(img, sim["mask"])
            otsu_c[0] += o[0]
            otsu_c[1] += o[1]
        res = {
            "seed": seed,
            "cnr_median": float(np.median(cnrs)),
            "otsu_pixel_iou": otsu_c[0] / max(otsu_c[1], 1),
            "time_s": time.perf_counter() - t0,
        }
        for m in modes:
            a, b, tp, fp, fn = acc[m]
            res[m] = {
                "pixel_iou": a / max(b, 1),
                "object_f1": object_f1(tp, fp, fn),
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        out["sets"][name] = res
        print(name, json.dumps({k: v for k, v in res.items() if k != "seed"}), flush=True)
    # overall = the shape sets and the CNR-level sets pooled
    for m in modes:
        keys = [k for k in out["sets"] if k != "different"]
        if keys:
            tot = np.sum([[out["sets"][k][m][c] for c in ("tp", "fp", "fn")] for k in keys], axis=0)
            out.setdefault("overall", {})[m] = {
                "pixel_iou_mean": float(np.mean([out["sets"][k][m]["pixel_iou"] for k in keys])),
                "object_f1": object_f1(*map(int, tot)),
            }
    return out


def markdown(res: dict, modes: list[str]) -> str:
    head = (
        "| test set | median CNR | Otsu IoU | "
        + " | ".join(f"U-Net IoU ({m}) | object F1 ({m})" for m in modes)
        + " |"
    )
    sep = "|" + "---|" * (3 + 2 * len(modes))
    rows = [head, sep]
    for name, r in res["sets"].items():
        cells = [name, f"{r['cnr_median']:.2f}", f"{r['otsu_pixel_iou']:.3f}"]
        for m in modes:
            cells += [f"{r[m]['pixel_iou']:.3f}", f"{r[m]['object_f1']:.3f}"]
        rows.append("| " + " | ".join(cells) + " |")
    for m, o in res.get("overall", {}).items():
        rows.append(
            f"\nOverall ({m}, shape + CNR sets): mean pixel IoU {o['pixel_iou_mean']:.3f}, "
            f"pooled object F1 {o['object_f1']:.3f}"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=16, help="images per test set")
    ap.add_argument("--modes", default="native,auto")
    ap.add_argument("--sets", default=None, help="comma-separated subset of test sets")
    ap.add_argument("--out", default=str(RESULTS / "eval_unet"))
    args = ap.parse_args()
    modes = args.modes.split(",")
    res = evaluate(args.model, args.n, modes, args.sets.split(",") if args.sets else None)
    res["command"] = (
        f"python benchmarks/eval_unet.py --model {args.model} --n {args.n} --modes {args.modes}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = markdown(res, modes)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
