"""Scenes: sample particles and backgrounds, and render one LPTEM frame.

:func:`render_frame` turns an explicit particle table into an image with its
exact ground truth; :func:`simulate_one` samples a scene from a
:class:`~lptem_dask.simulate.config.SimulationConfig` and renders it. Both are
pure numpy and deterministic given their random generator.

Image formation (per frame), all maps on the canvas of ``image_size_px``:

1. every particle's thickness map ``t_i`` (nm, exact chord; see
   :mod:`~lptem_dask.simulate.shapes`) on its own bounding-box patch, averaged
   over sub-pixel samples (``optics.supersample``), averaged along its Brownian
   path during the exposure and convolved with its defocus disk;
2. attenuation exponent ``E = Σ t_i/λ_i + max(t_liquid - Σ t_i, 0)/λ_liquid
   + 2 t_SiN/λ_SiN (+ specks, + Fresnel edge fringe)``; particles displace
   liquid; ``t_liquid`` may vary smoothly across the field;
3. mean electrons ``μ = N_e · illumination · exp(-E)``;
4. Poisson shot noise, Gaussian read noise, spatially correlated noise;
5. detector MTF (Fourier space), gain, frame intensity drift, offset;
6. quantisation and clipping (none, uint8 min-max, uint16).

The ground truth is the exact projected outline ``t_i > 0`` of every labelled
particle at its time-averaged position, sampled at pixel centres; ghost
particles are drawn in the image but never in the mask.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft as sfft
from scipy import ndimage, signal

from ..errors import InputError
from .config import SimulationConfig, load_simulation_config
from .optics import (
    apply_mtf,
    background_region,
    brownian_path,
    disk_kernel,
    electrons_per_pixel,
    mtf_2d,
    mtf_squared_kernel_rfft,
    path_kernel,
)
from .shapes import bounding_radius_nm, spherocylinder_profile, thickness

MAX_ELECTRONS_PER_PX = 1e12
logger = logging.getLogger(__name__)

__all__ = [
    "TRUTH_COLUMNS",
    "sample_image_params",
    "sample_particles",
    "make_background",
    "render_frame",
    "simulate_one",
    "boundary_band",
]

#: Columns of the per-particle truth table and their dtypes.
TRUTH_COLUMNS: dict[str, str] = {
    "index": "int64",  # image index
    "label": "int32",  # instance label in `labels` (0 for unlabelled/ghosts)
    "y": "float64",  # centre row, px (pixel centres at integers), time-averaged
    "x": "float64",  # centre column, px
    "orientation_deg": "float64",  # reference axis, CCW from +x on screen
    "shape": "object",  # prism | rod | cube | sphere | ellipsoid
    "size_nm": "float64",  # prism edge | rod tip-to-tip length | cube edge | sphere diameter
    "size_px": "float64",  # size_nm / pixel_size_nm
    "thickness_nm": "float64",  # largest chord: prism plate | rod diameter | cube edge | sphere d
    "diameter_nm": "float64",  # rod diameter, ellipsoid width (NaN for others)
    "truncation": "float64",  # prism corner truncation (NaN for others)
    "recess_depth": "float64",  # cube recess depth / L (NaN for others)
    "lambda_nm": "float64",  # inelastic mean free path of the particle
    "labelled": "bool",  # in mask/labels
    "ghost": "bool",  # blurred/fast distractor, not labelled
    "defocus_radius_px": "float64",  # own disk blur, on top of the image's optics defocus
    "diffusion_nm2_s": "float64",  # Brownian D during the exposure
}


# ----------------------------------------------------------------------------- sampling
def _draw(spec, rng: np.random.Generator, *, log: bool = False) -> float:
    if isinstance(spec, tuple):
        lo, hi = float(spec[0]), float(spec[1])
        if lo == hi:
            return lo
        if log:
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return float(rng.uniform(lo, hi))
    return float(spec)


def _draw_int(spec, rng: np.random.Generator) -> int:
    if isinstance(spec, tuple):
        return int(rng.integers(int(spec[0]), int(spec[1]) + 1))
    return int(spec)


def sample_image_params(rng: np.random.Generator, config: SimulationConfig) -> dict[str, Any]:
    """Draw the per-image values of every ``Range`` field of the optics and target CNR."""
    o = config.optics
    p: dict[str, Any] = {
        "pixel_size_nm": _draw(o.pixel_size_nm, rng, log=True),
        "liquid_thickness_nm": _draw(o.liquid_thickness_nm, rng),
        "read_noise_e": _draw(o.read_noise_e, rng),
        "mtf_cutoff_cycles_per_px": _draw(o.mtf_cutoff_cycles_per_px, rng),
        "correlated_noise_rel": _draw(o.correlated_noise_rel, rng),
        "defocus_radius_px": _draw(o.defocus_radius_px, rng),
        "fresnel_fringe": _draw(o.fresnel_fringe, rng),
        "diffusion_nm2_s": _draw(config.particles.diffusion_nm2_s, rng),
        "target_cnr": (
            None if config.target_cnr is None else _draw(config.target_cnr, rng, log=True)
        ),
        "drift_factor": 1.0 + (o.drift_rel * float(rng.standard_normal()) if o.drift_rel else 0.0),
    }
    p["drift_factor"] = max(p["drift_factor"], 0.05)
    return p


def _hex_lattice(rng, n_px: int, spacing: float, pad: float) -> np.ndarray:
    th = rng.uniform(0, np.pi / 3)
    a1 = spacing * np.array([np.cos(th), np.sin(th)])
    a2 = spacing * np.array([np.cos(th + np.pi / 3), np.sin(th + np.pi / 3)])
    m = int(np.ceil(2 * (n_px + 2 * pad) / spacing)) + 2
    i, j = np.meshgrid(np.arange(-m, m + 1), np.arange(-m, m + 1), indexing="ij")
    pts = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    pts = pts + rng.uniform(0, spacing, size=2) + n_px / 2.0
    keep = np.all((pts >= -pad) & (pts <= n_px - 1 + pad), axis=1)
    return pts[keep]


def sample_particles(
    rng: np.random.Generator, config: SimulationConfig, params: dict[str, Any], *, index: int = 0
) -> pd.DataFrame:
    """Draw the particles of one image (labelled ones, then ghosts) as a truth table.

    Returns a DataFrame with :data:`TRUTH_COLUMNS` plus ``radius_profile_nm``
    (object: array of radii tip to tip for etched rods, else None).
    """
    pc = config.particles
    n_px = config.optics.image_size_px
    ps = params["pixel_size_nm"]
    species = pc.shapes
    w = np.array([s.weight for s in species], dtype=np.float64)
    w /= w.sum()
    per = [
        {
            "size": _draw(s.size_nm, rng),
            "thick": _draw(s.thickness_nm, rng),
            "diam": _draw(s.diameter_nm, rng),
            "trunc": _draw(s.truncation, rng),
            "mfp": _draw(s.mfp_nm, rng),
            "etch": _draw(s.etch_amplitude, rng),
        }
        for s in species
    ]
    single = rng.random() < pc.single_shape_fraction
    lattice = rng.random() < pc.lattice_fraction
    pad = pc.border_padding * n_px
    if lattice or single:
        kind = np.full(1, rng.choice(len(species), p=w))
    if lattice:
        s0 = per[int(kind[0])]
        extent = (
            s0["size"]
            if species[int(kind[0])].shape not in ("rod", "ellipsoid")
            else s0["diam"] * 2
        )
        spacing = max(extent / ps * (1.0 + _draw(pc.lattice_gap, rng)), 3.0)
        pts = _hex_lattice(rng, n_px, spacing, pad)
        pts = pts[rng.random(len(pts)) >= pc.lattice_vacancy]
        if len(pts) > pc.max_count:
            # a supracrystal domain: the max_count lattice sites nearest a random point
            c0 = rng.uniform(0, n_px - 1, size=2)
            order = np.argsort(((pts - c0) ** 2).sum(axis=1), kind="stable")
            pts = pts[np.sort(order[: pc.max_count])]
        pts = pts + rng.normal(0, 0.04 * spacing, size=pts.shape)
        n = len(pts)
        ys, xs = pts[:, 0], pts[:, 1]
        kinds = np.full(n, kind[0])
        orient0 = rng.uniform(0, 360)
        orient = orient0 + rng.normal(0, 5.0, size=n)
    else:
        n = _draw_int(pc.count, rng)
        ys = rng.uniform(-pad, n_px - 1 + pad, size=n)
        xs = rng.uniform(-pad, n_px - 1 + pad, size=n)
        kinds = np.full(n, kind[0]) if single else rng.choice(len(species), size=n, p=w)
        orient = rng.uniform(0, 360, size=n)
    n_ghost = _draw_int(pc.ghost_count, rng)
    gk = rng.choice(len(species), size=n_ghost, p=w)
    gy = rng.uniform(0, n_px - 1, size=n_ghost)
    gx = rng.uniform(0, n_px - 1, size=n_ghost)
    go = rng.uniform(0, 360, size=n_ghost)
    g_blur = np.array([_draw(pc.ghost_blur_px, rng) for _ in range(n_ghost)])
    g_diff = np.array([_draw(pc.ghost_diffusion_nm2_s, rng) for _ in range(n_ghost)])
    p_defocus = np.array([_draw(pc.particle_defocus_px, rng) for _ in range(n)])

    all_k = np.concatenate([kinds, gk]).astype(np.int64)
    m = len(all_k)
    z_size = rng.standard_normal(m)
    z_diam = rng.standard_normal(m)
    rows = []
    for i in range(m):
        k = int(all_k[i])
        s, v = species[k], per[k]
        disp = s.size_dispersity
        fs = max(1.0 + z_size[i] * disp, 0.3)
        fd = max(1.0 + z_diam[i] * disp, 0.3)
        size = v["size"] * fs
        diam = np.nan
        trunc = np.nan
        recess = np.nan
        prof = None
        if s.shape == "prism":
            thick = v["thick"]
            trunc = v["trunc"]
        elif s.shape == "rod":
            diam = v["diam"] * fd
            size = max(size, diam)
            thick = diam
            if v["etch"] > 0:
                sgrid, r = spherocylinder_profile(size, diam, n=65)
                mod = _smooth_noise(rng, 65, corr=8.0)
                prof = np.clip(r * (1.0 + v["etch"] * mod), 0.0, None)
                prof[0] = prof[-1] = 0.0
        elif s.shape == "cube":
            thick = size
            recess = s.recess_depth
        elif s.shape == "ellipsoid":
            diam = v["diam"] * fd
            size = max(size, diam)
            thick = diam
        else:
            thick = size
        ghost = i >= n
        rows.append(
            {
                "index": index,
                "label": 0,
                "y": float(ys[i]) if not ghost else float(gy[i - n]),
                "x": float(xs[i]) if not ghost else float(gx[i - n]),
                "orientation_deg": float(orient[i] % 360.0) if not ghost else float(go[i - n]),
                "shape": s.shape,
                "size_nm": size,
                "size_px": size / ps,
                "thickness_nm": thick,
                "diameter_nm": diam,
                "truncation": trunc,
                "recess_depth": recess,
                "lambda_nm": v["mfp"],
                "labelled": not ghost,
                "ghost": ghost,
                "defocus_radius_px": p_defocus[i] if not ghost else g_blur[i - n],
                "diffusion_nm2_s": params["diffusion_nm2_s"] if not ghost else g_diff[i - n],
                "radius_profile_nm": prof,
            }
        )
    df = pd.DataFrame(rows, columns=[*TRUTH_COLUMNS, "radius_profile_nm"])
    df = df.astype({k: v for k, v in TRUTH_COLUMNS.items() if v != "object"})
    if not lattice and pc.min_gap_px is not None and n > 1:
        df = _place_without_overlap(
            rng,
            df,
            n_px=n_px,
            pad=pad,
            pixel_size_nm=ps,
            gap_px=pc.min_gap_px,
            tries=pc.placement_tries,
        )
    lab = np.zeros(len(df), dtype=np.int32)
    lab[df["labelled"].to_numpy()] = np.arange(1, int(df["labelled"].sum()) + 1)
    df["label"] = lab
    return df


def _footprint(row: dict, cy: float, cx: float, ps: float, grow_px: int):
    """Projected footprint of a particle centred at (cy, cx): (y0, x0, bool patch)."""
    rb = bounding_radius_nm(
        row["shape"], float(row["size_nm"]), float(_get(row, "diameter_nm", 0.0))
    )
    r = rb / ps + grow_px + 1
    y0, x0 = int(np.floor(cy - r)), int(np.floor(cx - r))
    y1, x1 = int(np.ceil(cy + r)) + 1, int(np.ceil(cx + r)) + 1
    dy = (np.arange(y0, y1) - cy)[:, None]
    dx = (np.arange(x0, x1) - cx)[None, :]
    m = thickness(dy, dx, row, pixel_size_nm=ps) > 0
    if grow_px > 0:
        m = ndimage.binary_dilation(m, iterations=grow_px)
    return y0, x0, m


def _place_without_overlap(
    rng: np.random.Generator,
    df: pd.DataFrame,
    *,
    n_px: int,
    pad: float,
    pixel_size_nm: float,
    gap_px: float,
    tries: int,
) -> pd.DataFrame:
    """Random sequential addition with hard-core exclusion of the labelled particles.

    Particles adsorbed in the thin liquid layer next to a window form a 2-D
    layer and cannot interpenetrate, so their projections do not overlap.
    Each labelled particle keeps its drawn position if its footprint (its
    exact projected shape, grown by ``gap_px``) is free, else up to ``tries``
    uniform positions are drawn; a particle that finds no room is dropped, so
    crowded frames of large particles hold fewer than ``count``. Ghosts
    (out-of-focus, unlabelled) are left alone.
    """
    grow = int(np.ceil(gap_px))
    m0 = int(np.ceil(pad)) + 2
    size = n_px + 2 * m0
    occ = np.zeros((size, size), dtype=bool)
    keep = np.ones(len(df), dtype=bool)
    ys = df["y"].to_numpy(dtype=np.float64).copy()
    xs = df["x"].to_numpy(dtype=np.float64).copy()
    records = df.to_dict("records")
    for i, row in enumerate(records):
        if not row["labelled"]:
            continue
        cy, cx = ys[i], xs[i]
        placed = False
        for t in range(tries):
            if t:
                cy = float(rng.uniform(-pad, n_px - 1 + pad))
                cx = float(rng.uniform(-pad, n_px - 1 + pad))
            y0, x0, m = _footprint(row, cy, cx, pixel_size_nm, grow)
            sl = _slices(y0 + m0, x0 + m0, m.shape, (size, size))
            if sl is None:
                continue
            cs, psl = sl
            if not (occ[cs] & m[psl]).any():
                # occupy the bare footprint; the grown one was tested
                if grow:
                    y0, x0, m = _footprint(row, cy, cx, pixel_size_nm, 0)
                    sl = _slices(y0 + m0, x0 + m0, m.shape, (size, size))
                    if sl is not None:
                        cs, psl = sl
                        occ[cs] |= m[psl]
                else:
                    occ[cs] |= m[psl]
                placed = True
                break
        keep[i] = placed
        ys[i], xs[i] = cy, cx
    out = df.copy()
    out["y"] = ys
    out["x"] = xs
    return out.loc[keep].reset_index(drop=True)


def _smooth_noise(rng, n: int, corr: float) -> np.ndarray:
    x = rng.standard_normal(n + 4 * int(corr))
    y = ndimage.gaussian_filter1d(x, corr)[2 * int(corr) : 2 * int(corr) + n]
    return (y - y.mean()) / (y.std() + 1e-12)


@functools.lru_cache(maxsize=16)
def _gauss_spectrum(shape: tuple[int, int], corr_px: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    k = np.exp(-2.0 * np.pi**2 * corr_px**2 * (fy * fy + fx * fx)).astype(np.float32)
    k.setflags(write=False)
    return k


@functools.lru_cache(maxsize=16)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Periodic linear interpolation from ``n_in`` to ``n_out`` samples (cell centres)."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    i0 = np.floor(x).astype(int)
    w = x - i0
    M = np.zeros((n_out, n_in), dtype=np.float32)
    M[np.arange(n_out), i0 % n_in] += (1 - w).astype(np.float32)
    M[np.arange(n_out), (i0 + 1) % n_in] += w.astype(np.float32)
    M.setflags(write=False)
    return M


def _gaussian_field(rng, shape, corr_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with a Gaussian filter of ``corr_px``.

    Long correlation lengths are drawn on a coarser grid (at least 4 samples
    per correlation length) and interpolated linearly.
    """
    ny, nx = shape
    f = int(max(1, min(corr_px // 4, min(ny, nx) // 16)))
    cs = (-(-ny // f), -(-nx // f))
    w = rng.standard_normal(cs, dtype=np.float32)
    g = sfft.irfft2(sfft.rfft2(w) * _gauss_spectrum(cs, float(corr_px) / f), s=cs)
    if f > 1:
        g = _interp_matrix(ny, cs[0]) @ g.astype(np.float32) @ _interp_matrix(nx, cs[1]).T
    g = g.astype(np.float64)
    g -= g.mean()
    return g / (g.std() + 1e-300)


@functools.lru_cache(maxsize=16)
def _canvas_blur_spectrum(
    shape: tuple[int, int], radius_px: float, fringe: float, sigma_px: float
) -> np.ndarray:
    """rFFT transfer function of ``disk * (1 + fringe (1 - Gauss_sigma))`` on the canvas.

    The disk is the defocus "bokeh"; ``fringe (x - G x)`` is a band-pass edge
    term: darker rim inside, brighter halo outside (Fresnel fringes of an
    under-focused bright-field image).
    """
    ny, nx = shape
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    H = np.ones((ny, nx // 2 + 1))
    if radius_px > 0:
        k = disk_kernel(radius_px)
        pad = np.zeros(shape)
        r = k.shape[0] // 2
        pad[: k.shape[0], : k.shape[1]] = k
        pad = np.roll(pad, (-r, -r), axis=(0, 1))
        H = sfft.rfft2(pad)
    if fringe > 0:
        G = np.exp(-2.0 * np.pi**2 * sigma_px**2 * (fy * fy + fx * fx))
        H = H * (1.0 + fringe * (1.0 - G))
    out = np.asarray(H, dtype=np.complex64)
    out.setflags(write=False)
    return out


def make_background(
    config: SimulationConfig,
    *,
    rng: np.random.Generator,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Sample the static background of a field of view.

    Returns a dict: ``liquid_nm`` (float or (y, x) map, nm), ``illumination``
    (float or (y, x) map, mean 1), ``speck_exponent`` ((y, x) Beer-Lambert
    exponent of contamination specks, or None). Video simulators sample it
    once and pass it to every :func:`render_frame`.
    """
    b = config.background
    n = config.optics.image_size_px
    shape = (n, n)
    out: dict[str, Any] = {"liquid_nm": params["liquid_thickness_nm"], "illumination": 1.0}
    sig = _draw(b.liquid_variation_nm, rng)
    corr = _draw(b.liquid_correlation_px, rng)
    if sig > 0:
        out["liquid_nm"] = params["liquid_thickness_nm"] + sig * _gaussian_field(rng, shape, corr)
    if b.thin_region_probability > 0 and rng.random() < b.thin_region_probability:
        # thin-liquid regions (dewetting, a growing bubble): the level set of a
        # smooth random field, with a soft edge, where a fraction of the liquid is missing
        frac = _draw(b.thin_region_fraction, rng)
        depth = _draw(b.thin_region_depth, rng)
        field = _gaussian_field(rng, shape, _draw(b.thin_region_scale_px, rng))
        region = (field > np.quantile(field, 1.0 - frac)).astype(np.float64)
        region = ndimage.gaussian_filter(region, _draw(b.thin_region_edge_px, rng) / 2.0)
        out["liquid_nm"] = np.clip(out["liquid_nm"] * (1.0 - depth * region), 0.0, None)
    g = _draw(b.illumination_gradient, rng)
    if g > 0:
        phi = rng.uniform(0, 2 * np.pi)
        yy = (np.arange(n) - (n - 1) / 2.0) / n
        plane = 1.0 + g * (np.cos(phi) * yy[None, :] + np.sin(phi) * yy[:, None])
        out["illumination"] = np.maximum(plane, 0.05)
    k = _draw_int(b.specks, rng)
    if k > 0:
        sp = np.zeros(shape)
        for _ in range(k):
            cy, cx = rng.uniform(0, n - 1, size=2)
            r0 = _draw(b.speck_radius_px, rng)
            t0 = _draw(b.speck_thickness_nm, rng)
            R = int(np.ceil(4 * r0)) + 1
            y0, x0 = int(np.floor(cy)) - R, int(np.floor(cx)) - R
            sy = np.arange(y0, y0 + 2 * R + 2)
            sx = np.arange(x0, x0 + 2 * R + 2)
            blob = t0 * np.exp(-((sy[:, None] - cy) ** 2 + (sx[None, :] - cx) ** 2) / (2 * r0 * r0))
            _add_patch(sp, blob / b.speck_mfp_nm, y0, x0)
        out["speck_exponent"] = sp
    else:
        out["speck_exponent"] = None
    return out


# ----------------------------------------------------------------------------- rendering
def _slices(y0: int, x0: int, shape: tuple[int, int], canvas: tuple[int, int]):
    """Canvas and patch slices of a patch at (y0, x0), or None when outside."""
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + shape[0], canvas[0]), min(x0 + shape[1], canvas[1])
    if cy1 <= cy0 or cx1 <= cx0:
        return None
    return (
        (slice(cy0, cy1), slice(cx0, cx1)),
        (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)),
    )


def _add_patch(canvas: np.ndarray, patch: np.ndarray, y0: int, x0: int) -> None:
    s = _slices(y0, x0, patch.shape, canvas.shape)
    if s is not None:
        canvas[s[0]] += patch[s[1]]


def _convolve_same(patch: np.ndarray, kern: np.ndarray) -> np.ndarray:
    """``fftconvolve(patch, kern, mode="same")`` for an odd kernel, clipped at 0.

    Tiny kernels (<= 4 non-zero taps, e.g. a sub-pixel shift) are applied
    as a weighted sum of shifted copies; larger ones by FFT (float32).
    """
    nz = np.argwhere(kern > 0)
    if len(nz) <= 4:
        R = kern.shape[0] // 2
        Rx = kern.shape[1] // 2
        H, W = patch.shape
        padded = np.pad(patch, ((R, R), (Rx, Rx)))
        out = np.zeros_like(patch)
        for jy, jx in nz:
            dy, dx = jy - R, jx - Rx
            out += kern[jy, jx] * padded[R - dy : R - dy + H, Rx - dx : Rx - dx + W]
        return out
    conv = signal.fftconvolve(patch.astype(np.float32), kern.astype(np.float32), mode="same")
    return np.maximum(conv, 0.0).astype(np.float64)


def boundary_band(labels: np.ndarray, *, width_px: int = 1) -> np.ndarray:
    """Inner boundary band of every instance: labelled pixels within ``width_px``
    (8-connected) of a pixel with another label (or background)."""
    lab = np.asarray(labels)
    w = int(width_px)
    pad = np.pad(lab, w, mode="edge")
    ny, nx = lab.shape
    diff = np.zeros(lab.shape, dtype=bool)
    for oy in range(-w, w + 1):
        for ox in range(-w, w + 1):
            if oy or ox:
                diff |= pad[w + oy : w + oy + ny, w + ox : w + ox + nx] != lab
    return (lab > 0) & diff


_REQUIRED = ("y", "x", "shape", "size_nm")


def _get(row: dict, key: str, default):
    v = row.get(key, default)
    if v is None:
        return default
    if isinstance(v, float) and np.isnan(v):
        return default
    return v


def render_frame(
    particles: pd.DataFrame,
    config: SimulationConfig | str | None = None,
    *,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    params: dict[str, Any] | None = None,
    background: dict[str, Any] | None = None,
    electrons_per_px: float | None = None,
    target_cnr: float | None = None,
    boundary_width_px: int = 1,
    return_maps: bool = False,
    expected_cnr: bool = False,
) -> dict[str, Any]:
    """Render one frame from an explicit particle table.

    Parameters
    ----------
    particles : pandas.DataFrame
        One row per particle. Required: ``y``, ``x`` (centre, px; pixel centres
        at integers), ``shape`` (prism | rod | cube | sphere | ellipsoid), ``size_nm``.
        Optional: ``orientation_deg`` (0), ``thickness_nm`` (prism plate, 7.5),
        ``diameter_nm`` (rod, 15), ``truncation`` (prism, 0), ``recess_depth``
        (cube, 0.15), ``radius_profile_nm`` (rod: array of radii tip to tip),
        ``lambda_nm`` (85), ``labelled`` (True), ``label`` (1.. in row order),
        ``defocus_radius_px`` (0), ``diffusion_nm2_s`` (0: no motion blur),
        ``path`` ((k, 2) array of (dy, dx) px offsets visited during the
        exposure; overrides the diffusion).
    config : SimulationConfig, preset name, path or None
        Optics and background (its ``particles`` part is not used).
    rng, seed
        Random generator, or a seed for a fresh one.
    params : dict, optional
        Per-image values (see :func:`sample_image_params`); drawn from ``rng``
        when omitted.
    background : dict, optional
        A static background from :func:`make_background`; drawn when omitted.
    electrons_per_px : float, optional
        Electrons per pixel before attenuation; overrides the dose and the
        target CNR (videos fix it after the first frame).
    target_cnr : float, optional
        Overrides the configuration's target CNR.
    boundary_width_px : int
    expected_cnr : bool
        Compute ``cnr_expected`` even without a target CNR (costs a few ms).
    return_maps : bool
        Also return ``expected`` (noise-free final image, float32) and
        ``thickness_nm`` (summed particle thickness, float32).

    Returns
    -------
    dict
        ``image`` (y, x) float32 final image (counts); ``mask`` bool;
        ``labels`` int32; ``boundary`` bool; ``ghost`` bool (footprint of
        unlabelled particles); ``truth`` DataFrame (input rows with ``label``
        and ``area_px``); ``cnr``, ``snr`` measured on ``image``;
        ``cnr_expected`` (from the noise-free image and the noise model;
        NaN unless a target CNR or ``expected_cnr`` was requested);
        ``electrons_per_px``; ``pixel_size_nm``; ``params``.
    """
    cfg = load_simulation_config(config)
    if rng is None:
        rng = np.random.default_rng(seed)
    if not isinstance(particles, pd.DataFrame):
        raise InputError(f"`particles` must be a pandas DataFrame, got {type(particles).__name__}")
    missing = [c for c in _REQUIRED if c not in particles.columns]
    if missing:
        raise InputError(
            f"`particles` lacks columns {missing}; required: {list(_REQUIRED)} "
            f"(see TRUTH_COLUMNS for the optional ones)"
        )
    o = cfg.optics
    if params is None:
        params = sample_image_params(rng, cfg)
    ps = float(params["pixel_size_nm"])
    if background is None:
        background = make_background(cfg, rng=rng, params=params)
    n = o.image_size_px
    canvas = (n, n)
    A = np.zeros(canvas)  # Σ t_i / λ_i
    T = np.zeros(canvas)  # Σ t_i
    mask = np.zeros(canvas, dtype=bool)
    labels = np.zeros(canvas, dtype=np.int32)
    ghost = np.zeros(canvas, dtype=bool)
    ss = o.supersample
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    fringe = float(params.get("fresnel_fringe", 0.0))
    fr_sigma = o.fresnel_sigma_px
    truth = particles.copy().reset_index(drop=True)
    if "labelled" not in truth.columns:
        truth["labelled"] = True
    truth["labelled"] = truth["labelled"].astype(bool)
    if "label" not in truth.columns:
        lab = np.zeros(len(truth), dtype=np.int32)
        lab[truth["labelled"].to_numpy()] = np.arange(1, int(truth["labelled"].sum()) + 1)
        truth["label"] = lab
    records = truth.to_dict("records")
    for row in records:
        cy, cx = float(row["y"]), float(row["x"])
        shape = row["shape"]
        size = float(row["size_nm"])
        rb = bounding_radius_nm(shape, size, float(_get(row, "diameter_nm", 0.0))) / ps
        lam = float(_get(row, "lambda_nm", 85.0))
        path = row.get("path", None)
        if not isinstance(path, np.ndarray) and not isinstance(path, list):
            path = None
        D = float(_get(row, "diffusion_nm2_s", 0.0))
        if path is None and D > 0 and o.exposure_s > 0:
            path = brownian_path(
                cfg.particles.motion_substeps,
                diffusion_nm2_s=D,
                exposure_s=o.exposure_s,
                pixel_size_nm=ps,
                rng=rng,
            )
        kern = None
        if path is not None:
            kern = path_kernel(np.asarray(path, dtype=np.float64))
        dr = float(_get(row, "defocus_radius_px", 0.0))
        if dr > 0:
            dk = disk_kernel(dr)
            kern = dk if kern is None else signal.fftconvolve(kern, dk)
        margin = (kern.shape[0] // 2 if kern is not None else 0) + 1
        y0 = int(np.floor(cy - rb)) - margin
        x0 = int(np.floor(cx - rb)) - margin
        y1 = int(np.ceil(cy + rb)) + margin + 1
        x1 = int(np.ceil(cx + rb)) + margin + 1
        sl = _slices(y0, x0, (y1 - y0, x1 - x0), canvas)
        if sl is None:
            continue
        dy = (np.arange(y0, y1) - cy)[:, None]
        dx = (np.arange(x0, x1) - cx)[None, :]
        t_c = thickness(dy, dx, row, pixel_size_nm=ps)
        if ss > 1:
            t_img = np.zeros_like(t_c)
            for oy in sub:
                for ox in sub:
                    t_img += thickness(dy + oy, dx + ox, row, pixel_size_nm=ps)
            t_img /= ss * ss
        else:
            t_img = t_c
        if kern is not None and kern.size > 1:
            t_img = _convolve_same(t_img, kern)
        cs, psl = sl
        A[cs] += t_img[psl] / lam
        T[cs] += t_img[psl]
        if bool(row["labelled"]):
            inside = t_c[psl] > 0
            mask[cs] |= inside
            labels[cs][inside] = int(row["label"])
        else:
            ghost[cs] |= t_img[psl] > 1e-6
    # the image's optics defocus (disk) and Fresnel edge fringe act on all particles at once
    g_def = float(params.get("defocus_radius_px", 0.0))
    if g_def > 0 or fringe > 0:
        H = _canvas_blur_spectrum(canvas, g_def, fringe, fr_sigma)
        A = sfft.irfft2(sfft.rfft2(A.astype(np.float32)) * H, s=canvas).astype(np.float64)
        if g_def > 0:
            Hd = _canvas_blur_spectrum(canvas, g_def, 0.0, fr_sigma)
            T = sfft.irfft2(sfft.rfft2(T.astype(np.float32)) * Hd, s=canvas).astype(np.float64)
            T = np.maximum(T, 0.0)
    # Beer-Lambert
    liquid = background["liquid_nm"]
    E = A + np.maximum(liquid - T, 0.0) / o.liquid_mfp_nm + 2.0 * o.sin_thickness_nm / o.sin_mfp_nm
    if background.get("speck_exponent") is not None:
        E += background["speck_exponent"]
    m = np.exp(-E) * background["illumination"]
    # detector
    kind = o.mtf
    mtf_kw = dict(
        cutoff_cycles_per_px=params["mtf_cutoff_cycles_per_px"],
        table_freq=o.mtf_table_freq,
        table_values=o.mtf_table_values,
    )
    use_mtf = kind != "none"
    mtf_r = mtf_2d(canvas, kind, dtype="float32", **mtf_kw) if use_mtf else None
    bg = background_region(mask, margin_px=cfg.cnr_margin_px, exclude=ghost)
    read = float(params["read_noise_e"])
    corr_rel = float(params["correlated_noise_rel"])
    gain = o.gain_counts_per_e * float(params.get("drift_factor", 1.0))
    tgt = target_cnr if target_cnr is not None else params.get("target_cnr")
    need = (tgt is not None and electrons_per_px is None) or expected_cnr
    coef = _noise_coefficients(m, mask, bg, kind, mtf_kw, o, read, corr_rel, gain) if need else None
    if electrons_per_px is not None:
        n_e = float(electrons_per_px)
    elif tgt is not None and coef is not None:
        n_e = _solve_dose(coef, float(tgt))
    else:
        n_e = electrons_per_pixel(
            dose_rate_e_per_A2_s=o.dose_rate_e_per_A2_s, pixel_size_nm=ps, exposure_s=o.exposure_s
        )
    # a target CNR at the edge of what the background structure allows asks for an
    # unbounded dose; beyond 1e12 e-/px shot noise is negligible anyway (and numpy's
    # Poisson sampler refuses means near 1e19)
    n_e = min(n_e, MAX_ELECTRONS_PER_PX)
    cnr_expected = _expected_cnr(coef, n_e) if coef is not None else float("nan")
    mu = n_e * m
    img = rng.poisson(mu).astype(np.float64) if o.shot_noise else mu.copy()
    if read > 0:
        img += read * rng.standard_normal(canvas)
    if corr_rel > 0:
        sc = corr_rel * np.sqrt(n_e * float(m.mean()))
        img += sc * _gaussian_field(rng, canvas, o.correlated_noise_length_px)
    if mtf_r is not None:
        img = apply_mtf(img.astype(np.float32), mtf_r).astype(np.float64)
    img *= gain
    if o.quantisation == "uint16":
        img = np.clip(np.rint(img + o.offset_counts), 0, 65535)
    elif o.quantisation == "uint8":
        lo, hi = float(img.min()), float(img.max())
        img = np.rint((img - lo) / max(hi - lo, 1e-12) * 255.0)
    elif o.offset_counts:
        img += o.offset_counts
    image = img.astype(np.float32)
    cnr, snr = _cnr_snr(image, mask, bg)
    areas = np.bincount(
        labels.ravel(), minlength=int(np.max(truth["label"].to_numpy(), initial=0)) + 1
    )
    truth["area_px"] = np.where(truth["labelled"], areas[truth["label"].to_numpy()], 0)
    out: dict[str, Any] = {
        "image": image,
        "mask": mask,
        "labels": labels,
        "boundary": boundary_band(labels, width_px=boundary_width_px),
        "ghost": ghost,
        "truth": truth,
        "cnr": cnr,
        "snr": snr,
        "cnr_expected": cnr_expected,
        "electrons_per_px": n_e,
        "pixel_size_nm": ps,
        "params": params,
    }
    if return_maps:
        expected = (
            apply_mtf(n_e * m, mtf_2d(canvas, kind, **mtf_kw)) if use_mtf else n_e * m
        ) * gain + (o.offset_counts if o.quantisation != "uint8" else 0.0)
        out["expected"] = expected.astype(np.float32)
        out["thickness_nm"] = T.astype(np.float32)
    return out


def _cnr_snr(image: np.ndarray, mask: np.ndarray, bg: np.ndarray) -> tuple[float, float]:
    """Measured CNR and SNR on the final image (as measure_cnr / measure_snr)."""
    if not bg.any():
        return float("nan"), float("nan")
    b = image[bg].astype(np.float64)
    mb, sd = float(b.mean()), float(b.std())
    snr = mb / sd if sd > 0 else float("inf")
    if not mask.any():
        return float("nan"), snr
    c = mb - float(image[mask].astype(np.float64).mean())
    cnr = c / sd if sd > 0 else float(np.copysign(np.inf, c) if c else np.nan)
    return cnr, snr


def _noise_coefficients(m, mask, bg, kind, mtf_kw, o, read, corr_rel, gain):
    """Terms of the expected CNR as a function of the electron count N.

    ``CNR(N) = N dm / sqrt(N^2 S2 + N a + b)``: ``dm`` the contrast and ``S2``
    the background variance of the noise-free image after the MTF (per
    electron), ``a`` the mean background noise variance per electron (Poisson
    through the MTF: ``(h^2) * m`` exactly, plus correlated noise), ``b`` the
    N-independent variance (read noise, uint16 rounding). In electrons.
    """
    if not mask.any() or not bg.any():
        return None
    shape = m.shape
    if kind != "none":
        mtf_r = mtf_2d(shape, kind, dtype="float32", **mtf_kw)
        H2, k2 = mtf_squared_kernel_rfft(shape, kind, **mtf_kw)
        M = sfft.rfft2(m.astype(np.float32))
        mb = sfft.irfft2(M * mtf_r, s=shape)
        vp = sfft.irfft2(M * H2, s=shape)
    else:
        mb = m
        vp = m
        k2 = 1.0
        mtf_r = None
    dm = float(mb[bg].mean() - mb[mask].mean())
    S2 = float(mb[bg].var())
    a = float(vp[bg].mean())
    if corr_rel > 0:
        ny, nx = shape
        fy = np.fft.fftfreq(ny)[:, None]
        fx = np.fft.rfftfreq(nx)[None, :]
        K2 = np.exp(-4.0 * np.pi**2 * o.correlated_noise_length_px**2 * (fy * fy + fx * fx))
        # means over the full grid from the half (rfft) grid: inner columns count twice
        wcol = np.full(K2.shape[1], 2.0)
        wcol[0] = 1.0
        if nx % 2 == 0:
            wcol[-1] = 1.0
        m2 = 1.0 if mtf_r is None else mtf_r.astype(np.float64) ** 2
        fc = float((K2 * m2 * wcol).sum() / (K2 * wcol).sum())
        a += corr_rel**2 * float(m.mean()) * fc
    b = read * read * k2
    if o.quantisation == "uint16":
        b += 1.0 / 12.0 / gain**2
    return dm, S2, a, b


def _expected_cnr(coef, n_e: float) -> float:
    dm, S2, a, b = coef
    return float(n_e * dm / np.sqrt(n_e * n_e * S2 + n_e * a + b))


def _solve_dose(coef, target: float) -> float:
    """Electron count N with expected CNR(N) = target (closest attainable if not)."""
    dm, S2, a, b = coef
    if dm <= 0:
        logger.warning("no dark contrast between particles and background; target CNR ignored")
        return 1e4
    cmax = dm / np.sqrt(S2) if S2 > 0 else np.inf
    c = target
    if c >= 0.99 * cmax:
        logger.info(
            "target CNR %.3g not attainable: the background structure alone limits it to %.3g; "
            "using %.3g",
            target,
            cmax,
            0.95 * cmax,
        )
        c = 0.95 * cmax
    qa = dm * dm - c * c * S2
    qb = -c * c * a
    qc = -c * c * b
    return float((-qb + np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa))


def simulate_one(
    index: int, config: SimulationConfig | str | None = None, *, seed: int = 0
) -> dict[str, Any]:
    """Simulate image ``index`` of a training set: the pure numpy kernel.

    Deterministic: ``np.random.default_rng([seed, index])`` drives every draw,
    so a seed and an index fix the bytes.

    Returns
    -------
    dict
        As :func:`render_frame`: ``image`` (y, x) float32, ``mask`` bool,
        ``labels`` int32, ``boundary`` bool, ``truth`` DataFrame (with
        ``index``), ``cnr``, ``snr``, ``cnr_expected``, ``electrons_per_px``,
        ``pixel_size_nm``, ...

    Examples
    --------
    >>> out = simulate_one(0, "spheres", seed=1)
    >>> out["image"].dtype, out["mask"].shape
    (dtype('float32'), (512, 512))
    """
    cfg = load_simulation_config(config)
    if int(index) < 0 or int(seed) < 0:
        raise InputError(f"`index` and `seed` must be >= 0, got {index} and {seed}")
    rng = np.random.default_rng([int(seed), int(index)])
    params = sample_image_params(rng, cfg)
    particles = sample_particles(rng, cfg, params, index=int(index))
    return render_frame(particles, cfg, rng=rng, params=params)
