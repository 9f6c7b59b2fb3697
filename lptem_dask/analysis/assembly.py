"""Chaining self-assembly kinetics: contact graphs, chain statistics and kinetic laws.

Per frame, particles in face-to-face contact (centre distance, gap, relative
orientation and bond direction criteria) form a contact graph whose connected
components are the chains. From the chain sizes of every frame come the
chain-length distribution, the number-average degree of polymerisation
``X_n = (particles) / (clusters)`` and the monomer decay.

Kinetic laws (rate constants per field of view, see
:mod:`lptem_dask.simulate.assembly`) are fitted by maximum likelihood of the
observed frame-to-frame changes, treating assembly as the Markov jump process
it is. Between frames ``t`` and ``t + 1`` the number of bonding events is
``n = N_t - N_{t+1}`` (clusters lost) and the monomers consumed
``m = M_t - M_{t+1}``; with ``j`` monomer-monomer, ``m - 2j`` monomer-chain
and ``n - m + j`` chain-chain events, each class Poisson with mean
``k * dt * h_c`` (``h_c`` the law's class propensity from the size
distribution, trapezoid average of both frames)::

    P(n, m) = sum_j Pois(j; k h_mm dt) Pois(m - 2j; k h_mc dt) Pois(n - m + j; k h_cc dt)

Because the three counts add up to ``n``, the log-likelihood is
``n_tot log k - k H_tot + C_law`` with ``H_tot = sum_t dt (h_mm + h_mc + h_cc)``:
the MLE is ``k = n_tot / H_tot`` for every law, its 95% interval comes from the
profile likelihood (``2 (l_max - l(k)) <= 3.84``) and the law-specific constant
``C_law`` (how the events split into classes, and how the event rate follows
the state) decides between laws by AIC.

Counts from segmented videos carry detection errors, so by default (see
:func:`fit_law`) ``N`` and ``M`` are taken as running minima over frames
(chaining is irreversible: a count that rises again is an error, and undoing it
is no event), and a fraction ``e`` of the events is allowed to fall in any class
(``h_c -> (1 - e) h_c + e h / 3``, which leaves ``H_tot`` and ``k``'s likelihood
as they are); ``e`` is fitted by maximum likelihood and counted as a second
parameter in every law's AIC. On exact counts both change nothing (``e = 0``).

Propensities (``M`` monomers, ``N_c`` chains, ``N = M + N_c``,
``S = sum over chains of s^-nu``):

=============  ======================  ====================  ======================
law            h_mm                    h_mc                  h_cc
=============  ======================  ====================  ======================
first_order    M (M-1) / (2 (N-1))     M N_c / (N-1)         0
second_order   M (M-1) / 2             M N_c                 N_c (N_c-1) / 2
smoluchowski   M (M-1) / 2             M (N_c + S) / 2       (N_c - 1) S / 2
=============  ======================  ====================  ======================

Mean-field curves (figures) integrate the corresponding Smoluchowski rate
equations for the counts of each chain length.

References
----------
Yao, L. et al. ACS Cent. Sci. 6, 1421 (2020).
Gillespie, D. T. J. Phys. Chem. 81, 2340 (1977).
Burnham, K. P. & Anderson, D. R. Model Selection and Multimodel Inference (2002), AIC.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.integrate import solve_ivp
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.special import gammaln, logsumexp

from ..errors import InputError, StoreError
from ..store import RESULTS, atomic_path, check_output_path, table_path

__all__ = [
    "LAWS",
    "contact_pairs",
    "chains_from_regions",
    "chain_statistics",
    "size_distribution",
    "propensities",
    "fit_law",
    "fit_kinetics",
    "mean_field",
    "plot_assembly",
    "run_assembly",
]

logger = logging.getLogger(__name__)

LAWS: tuple[str, ...] = ("first_order", "second_order", "smoluchowski")
_CHI2_95 = 3.841458820694124


# ------------------------------------------------------------------ contact graph
def _half_extent(a: np.ndarray, b: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Centre-to-boundary distance of a rectangle (half sizes a along, b across) at angle phi."""
    c, s = np.abs(np.cos(phi)), np.abs(np.sin(phi))
    with np.errstate(divide="ignore"):
        return np.minimum(np.where(c > 0, a / c, np.inf), np.where(s > 0, b / s, np.inf))


