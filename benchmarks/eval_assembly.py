#!/usr/bin/env python
"""Chaining kinetics end to end through the shipped U-Net, over seeds (issue 7's acceptance).

For each law (first_order, second_order, smoluchowski) and each seed: the committed
config ``configs/assembly/<law>.yaml`` with ``--monomers`` monomers (pair rates
scaled by 800 / monomers so the time course is the committed one, as
``tests/test_assembly.py`` does) is simulated and rendered through the image
simulator (``simulate_assembly_video``), segmented by ``lp.segment`` with the
default model, measured (``measure_regions`` with the video, so regions have their
contrast), turned into chains (``chains_from_regions``) and fitted
(``fit_kinetics``). The kinetic fit of the simulation's own truth chains is
recorded beside it: it says how far the rate of that realisation is from the
configured one, which no segmentation can do better than.

Figures per law: seeds where the law is identified, seeds with k within 10% of
the configured rate, seeds whose 95% interval covers it, and the same for the
fit of the truth chains (targets: 9 / 10 identified, k within 10%, coverage
8 / 10).

Usage::

    .venv/bin/python benchmarks/eval_assembly.py                 # 10 seeds x 3 laws (~90 min on 2 cores)
    .venv/bin/python benchmarks/eval_assembly.py --seeds 0 1     # quicker

Each (law, seed) is saved as JSON in ``--work`` as it finishes, with its regions
table as Parquet (not committed: about 2 MB each; a rerun skips those already there; ``--refit`` refits every
run from its saved regions, for a change to the analysis alone); the summary goes
to ``benchmarks/results/assembly_e2e.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import save_result

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "assembly"
LAWS = ("first_order", "second_order", "smoluchowski")


def _config(law: str, monomers: int):
    from lptem_dask.simulate.assembly import load_assembly_config

    base = load_assembly_config(CONFIGS / f"{law}.yaml")
    k = base.rate_constant_per_s * (1.0 if law == "first_order" else base.n_monomers / monomers)
    return base.model_copy(update={"n_monomers": monomers, "rate_constant_per_s": k})


def run_one(law: str, seed: int, monomers: int, regions_path: Path, refit: bool) -> dict:
    """Segment + measure (or, with ``refit``, read the regions saved by an earlier
    run of the same law and seed), then fit; the truth chains are re-simulated."""
    import pandas as pd

    import lptem_dask as lp
    from lptem_dask.analysis.assembly import chain_statistics, chains_from_regions, fit_kinetics
    from lptem_dask.measure import measure_regions
    from lptem_dask.simulate.assembly import simulate_assembly, simulate_assembly_video

    t0 = time.time()
    cfg = _config(law, monomers)
    k = cfg.rate_constant_per_s
    if refit and regions_path.exists():
        reg = pd.read_parquet(regions_path)
        truth = simulate_assembly(cfg, seed=seed)
    else:
        video, truth = simulate_assembly_video(cfg, seed=seed)
        labels = lp.segment(
            video, model="default", particle_size_px=cfg.edge_nm / cfg.pixel_size_nm
        )
        reg = measure_regions(
            labels, video, shape="cube", frame_interval_s=cfg.frame_interval_s
        ).compute()
        reg.to_parquet(regions_path)
    fit = fit_kinetics(chain_statistics(chains_from_regions(reg, shape="cube")))
    tfit = fit_kinetics(truth.chains())
    return {
        "law": law,
        "seed": seed,
        "k_true": k,
        "best": fit["best"],
        "truth_best": tfit["best"],
        "k": fit["fits"][law]["k_per_s"],
        "ci95": fit["fits"][law]["ci95_per_s"],
        "error_rate": fit["fits"][law]["error_rate"],
        "truth_k": tfit["fits"][law]["k_per_s"],
        "truth_ci95": tfit["fits"][law]["ci95_per_s"],
        "delta_aic": fit["delta_aic"],
        "seconds": time.time() - t0,
    }


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for law in LAWS:
        rs = [r for r in runs if r["law"] == law]
        if not rs:
            continue

        def within(r: dict, key: str) -> bool:
            return abs(r[key] / r["k_true"] - 1) <= 0.10

        def covers(r: dict, key: str) -> bool:
            return r[key][0] <= r["k_true"] <= r[key][1]

        out[law] = {
            "seeds": [r["seed"] for r in rs],
            "identified": sum(r["best"] == law for r in rs),
            "k_within_10pct": sum(within(r, "k") for r in rs),
            "ci_covers_truth": sum(covers(r, "ci95") for r in rs),
            "k_over_k_true": [round(r["k"] / r["k_true"], 4) for r in rs],
            "k_over_truth_fit_k": [round(r["k"] / r["truth_k"], 4) for r in rs],
            "truth_fit": {
                "identified": sum(r["truth_best"] == law for r in rs),
                "k_within_10pct": sum(within(r, "truth_k") for r in rs),
                "ci_covers_truth": sum(covers(r, "truth_ci95") for r in rs),
            },
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--laws", nargs="+", default=list(LAWS), choices=LAWS)
    ap.add_argument("--monomers", type=int, default=300)
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "assembly_runs"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "assembly_e2e.json"))
    ap.add_argument(
        "--refit",
        action="store_true",
        help="refit from the regions saved in --work (after a change to the analysis only)",
    )
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for law in args.laws:
            f = work / f"{law}_{seed}.json"
            if args.refit or not f.exists():
                res = run_one(law, seed, args.monomers, work / f"{law}_{seed}.parquet", args.refit)
                f.write_text(json.dumps(res, indent=1))
            r = json.loads(f.read_text())
            print(
                f"{law} seed {seed}: best {r['best']}, k/k_true {r['k'] / r['k_true']:.3f}"
                f" (truth chains: {r['truth_k'] / r['k_true']:.3f}), CI {r['ci95']}",
                flush=True,
            )
            runs.append(r)
    res = {"monomers": args.monomers, "laws": summarise(runs), "runs": runs}
    for law, s in res["laws"].items():
        print(law, {k: v for k, v in s.items() if k != "seeds"})
    save_result(res, args.out, "eval_assembly.py")


if __name__ == "__main__":
    main()
