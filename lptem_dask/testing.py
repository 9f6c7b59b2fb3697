"""Small synthetic images and videos with exact ground truth, and matching helpers.

For other modules' tests: everything here is tiny (32-128 px), fast and
deterministic, rendered by the physics simulator
(:func:`lptem_dask.simulate.render_frame`) so that particles are exact
projected outlines with a requested per-pixel CNR.

Examples
--------
>>> img = synthetic_image((64, 64), n_particles=3, cnr=5.0, seed=0)
>>> img["image"].shape, int(img["labels"].max())
((64, 64), 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree

from .errors import InputError
from .simulate.config import SimulationConfig
from .simulate.scene import make_background, render_frame, sample_image_params

__all__ = [
    "synthetic_config",
    "synthetic_image",
    "synthetic_video",
    "match_positions",
    "assert_positions_match",
    "prism_diffusion_from_labels",
]


def synthetic_config(
    size_px: int = 64,
    *,
    mtf: str = "none",
    quantisation: str = "none",
    cnr: float | None = 5.0,
    pixel_size_nm: float = 1.0,
) -> SimulationConfig:
    """A quiet simulator configuration for tests: square canvas, 1 nm/px, no motion blur."""
    return SimulationConfig.model_validate(
        {
            "optics": {
                "image_size_px": int(size_px),
                "pixel_size_nm": float(pixel_size_nm),
                "mtf": mtf,
                "quantisation": quantisation,
            },
            "particles": {"diffusion_nm2_s": 0.0},
            "target_cnr": cnr,
        }
    )


def _place(rng, n: int, size: int, diameter_px: float, min_sep: float) -> np.ndarray:
    pts: list[np.ndarray] = []
    lo, hi = diameter_px / 2 + 1, size - 1 - diameter_px / 2 - 1
    if hi <= lo:
        raise InputError(f"`diameter_px`={diameter_px} does not fit a {size} px frame")
    for _ in range(2000):
        if len(pts) == n:
            break
        p = rng.uniform(lo, hi, size=2)
        if all(np.hypot(*(p - q)) >= min_sep for q in pts):
            pts.append(p)
    if len(pts) < n:
        raise InputError(
            f"cannot place {n} particles of {diameter_px} px apart in a {size} px frame; "
            "use fewer particles or a larger frame"
        )
    return np.array(pts)


def synthetic_image(
    shape: tuple[int, int] = (64, 64),
    *,
    n_particles: int = 3,
    particle_shape: str = "sphere",
    diameter_px: float = 12.0,
    cnr: float = 5.0,
    mtf: str = "none",
    touching: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """One image with ``n_particles`` separated dark particles at a requested CNR.

    Parameters
    ----------
    shape : (int, int)
        Square frames only (``shape[0] == shape[1]``).
    particle_shape : {"sphere", "prism", "rod", "cube"}
        ``diameter_px`` is the sphere diameter, prism edge, rod length, cube edge.
    cnr : float
        Per-pixel CNR of the particles on the final image.
    touching : bool
        Allow particles to touch (minimum separation 0.9 diameters).

    Returns
    -------
    dict
        ``image`` float32 (y, x), ``mask`` bool, ``labels`` int32,
        ``truth`` DataFrame (``label``, ``y``, ``x`` px, ``area_px``, ...),
        ``cnr`` (measured).
    """
    ny, nx = shape
    if ny != nx:
        raise InputError(f"`shape` must be square, got {shape}")
    cfg = synthetic_config(ny, mtf=mtf, cnr=cnr)
    rng = np.random.default_rng(seed)
    sep = (0.9 if touching else 1.6) * diameter_px
    pts = _place(rng, n_particles, ny, diameter_px, sep)
    df = pd.DataFrame(
        {
            "y": pts[:, 0],
            "x": pts[:, 1],
            "shape": particle_shape,
            "size_nm": float(diameter_px),
            "diameter_nm": max(diameter_px / 3.0, 2.0),
            "thickness_nm": 10.0,
            "orientation_deg": rng.uniform(0, 360, size=n_particles),
            "lambda_nm": 60.0,
        }
    )
    out = render_frame(df, cfg, rng=rng)
    return {k: out[k] for k in ("image", "mask", "labels", "boundary", "truth", "cnr")}


def synthetic_video(
    n_frames: int = 5,
    shape: tuple[int, int] = (64, 64),
    *,
    n_particles: int = 3,
    particle_shape: str = "sphere",
    diameter_px: float = 10.0,
    diffusion_px2_per_frame: float = 1.0,
    drift_px_per_frame: tuple[float, float] = (0.0, 0.0),
    cnr: float = 5.0,
    pixel_size_nm: float = 1.0,
    frame_interval_s: float = 0.1,
    seed: int = 0,
) -> tuple[xr.DataArray, pd.DataFrame]:
    """A short video of Brownian particles with exact trajectories.

    Each particle takes Gaussian steps of variance ``2 D`` per axis per frame
    (``D = diffusion_px2_per_frame``, so MSD(lag) = 4 D lag px^2) plus the
    drift; positions reflect at the frame edges. The dose is fixed after the
    first frame (CNR ~ ``cnr``); the background is static.

    Returns
    -------
    video : xr.DataArray (frame, y, x) float32, from :func:`lptem_dask.io.from_array`
    truth : DataFrame with ``frame``, ``particle``, ``label``, ``y``, ``x`` (px),
        ``area_px``
    """
    from .io import from_array

    ny, nx = shape
    if ny != nx:
        raise InputError(f"`shape` must be square, got {shape}")
    cfg = synthetic_config(ny, cnr=cnr, pixel_size_nm=pixel_size_nm)
    rng = np.random.default_rng(seed)
    pts = _place(rng, n_particles, ny, diameter_px, 1.6 * diameter_px)
    lo, hi = diameter_px / 2 + 1, ny - 2 - diameter_px / 2
    orient = rng.uniform(0, 360, size=n_particles)
    params = sample_image_params(rng, cfg)
    background = make_background(cfg, rng=rng, params=params)
    frames, rows = [], []
    n_e = None
    for f in range(int(n_frames)):
        if f > 0:
            step = rng.normal(0, np.sqrt(2 * diffusion_px2_per_frame), size=pts.shape)
            pts = pts + step + np.asarray(drift_px_per_frame)
            pts = np.where(pts < lo, 2 * lo - pts, pts)
            pts = np.where(pts > hi, 2 * hi - pts, pts)
        df = pd.DataFrame(
            {
                "y": pts[:, 0],
                "x": pts[:, 1],
                "shape": particle_shape,
                "size_nm": float(diameter_px) * pixel_size_nm,
                "diameter_nm": max(diameter_px / 3.0, 2.0) * pixel_size_nm,
                "thickness_nm": 10.0,
                "orientation_deg": orient,
                "lambda_nm": 60.0,
            }
        )
        out = render_frame(
            df, cfg, rng=rng, params=params, background=background, electrons_per_px=n_e
        )
        n_e = out["electrons_per_px"]
        frames.append(out["image"])
        t = out["truth"][["label", "y", "x", "area_px"]].copy()
        t.insert(0, "particle", np.arange(n_particles))
        t.insert(0, "frame", f)
        rows.append(t)
    video = from_array(
        np.stack(frames),
        pixel_size_nm=pixel_size_nm,
        frame_interval_s=frame_interval_s,
        source="lptem_dask.testing.synthetic_video",
    )
    return video, pd.concat(rows, ignore_index=True)


def match_positions(
    found: pd.DataFrame, truth: pd.DataFrame, *, max_distance_px: float
) -> tuple[pd.DataFrame, float, float]:
    """Match found to true positions (``y``, ``x``) one-to-one within a distance.

    Greedy nearest-first matching with a KD-tree (per ``frame`` when both
    tables have that column).

    Returns
    -------
    matches : DataFrame with ``found_index``, ``truth_index``, ``distance_px``
    precision, recall : float
    """
    groups: list[tuple[Any, pd.DataFrame, pd.DataFrame]]
    if "frame" in found.columns and "frame" in truth.columns:
        groups = [
            (f, found[found["frame"] == f], truth[truth["frame"] == f])
            for f in sorted(set(found["frame"]) | set(truth["frame"]))
        ]
    else:
        groups = [(None, found, truth)]
    rows = []
    for _, a, b in groups:
        if len(a) == 0 or len(b) == 0:
            continue
        tree = cKDTree(b[["y", "x"]].to_numpy(float))
        d, j = tree.query(
            a[["y", "x"]].to_numpy(float), k=min(len(b), 8), distance_upper_bound=max_distance_px
        )
        d = np.atleast_2d(d.reshape(len(a), -1))
        j = np.atleast_2d(j.reshape(len(a), -1))
        cand = [
            (d[i, k], i, j[i, k])
            for i in range(len(a))
            for k in range(d.shape[1])
            if np.isfinite(d[i, k])
        ]
        used_a: set[int] = set()
        used_b: set[int] = set()
        for dist, i, jj in sorted(cand):
            if i in used_a or jj in used_b:
                continue
            used_a.add(i)
            used_b.add(jj)
            rows.append((a.index[i], b.index[jj], float(dist)))
    matches = pd.DataFrame(rows, columns=["found_index", "truth_index", "distance_px"])
    precision = len(matches) / len(found) if len(found) else float("nan")
    recall = len(matches) / len(truth) if len(truth) else float("nan")
    return matches, precision, recall


def assert_positions_match(
    found: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    max_distance_px: float = 2.0,
    min_precision: float = 1.0,
    min_recall: float = 1.0,
) -> pd.DataFrame:
    """Assert that found positions match the truth; returns the matches."""
    matches, p, r = match_positions(found, truth, max_distance_px=max_distance_px)
    if not (p >= min_precision and r >= min_recall):
        raise AssertionError(
            f"positions do not match within {max_distance_px} px: precision {p:.3f} "
            f"(need {min_precision}), recall {r:.3f} (need {min_recall}); "
            f"{len(found)} found, {len(truth)} true, {len(matches)} matched"
        )
    return matches


def prism_diffusion_from_labels(
    video: xr.DataArray, labels: xr.DataArray, *, exposure_s: float, n_boot: int = 50
) -> tuple[float, float]:
    """Translational D (nm²/s) and rotational D_r (rad²/s) of nanoprisms from their labels.

    The path of the diffusion tests and benchmarks: :func:`~lptem_dask.measure.measure_regions`
    with prism descriptors; regions touching the border, merged pairs and broken pieces
    (area outside 0.7-1.3 of the median, solidity <= 0.85) dropped;
    :func:`~lptem_dask.track.link` (30 nm, memory 1, 120° orientation unwrapping);
    :func:`~lptem_dask.analysis.diffusion.diffusion_analysis` without drift, with the
    field of view of the particle centres for the edge correction of the MSD.

    Parameters
    ----------
    video, labels : xr.DataArray (frame, y, x)
        ``video.attrs`` gives ``pixel_size_nm`` and ``frame_interval_s``.
    exposure_s : float
        Exposure per frame (s), for the motion-blur correction.
    n_boot : int
        Bootstrap resamples of the intervals.

    Returns
    -------
    D_nm2_per_s, D_r_rad2_per_s : float
    """
    import trackpy

    from .analysis.diffusion import diffusion_analysis
    from .measure import measure_regions
    from .track import link

    trackpy.quiet()
    tab = measure_regions(labels, video, shape="prism").compute()
    tab = tab[~tab["touches_border"]]
    # single, whole particles only: merged pairs (twice the area, concave) have no orientation
    med = tab["area_px"].median()
    tab = tab[tab["area_px"].between(0.7 * med, 1.3 * med) & (tab["solidity"] > 0.85)]
    tracks = link(tab, search_range_nm=30.0, memory=1, symmetry_deg=120)
    # centres of particles that do not touch the border lie in the image shrunk by about
    # half a particle: the field of view for the edge correction of the MSD
    ps = float(video.attrs["pixel_size_nm"])
    half = (
        0.5
        * ps
        * float(np.median(np.concatenate([tab.bbox_y1 - tab.bbox_y0, tab.bbox_x1 - tab.bbox_x0])))
    )
    H, W = video.sizes["y"] * ps - 2 * half, video.sizes["x"] * ps - 2 * half
    s, _ = diffusion_analysis(
        tracks,
        frame_interval_s=float(video.attrs["frame_interval_s"]),
        exposure_s=exposure_s,
        drift="none",
        n_boot=n_boot,
        window_nm=(half, half, H, W),
    )
    return float(s["translation"]["D"]), float(s["rotation"]["D"])