def _fold(angle_deg: np.ndarray, period: float) -> np.ndarray:
    """Distance (deg) of an angle to the nearest multiple of ``period``."""
    r = np.mod(angle_deg, period)
    return np.minimum(r, period - r)


def contact_pairs(
    frame: pd.DataFrame,
    *,
    shape: str = "cube",
    size_nm: float,
    max_gap_nm: float,
    angle_tol_deg: float = 15.0,
    n_members: np.ndarray | None = None,
) -> np.ndarray:
    """Face-to-face contacts between the particles of one frame.

    Each region is a rectangle (cubes) of ``n`` particles along its axis
    (``n`` from ``n_members``, 1 by default) or a disk (spheres). Two regions
    are in contact when the gap between their outlines along the line of
    centres is at most ``max_gap_nm``; for cubes, also when their orientations
    agree modulo 90 deg within ``angle_tol_deg`` and the line of centres is
    within ``angle_tol_deg`` of a face normal (face to face, not corner to
    corner).

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows of one frame of a regions table: ``y_nm``, ``x_nm`` and for cubes
        ``cube_orientation_deg`` (direction of a vertex, as
        :func:`lptem_dask.measure.measure_regions` gives it) or else
        ``orientation_deg`` (a face normal); regions of several particles use
        ``orientation_deg`` (their long axis) and, when present,
        ``major_axis_length_nm`` (their length, gaps of their bonds included).
    shape : {"cube", "sphere"}
    size_nm : float
        Cube edge or sphere diameter (nm).
    max_gap_nm : float
    angle_tol_deg : float
    n_members : ndarray of int, optional
        Particles in each region (regions holding several touching particles).

    Returns
    -------
    ndarray of int64, shape (k, 2)
        Row indices (positions in ``frame``) of each contact, i < j.
    """
    n = len(frame)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    P = frame[["x_nm", "y_nm"]].to_numpy(np.float64)
    P = P * np.array([1.0, -1.0])  # screen axes: y up
    nm = np.ones(n) if n_members is None else np.asarray(n_members, np.float64)
    h = 0.5 * size_nm
    # half length of a region of several unresolved particles along its axis: from
    # its own second moments where measured (a uniform rectangle of length L has
    # major_axis_length = 4 L / sqrt(12)), which includes the gaps of its bonds;
    # else n half sizes
    half_len = h * np.maximum(nm, 1.0)
    if "major_axis_length_nm" in frame.columns:
        measured = frame["major_axis_length_nm"].to_numpy(np.float64) * np.sqrt(3.0) / 4.0
        half_len = np.where((nm > 1.5) & np.isfinite(measured), measured, half_len)
    reach = np.maximum(0.5 * size_nm * np.sqrt(2.0) * np.maximum(nm, 1.0), half_len + h)
    tree = cKDTree(P)
    pairs = tree.query_pairs(2 * reach.max() + max_gap_nm, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    d = P[j] - P[i]
    dist = np.hypot(d[:, 0], d[:, 1])
    bond = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    if shape == "sphere":
        # a region of n unresolved spheres: a row of half length n d / 2 along its axis
        ax = (
            np.where(nm > 1.5, frame["orientation_deg"].to_numpy(np.float64), 0.0)
            if ("orientation_deg" in frame.columns)
            else np.zeros(n)
        )
        hi = np.full(len(i), h)
        ri = np.where(nm[i] > 1.5, _half_extent(h * nm[i], hi, np.radians(bond - ax[i])), h)
        rj = np.where(nm[j] > 1.5, _half_extent(h * nm[j], hi, np.radians(bond - ax[j])), h)
        keep = dist - ri - rj <= max_gap_nm
        return pairs[keep].astype(np.int64)
    if "cube_orientation_deg" in frame.columns:
        # measure gives the direction of a vertex; the face normal is 45 deg from it
        th = frame["cube_orientation_deg"].to_numpy(np.float64) - 45.0
    else:
        th = frame["orientation_deg"].to_numpy(np.float64)
    th = np.where(np.isfinite(th), th, 0.0)
    multi = nm > 1.5
    if "orientation_deg" in frame.columns:
        th = np.where(multi, frame["orientation_deg"].to_numpy(np.float64), th)
    phi_i = np.radians(bond - th[i])
    phi_j = np.radians(bond - th[j])
    ri = _half_extent(half_len[i], np.full(len(i), h), phi_i)
    rj = _half_extent(half_len[j], np.full(len(j), h), phi_j)
    gap = dist - ri - rj
    rel = _fold(th[i] - th[j], 90.0)
    face = np.maximum(_fold(bond - th[i], 90.0), _fold(bond - th[j], 90.0))
    keep = (gap <= max_gap_nm) & (gap >= -h) & (rel <= angle_tol_deg) & (face <= angle_tol_deg)
    return pairs[keep].astype(np.int64)


def chains_from_regions(
    regions: pd.DataFrame,
    *,
    shape: str = "cube",
    size_nm: float | None = None,
    max_gap_nm: float | None = None,
    angle_tol_deg: float = 15.0,
    monomer_area_nm2: float | None = None,
    min_particle_fraction: float = 0.5,
    min_relative_contrast: float = 0.5,
) -> pd.DataFrame:
    """Chains as connected components of the per-frame contact graph.

    Regions that hold several touching particles (segmentation that did not
    separate them) count ``round(area / monomer_area)`` particles (a region
    that also fills the gaps between them may count one particle too many per
    four or five bonds; the kinetic fits use only the numbers of clusters and
    monomers, which this does not change). Regions smaller than
    ``min_particle_fraction`` of a monomer hold no particle (a fragment cut off
    a particle's outline, a speck of noise) and are left out: counted as
    monomers they would add false monomers that never react. So are regions
    whose local contrast (the regions table's ``contrast``, when it has one) is
    below ``min_relative_contrast`` of the particles' contrast: particles of one
    material and thickness have about the same mass-thickness contrast, a dark
    patch of the liquid background much less.

    Parameters
    ----------
    regions : pandas.DataFrame
        A regions table (``frame``, ``label``, ``y_nm``, ``x_nm``, ``area_nm2``,
        ``orientation_deg`` and, for cubes, ``cube_orientation_deg``).
    shape : {"cube", "sphere"}
    size_nm : float, optional
        Particle size (nm); default ``sqrt(monomer_area)`` (cubes) or the
        equivalent diameter (spheres).
    max_gap_nm : float, optional
        Largest face-to-face gap of a bond (nm); default ``0.25 * size_nm``.
    angle_tol_deg : float
    monomer_area_nm2 : float, optional
        Area of one particle; default the median area of the first frame's
        regions (after the contrast filter, fragments left out).
    min_particle_fraction : float
        Regions with a smaller area (in monomer areas) are left out; 0 keeps
        every region (each then counts at least one particle).
    min_relative_contrast : float
        Regions whose ``|contrast|`` is below this fraction of the 90th
        percentile of ``|contrast|`` over all regions are left out; 0 keeps
        them all. Regions without a contrast (NaN, or no such column) are kept.

    Returns
    -------
    pandas.DataFrame
        One row per region that holds a particle: ``frame``, ``time_s``,
        ``label``, ``n_members``, ``chain`` (component id, unique within the
        frame).
    """
    need = {"frame", "label", "y_nm", "x_nm", "area_nm2"}
    missing = need - set(regions.columns)
    if missing:
        raise InputError(
            f"`regions` lacks columns {sorted(missing)}; pass a table from lp.measure_regions"
        )
    if shape not in ("cube", "sphere"):
        raise InputError(f"`shape` must be 'cube' or 'sphere', got {shape!r}")
    if not 0 <= min_particle_fraction < 1:
        raise InputError(
            f"`min_particle_fraction` must be in [0, 1), got {min_particle_fraction!r}"
        )
    if not 0 <= min_relative_contrast < 1:
        raise InputError(
            f"`min_relative_contrast` must be in [0, 1), got {min_relative_contrast!r}"
        )
    regions = regions.sort_values(["frame", "label"]).reset_index(drop=True)
    if "contrast" in regions.columns and min_relative_contrast > 0 and len(regions):
        c = np.abs(regions["contrast"].to_numpy(np.float64))
        if np.isfinite(c).any():
            # the particles are the strongest-contrast regions: the reference is the
            # 90th percentile (the median would fall among the false objects of a
            # frame that has more of them than particles)
            ref = float(np.nanpercentile(c, 90))
            low = np.isfinite(c) & (c < min_relative_contrast * ref)
            regions = regions[~low].reset_index(drop=True)
    if monomer_area_nm2 is None and len(regions):
        # median area in the first frame, fragments (below min_particle_fraction of
        # a first estimate) left out of it
        a0 = regions.loc[regions["frame"] == regions["frame"].min(), "area_nm2"].to_numpy()
        est = float(np.median(a0))
        whole = a0[a0 >= min_particle_fraction * est]
        monomer_area_nm2 = float(np.median(whole)) if whole.size else est
    if len(regions) and monomer_area_nm2 is not None:
        regions = regions[
            regions["area_nm2"].to_numpy() >= min_particle_fraction * monomer_area_nm2
        ].reset_index(drop=True)
    if len(regions) == 0:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=t)
                for c, t in [
                    ("frame", "int64"),
                    ("time_s", "float64"),
                    ("label", "int32"),
                    ("n_members", "int64"),
                    ("chain", "int64"),
                ]
            }
        )
    assert monomer_area_nm2 is not None
    if size_nm is None:
        size_nm = (
            float(np.sqrt(monomer_area_nm2))
            if shape == "cube"
            else float(np.sqrt(4 * monomer_area_nm2 / np.pi))
        )
    if max_gap_nm is None:
        max_gap_nm = 0.25 * size_nm
    nmem = np.maximum(np.rint(regions["area_nm2"].to_numpy() / monomer_area_nm2), 1).astype(
        np.int64
    )
    chain = np.empty(len(regions), np.int64)
    for _, idx in regions.groupby("frame").indices.items():
        fr = regions.iloc[idx]
        nm = nmem[idx]
        pairs = contact_pairs(
            fr,
            shape=shape,
            size_nm=size_nm,
            max_gap_nm=max_gap_nm,
            angle_tol_deg=angle_tol_deg,
            n_members=nm if (nm > 1).any() else None,
        )
        k = len(idx)
        g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(k, k))
        _, comp = connected_components(g, directed=False)
        chain[idx] = comp
    time = regions["time_s"] if "time_s" in regions.columns else regions["frame"].astype(float)
    return pd.DataFrame(
        {
            "frame": regions["frame"].to_numpy(np.int64),
            "time_s": time.to_numpy(np.float64),
            "label": regions["label"].to_numpy(np.int32),
            "n_members": nmem,
            "chain": chain,
        }
    )


def chain_statistics(membership: pd.DataFrame) -> pd.DataFrame:
    """Chains per frame from region membership.

    Parameters
    ----------
    membership : pandas.DataFrame
        From :func:`chains_from_regions` (``frame``, ``time_s``, ``chain``,
        ``n_members``), or a truth table with ``frame``, ``time_s``, ``chain``
        (one row per particle).

    Returns
    -------
    pandas.DataFrame
        One row per chain per frame: ``frame``, ``time_s``, ``chain``, ``size``
        (particles in the chain).
    """
    m = membership
    if "n_members" not in m.columns:
        m = m.assign(n_members=1)
    g = m.groupby(["frame", "chain"], sort=True)
    out = g.agg(time_s=("time_s", "first"), size=("n_members", "sum")).reset_index()
    return out[["frame", "time_s", "chain", "size"]]


def size_distribution(chains: pd.DataFrame) -> pd.DataFrame:
    """Per-frame summary: ``n_particles``, ``n_clusters``, ``n_monomers``, ``monomer_fraction``,
    ``xn`` (number-average degree of polymerisation) and ``xw`` (weight average)."""
    g = chains.groupby("frame", sort=True)
    s = chains["size"].astype(np.float64)
    out = pd.DataFrame(
        {
            "time_s": g["time_s"].first(),
            "n_particles": g["size"].sum(),
            "n_clusters": g.size(),
            "n_monomers": (chains["size"] == 1).groupby(chains["frame"]).sum(),
            "sum_s2": (s * s).groupby(chains["frame"]).sum(),
        }
    )
    out["monomer_fraction"] = out["n_monomers"] / out["n_particles"]
    out["xn"] = out["n_particles"] / out["n_clusters"]
    out["xw"] = out["sum_s2"] / out["n_particles"]
    return out.drop(columns="sum_s2").reset_index()


# ----------------------------------------------------------------------- kinetics
def propensities(sizes: np.ndarray, law: str, *, kernel_exponent: float = 1.0) -> np.ndarray:
    """Class propensities (h_mm, h_mc, h_cc) of one frame (rate = k * h; see module doc).

    Parameters
    ----------
    sizes : ndarray of int, shape (clusters,)
        Chain sizes in one frame.
    law : {"first_order", "second_order", "smoluchowski"}
    kernel_exponent : float
        ``nu`` of the Smoluchowski kernel.

    Returns
    -------
    ndarray of float64, shape (3,)
    """
    s = np.asarray(sizes, np.float64)
    M = float(np.sum(s == 1))
    N = float(s.size)
    Nc = N - M
    if N < 2:
        return np.zeros(3)
    if law == "first_order":
        return np.array([M * (M - 1) / (2 * (N - 1)), M * Nc / (N - 1), 0.0])
    if law == "second_order":
        return np.array([M * (M - 1) / 2, M * Nc, Nc * (Nc - 1) / 2])
    if law == "smoluchowski":
        S = float(np.sum(s[s > 1] ** (-kernel_exponent)))
        return np.array([M * (M - 1) / 2, M * (Nc + S) / 2, max(Nc - 1, 0.0) * S / 2])
    raise InputError(f"`law` must be one of {LAWS}, got {law!r}")


def _intervals(chains: pd.DataFrame):
    """Per-frame sizes and times, sorted by frame."""
    frames = np.sort(chains["frame"].unique())
    by = chains.groupby("frame")
    sizes = {f: by.get_group(f)["size"].to_numpy() for f in frames}
    times = by["time_s"].first().reindex(frames).to_numpy(np.float64)
    return frames, sizes, times


def _class_logterm(n: int, m: int, H: np.ndarray, floor: float, error_rate: float = 0.0) -> float:
    """log sum_j prod_c H_c^x_c / x_c!  (k-free part of the interval log-likelihood).

    With ``error_rate`` e, the class propensities are ``(1 - e) H_c + e H / 3``:
    a fraction e of the detected events fall in any class with equal chance (a
    chain split for a frame that joins again, a spurious object), which keeps
    ``sum_c H_c`` and so the rate constant's likelihood unchanged.
    """
    j = np.arange(max(0, m - n), m // 2 + 1)
    if j.size == 0:
        return -np.inf
    x = np.stack([j, m - 2 * j, n - m + j]).astype(np.float64)
    tot = max(float(H.sum()), 1e-300)
    H = (1.0 - error_rate) * H + error_rate * tot / 3.0
    Hf = np.maximum(H, floor * tot)
    logH = np.log(Hf)[:, None]
    terms = np.sum(x * logH - gammaln(x + 1), axis=0)
    return float(logsumexp(terms))


def fit_law(
    chains: pd.DataFrame,
    law: str,
    *,
    kernel_exponent: float = 1.0,
    floor: float = 1e-6,
    irreversible: bool = True,
    error_rate: float | None = None,
) -> dict[str, Any]:
    """Maximum-likelihood fit of one kinetic law to per-frame chain sizes.

    Parameters
    ----------
    chains : pandas.DataFrame
        One row per chain per frame: ``frame``, ``time_s``, ``size``.
    law : {"first_order", "second_order", "smoluchowski"}
    kernel_exponent : float
        ``nu`` of the Smoluchowski kernel ``k (i^-nu + j^-nu) / 2``.
    floor : float
        Relative floor of a class propensity, so that a single misdetected
        event does not make a law impossible.
    irreversible : bool
        Chaining is irreversible, so the numbers of clusters and of monomers
        can only decrease: take them as running minima over frames. A chain
        split for one frame, or a spurious object, then makes no event when it
        is undone (on exact counts this changes nothing).
    error_rate : float, optional
        Fraction of detected events assigned to a random class (segmentation
        errors; see ``_class_logterm``). ``None`` (default): fitted by maximum
        likelihood in [0, 0.5] and counted as a second parameter in the AIC (of
        every law alike). ``0`` gives the exact-counts likelihood.

    Returns
    -------
    dict
        ``law``, ``k_per_s`` (1/s per monomer for first_order, 1/s per pair
        otherwise), ``ci95_per_s`` (profile likelihood), ``loglik``, ``aic``,
        ``n_events``, ``exposure_s`` (H_tot), ``n_intervals``, ``dropped_intervals``
        (intervals with splits or impossible counts, left out).
    """
    if law not in LAWS:
        raise InputError(f"`law` must be one of {LAWS}, got {law!r}")
    frames, sizes, times = _intervals(chains)
    if len(frames) < 2:
        raise InputError("`chains` needs at least two frames to fit kinetics")
    hs = [propensities(sizes[f], law, kernel_exponent=kernel_exponent) for f in frames]
    counts = [(len(sizes[f]), int(np.sum(sizes[f] == 1))) for f in frames]
    if irreversible:
        # Chaining is irreversible: clusters and monomers only ever decrease. A
        # count that rises again is a detection error (a chain split for a frame, a
        # spurious object); running minima make such a flicker and its undoing no
        # event at all, instead of a split (dropped) plus a spurious merge.
        n_run = np.minimum.accumulate([c[0] for c in counts])
        m_run = np.minimum.accumulate([c[1] for c in counts])
        counts = [(int(a), int(b)) for a, b in zip(n_run, m_run, strict=True)]
    n_tot = 0
    H_tot = 0.0
    impossible = False
    dropped = 0
    used = 0
    events: list[tuple[int, int, np.ndarray]] = []
    for t in range(len(frames) - 1):
        dt = times[t + 1] - times[t]
        n = counts[t][0] - counts[t + 1][0]
        m = counts[t][1] - counts[t + 1][1]
        if dt <= 0 or n < 0 or m < 0 or m > 2 * n:
            dropped += 1
            continue
        H = 0.5 * dt * (hs[t] + hs[t + 1])
        if n > 0 and H.sum() <= 0:
            impossible = True  # events where the law allows none
            continue
        if n > 0:
            events.append((n, m, H))
        n_tot += n
        H_tot += float(H.sum())
        used += 1

    def class_ll(e: float) -> float:
        return float(sum(_class_logterm(n, m, H, floor, e) for n, m, H in events))

    fitted_error = error_rate is None
    if error_rate is None:
        opt = optimize.minimize_scalar(
            lambda e: -class_ll(e), bounds=(0.0, 0.5), method="bounded", options={"xatol": 1e-4}
        )
        best = -float(opt.fun)
        at_zero = class_ll(0.0)  # the bounded search never evaluates the bound itself
        error_rate, C = (0.0, at_zero) if at_zero >= best else (float(opt.x), best)
    else:
        C = class_ll(float(error_rate))
    if impossible:
        C = -np.inf
    n_par = 2 if fitted_error else 1
    if H_tot <= 0 or n_tot == 0:
        return {
            "law": law,
            "k_per_s": float("nan"),
            "ci95_per_s": [float("nan"), float("nan")],
            "loglik": float("nan") if np.isfinite(C) else -float("inf"),
            "aic": float("inf"),
            "n_events": int(n_tot),
            "exposure_s": H_tot,
            "n_intervals": used,
            "dropped_intervals": dropped,
            "error_rate": float(error_rate),
        }
    k = n_tot / H_tot

    def ll(kk: float) -> float:
        return n_tot * np.log(kk) - kk * H_tot

    lmax = ll(k)

    def g(logk: float) -> float:
        return 2 * (lmax - ll(np.exp(logk))) - _CHI2_95

    lo = optimize.brentq(g, np.log(k) - 10, np.log(k))
    hi = optimize.brentq(g, np.log(k), np.log(k) + 10)
    loglik = lmax + C
    return {
        "law": law,
        "k_per_s": float(k),
        "ci95_per_s": [float(np.exp(lo)), float(np.exp(hi))],
        "loglik": float(loglik),
        "aic": float(2 * n_par - 2 * loglik),
        "error_rate": float(error_rate),
        "n_events": int(n_tot),
        "exposure_s": float(H_tot),
        "n_intervals": used,
        "dropped_intervals": dropped,
        "kernel_exponent": float(kernel_exponent) if law == "smoluchowski" else None,
    }


def fit_kinetics(
    chains: pd.DataFrame,
    *,
    laws: tuple[str, ...] = LAWS,
    kernel_exponent: float = 1.0,
) -> dict[str, Any]:
    """Fit every candidate law and select one by AIC.

    Parameters
    ----------
    chains : pandas.DataFrame
        One row per chain per frame (``frame``, ``time_s``, ``size``), e.g. from
        :func:`chain_statistics` or ``AssemblyTruth.chains()``.
    laws : tuple of str
    kernel_exponent : float
        ``nu`` of the Smoluchowski kernel.

    Returns
    -------
    dict
        ``fits`` (law -> :func:`fit_law` result), ``best`` (law of lowest AIC),
        ``delta_aic`` and ``akaike_weights`` (law -> value).

    Examples
    --------
    >>> from lptem_dask.simulate.assembly import AssemblyConfig, simulate_assembly
    >>> truth = simulate_assembly(AssemblyConfig(law="first_order", n_monomers=300), seed=0)
    >>> fit_kinetics(truth.chains())["best"]
    'first_order'
    """
    fits = {law: fit_law(chains, law, kernel_exponent=kernel_exponent) for law in laws}
    aic = {law: f["aic"] for law, f in fits.items()}
    best = min(aic, key=lambda k: aic[k])
    d = {law: float(a - aic[best]) for law, a in aic.items()}
    w = {law: float(np.exp(-0.5 * v)) for law, v in d.items()}
    tot = sum(w.values())
    return {
        "fits": fits,
        "best": best,
        "delta_aic": d,
        "akaike_weights": {law: v / tot for law, v in w.items()},
    }


def mean_field(
    sizes0: np.ndarray,
    times_s: np.ndarray,
    law: str,
    *,
    k_per_s: float,
    kernel_exponent: float = 1.0,
    max_size: int | None = None,
) -> np.ndarray:
    """Mean-field rate equations for the counts of each chain length.

    ``dc_s/dt = 1/2 sum_{i+j=s} K_ij c_i (c_j - d_ij) - c_s sum_j K_sj (c_j - d_sj)``
    (``d`` Kronecker's: a cluster does not pair with itself) with the pair
    rates of ``law`` (first_order: ``k / (N - 1)`` for pairs holding a
    monomer, 0 otherwise, so that ``dM/dt = -k M`` exactly).

    Parameters
    ----------
    sizes0 : ndarray of int
        Chain sizes at ``times_s[0]``.
    times_s : ndarray of float, shape (t,)
    law : str
    k_per_s : float
    kernel_exponent : float
    max_size : int, optional
        Largest chain length tracked (default: total particles).

    Returns
    -------
    ndarray of float64, shape (t, max_size)
        Expected number of chains of length ``s`` (column ``s - 1``).
    """
    s0 = np.asarray(sizes0, np.int64)
    total = int(s0.sum())
    S = int(max_size or total)
    c0 = np.bincount(s0, minlength=S + 1)[1 : S + 1].astype(np.float64)
    sz = np.arange(1, S + 1, dtype=np.float64)
    if law == "smoluchowski":
        w = sz ** (-kernel_exponent)
        K = 0.5 * k_per_s * (w[:, None] + w[None, :])
    elif law == "second_order":
        K = np.full((S, S), k_per_s)
    elif law == "first_order":
        K = np.zeros((S, S))
        K[0, :] = K[:, 0] = k_per_s
    else:
        raise InputError(f"`law` must be one of {LAWS}, got {law!r}")

    def rhs(_t, c):
        c = np.maximum(c, 0.0)
        Kc = K
        if law == "first_order":
            Kc = K / max(c.sum() - 1.0, 1e-9)
        A = Kc * np.outer(c, c)
        A[np.diag_indices(S)] -= np.diag(Kc) * c  # same-size pairs: c (c - 1)
        gain = np.zeros(S)
        # gain_s = 1/2 sum_{i+j=s} A_ij  (anti-diagonal sums)
        flipped = A[:, ::-1]
        for s in range(2, S + 1):
            off = S + 1 - s  # diagonal of the flipped matrix holding sizes i + j = s
            gain[s - 1] = 0.5 * np.trace(flipped, offset=off) if off < S else 0.0
        loss = A.sum(axis=1)
        return gain - loss

    sol = solve_ivp(rhs, (times_s[0], times_s[-1]), c0, t_eval=times_s, rtol=1e-6, atol=1e-6)
    return sol.y.T


# ------------------------------------------------------------------------ figures
def plot_assembly(stats: pd.DataFrame, fit: dict[str, Any], chains: pd.DataFrame, path=None):
    """Monomer decay, X_n(t) with the mean-field curves of every fitted law, and the
    chain-length distribution at four times. Returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    frames, sizes, times = _intervals(chains)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    n_p = stats["n_particles"].to_numpy(np.float64)
    ax[0].plot(stats["time_s"], stats["n_monomers"] / n_p, "k.", label="data")
    ax[1].plot(stats["time_s"], stats["xn"], "k.", label="data")
    S = int(n_p.max())
    for law, f in fit["fits"].items():
        if not np.isfinite(f["k_per_s"]):
            continue
        c = mean_field(
            sizes[frames[0]],
            times,
            law,
            k_per_s=f["k_per_s"],
            kernel_exponent=f.get("kernel_exponent") or 1.0,
            max_size=min(S, 200),
        )
        N = c.sum(axis=1)
        lab = f"{law} k={f['k_per_s']:.3g} (dAIC={fit['delta_aic'][law]:.1f})"
        ax[0].plot(times, c[:, 0] / n_p[0], label=lab)
        ax[1].plot(times, n_p[0] / np.maximum(N, 1e-9), label=lab)
    ax[0].set(xlabel="time (s)", ylabel="monomer fraction", yscale="log")
    ax[1].set(xlabel="time (s)", ylabel="X_n")
    ax[0].legend(fontsize=7)
    for q in np.linspace(0, len(frames) - 1, 4).astype(int):
        s = sizes[frames[q]]
        ax[2].hist(
            s,
            bins=np.arange(1, max(s.max(), 2) + 2) - 0.5,
            histtype="step",
            label=f"t={times[q]:.3g} s",
        )
    ax[2].set(xlabel="chain length", ylabel="chains", yscale="log")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# ------------------------------------------------------------------------- store
def _read_parquet(path: Path) -> pd.DataFrame:
    from ..measure import read_table_pandas

    return read_table_pandas(path)


def run_assembly(
    store: str | os.PathLike,
    *,
    shape: str = "cube",
    size_nm: float | None = None,
    max_gap_nm: float | None = None,
    angle_tol_deg: float = 15.0,
    kernel_exponent: float = 1.0,
    table: str = "regions",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Assembly analysis of one store: tables/regions -> results/assembly/.

    Writes ``results/assembly/assembly.json`` (fits, AIC, per-frame statistics),
    ``chains.csv`` (chain of every region), ``stats.csv`` and ``assembly.png``.

    Parameters
    ----------
    store : path
        A store with ``tables/{table}.parquet`` (measured with ``shape="cube"``
        for cube orientations).
    shape, size_nm, max_gap_nm, angle_tol_deg
        Contact criteria, see :func:`chains_from_regions`.
    kernel_exponent : float
        ``nu`` of the Smoluchowski kernel.
    table : str
    overwrite : bool

    Returns
    -------
    dict
        The JSON written.
    """
    store = Path(store)
    src = table_path(store, table)
    if not src.exists():
        raise StoreError(
            f"{str(src)!r} does not exist; measure the store first (`lptem measure {store}`)"
        )
    out_dir = Path(store) / RESULTS / "assembly"
    check_output_path(out_dir, overwrite=overwrite, what="assembly results")
    regions = _read_parquet(src)
    memb = chains_from_regions(
        regions, shape=shape, size_nm=size_nm, max_gap_nm=max_gap_nm, angle_tol_deg=angle_tol_deg
    )
    chains = chain_statistics(memb)
    stats = size_distribution(chains)
    fit = fit_kinetics(chains, kernel_exponent=kernel_exponent)
    result = {
        "store": str(store),
        "shape": shape,
        "kernel_exponent": kernel_exponent,
        **fit,
        "stats": stats.to_dict(orient="list"),
    }
    with atomic_path(out_dir, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "assembly.json").write_text(json.dumps(result, indent=1, default=float))
        memb.to_csv(tmp / "chains.csv", index=False)
        stats.to_csv(tmp / "stats.csv", index=False)
        import matplotlib.pyplot as plt

        fig = plot_assembly(stats, fit, chains, tmp / "assembly.png")
        plt.close(fig)
    logger.info("assembly: best law %s", fit["best"])
    return result
