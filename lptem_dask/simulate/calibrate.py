"""Calibrate the simulator to real frames: noise level, MTF, background statistics.

Method (per frame): find dark (or bright) particles with a smoothed residual
threshold, grow them, and estimate the smooth background ``B`` by normalised
Gaussian convolution over the remaining pixels. The residual ``R = frame - B``
on background pixels gives the noise level and, through
:func:`~lptem_dask.simulate.optics.mtf_from_noise`, the detector MTF. For
shot-noise-limited frames the white (pre-MTF) variance equals ``gain * mean``,
which gives the effective gain and the electron count. ``B`` gives the
illumination gradient (a fitted plane) and the smooth liquid-thickness field
(relative std times the liquid mean free path, and its correlation length).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..errors import InputError
from .config import SimulationConfig, load_simulation_config
from .optics import _mtf_and_white_level, measure_cnr, mtf_radial, noise_power_spectrum

logger = logging.getLogger(__name__)

__all__ = ["CalibrationResult", "calibrate_to", "background_residual", "residual_nps"]


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate_to` measured, and the calibrated configuration.

    Attributes
    ----------
    mean_counts : float
        Mean background intensity (input units, offset removed by the caller).
    noise_std_counts : float
        Std of the shot noise after the detector (input units):
        ``white_noise_std * sqrt(<MTF^2>)``.
    residual_std_counts : float
        Std of the background residual (noise plus leftover structure).
    white_noise_std_counts : float
        Std of the noise before the MTF: the square root of the noise power
        spectrum extrapolated to zero frequency.
    noise_std_factor : float
        ``sqrt(<MTF^2>)`` of the measured MTF.
    gain_counts_per_e : float
        ``white variance / mean`` (shot-noise-limited detector).
    electrons_per_px : float
        Mean detected electrons per background pixel (after attenuation).
    mtf_freq, mtf : ndarray
        Measured radial MTF (cycles/px).
    illumination_gradient : float
        Relative change of the smooth background across the field (plane fit).
    background_rel_std : float
        Relative std of the smooth background after removing the plane.
    liquid_variation_nm : float
        ``background_rel_std * liquid_mfp_nm``.
    liquid_correlation_px : float
        Correlation length of the smooth background (Gaussian-field convention).
    cnr : float
        CNR of the particles (given ``mask``) or of the detected particles.
    particle_contrast : float
        ``1 - particle mean / background mean``.
    config : SimulationConfig
        ``base`` with these values put in (optics.mtf = "table").
    """

    mean_counts: float
    noise_std_counts: float
    residual_std_counts: float
    white_noise_std_counts: float
    noise_std_factor: float
    gain_counts_per_e: float
    electrons_per_px: float
    mtf_freq: np.ndarray
    mtf: np.ndarray
    illumination_gradient: float
    background_rel_std: float
    liquid_variation_nm: float
    liquid_correlation_px: float
    cnr: float
    particle_contrast: float
    config: SimulationConfig

    def summary(self) -> dict[str, Any]:
        """The scalar figures as a JSON-friendly dict."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("mtf_freq", "mtf", "config")
        }
        return {k: float(v) for k, v in d.items()}


def _gauss_fft(x: np.ndarray, sigma: float, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = x.shape
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    g = np.exp(-2.0 * np.pi**2 * sigma**2 * (fy * fy + fx * fx))
    return sfft.irfft2(sfft.rfft2(x, s=shape) * g, s=shape)[:ny, :nx]


def _norm_gauss(a: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian convolution ``G(a w) / G(w)`` (zero padding, via FFT)."""
    pad = int(np.ceil(4 * sigma))
    shape = (a.shape[0] + pad, a.shape[1] + pad)
    wf = w.astype(np.float64)
    num = _gauss_fft(a * wf, sigma, shape)
    den = _gauss_fft(wf, sigma, shape)
    return num / np.maximum(den, 1e-6)


def background_residual(
    frame: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    polarity: str = "dark",
    background_sigma_px: float = 16.0,
    grow_px: int = 4,
    threshold: float = 3.0,
    min_area_px: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split one frame into smooth background, residual noise and particle masks.

    Returns
    -------
    background : (y, x) float64, smooth background ``B``
    residual : (y, x) float64, ``frame - B``
    use : (y, x) bool, background pixels used (outside grown particles)
    particles : (y, x) bool, particle mask (given or detected)
    """
    a = np.asarray(frame, dtype=np.float64)
    sign = 1.0 if polarity == "dark" else -1.0
    if mask is None:
        B0 = _norm_gauss(a, np.ones(a.shape, dtype=bool), background_sigma_px)
        part = _detect(a - B0, sign, threshold, min_area_px)
        # one refinement with the particles removed from the background estimate
        B1 = _norm_gauss(a, ~ndimage.binary_dilation(part, iterations=grow_px), background_sigma_px)
        part = _detect(a - B1, sign, threshold, min_area_px)
    else:
        part = np.asarray(mask, dtype=bool)
    use = ~ndimage.binary_dilation(part, iterations=grow_px) if part.any() else np.ones_like(part)
    B = _norm_gauss(a, use, background_sigma_px)
    return B, a - B, use, part


def _detect(resid: np.ndarray, sign: float, threshold: float, min_area_px: int) -> np.ndarray:
    """Connected regions of the smoothed residual below -threshold robust stds.

    A high threshold avoids selecting dark noise blobs, which would bias the
    noise spectrum of the remaining background at low frequency.
    """
    Rs = ndimage.gaussian_filter(resid, 2.0) * sign
    s = 1.4826 * np.median(np.abs(Rs - np.median(Rs)))
    core = Rs < -threshold * s
    lab, n = ndimage.label(core)
    if n == 0:
        return core
    area = np.bincount(lab.ravel())
    keep = area >= min_area_px
    keep[0] = False
    # grow the kept cores to the half-threshold outline
    seeds = keep[lab]
    low, _ = ndimage.label(Rs < -0.5 * threshold * s)
    ids = np.unique(low[seeds])
    ids = ids[ids > 0]
    return np.isin(low, ids) | seeds


def _corr_length(field: np.ndarray, use: np.ndarray) -> float:
    f = np.where(use, field - field[use].mean(), 0.0)
    F = sfft.rfft2(f)
    ac = sfft.irfft2(np.abs(F) ** 2, s=f.shape)
    W = sfft.rfft2(use.astype(np.float64))
    wc = sfft.irfft2(np.abs(W) ** 2, s=f.shape)
    ac = ac / np.maximum(wc, 1.0)
    if ac[0, 0] <= 0:
        return float("nan")
    ac /= ac[0, 0]
    ny, nx = f.shape
    yy = np.minimum(np.arange(ny), ny - np.arange(ny))[:, None]
    xx = np.minimum(np.arange(nx), nx - np.arange(nx))[None, :]
    r = np.sqrt(yy * yy + xx * xx)
    rb = np.rint(r).astype(int)
    prof = np.bincount(rb.ravel(), weights=ac.ravel()) / np.maximum(np.bincount(rb.ravel()), 1)
    below = np.nonzero(prof < np.exp(-1.0))[0]
    r_e = float(below[0]) if below.size else float(min(ny, nx) / 2)
    return r_e / 2.0  # Gaussian-filtered field: autocorrelation exp(-r^2 / (4 l^2))


def calibrate_to(
    frames: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    base: SimulationConfig | str | None = None,
    pixel_size_nm: float | None = None,
    polarity: str = "dark",
    background_sigma_px: float = 16.0,
    n_mtf_points: int = 101,
    low_frequency: str = "linear",
) -> CalibrationResult:
    """Fit the simulator's noise level, MTF and background statistics to real frames.

    Parameters
    ----------
    frames : ndarray, (y, x) or (frame, y, x)
        Real frames in detector counts with any constant offset removed
        (e.g. ``raw - 32768``). Particles dark on bright (``polarity="dark"``).
    mask : ndarray of bool, optional
        Particle mask ((y, x) or like ``frames``); detected when omitted.
    base : SimulationConfig or preset name, optional
        Configuration whose particles and remaining settings are kept.
    pixel_size_nm : float, optional
        Pixel size of the frames (used for the dose); default: ``base``'s.
    polarity : {"dark", "bright"}
    background_sigma_px : float
        Smoothing scale of the background estimate, px.
    n_mtf_points : int
        Points of the calibrated MTF table (0 to 0.5 cycles/px).
    low_frequency : {"linear", "quadratic"}
        Extrapolation of the MTF below 0.05 cycles/px (see :func:`mtf_from_noise`).

    Returns
    -------
    CalibrationResult
        Figures (the MTF is kept up to 0.707 cycles/px: real detectors pass
        noise in the corners of the spectrum) and ``config``: ``base`` with optics ``mtf="table"``, gain,
        dose (so the background mean matches), no read/correlated noise, no
        quantisation, and the background field statistics.
    """
    a = np.asarray(frames, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape[1:]) < 40:
        raise InputError(
            f"`frames` must be (y, x) or (frame, y, x) with >= 40 px per side, got {np.shape(frames)}"
        )
    masks = None
    if mask is not None:
        masks = np.broadcast_to(np.asarray(mask, dtype=bool), a.shape)
    res, uses, Bs, parts = [], [], [], []
    for k in range(a.shape[0]):
        B, R, use, part = background_residual(
            a[k],
            mask=None if masks is None else masks[k],
            polarity=polarity,
            background_sigma_px=background_sigma_px,
        )
        res.append(R)
        uses.append(use)
        Bs.append(B)
        parts.append(part)
    R = np.stack(res)
    use = np.stack(uses)
    B = np.stack(Bs)
    part = np.stack(parts)
    freq, mtf, white_var = _mtf_and_white_level(
        R, mask=use, low_frequency=low_frequency, corners=True
    )
    mtf = np.clip(mtf, 0.0, None)
    ny, nx = a.shape[1:]
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    grid = np.sqrt(fy * fy + fx * fx)
    m2 = mtf_radial(grid, "table", table_freq=tuple(freq), table_values=tuple(mtf))
    kf = float(np.sqrt(np.mean(m2**2)))
    noise_var = float(np.mean([R[i][use[i]].var() for i in range(len(R))]))
    mean = float(np.mean([a[i][use[i]].mean() for i in range(len(a))]))
    if mean <= 0:
        raise InputError(
            f"background mean of `frames` is {mean:.4g} <= 0; subtract only the constant offset "
            "(e.g. raw - 32768) so that intensities are proportional to electrons"
        )
    # the white level comes from the extrapolated zero-frequency noise power, not from the
    # residual variance, which also holds leftover low-frequency background structure
    gain = white_var / mean
    n_e = mean / gain
    # background structure
    Brel = B / mean
    yy, xx = np.mgrid[0:ny, 0:nx]
    yv = (yy - (ny - 1) / 2.0) / ny
    xv = (xx - (nx - 1) / 2.0) / nx
    grads, rels, corrs = [], [], []
    for i in range(len(Brel)):
        u = use[i]
        A = np.c_[np.ones(u.sum()), yv[u], xv[u]]
        coef, *_ = np.linalg.lstsq(A, Brel[i][u], rcond=None)
        grads.append(float(np.hypot(coef[1], coef[2]) / max(coef[0], 1e-12)))
        resid = Brel[i] - (coef[0] + coef[1] * yv + coef[2] * xv)
        rels.append(float(resid[u].std()))
        corrs.append(_corr_length(resid, u))
    cnrs, contrasts = [], []
    for i in range(len(a)):
        if part[i].any():
            cnrs.append(measure_cnr(a[i], part[i], margin_px=2))
            contrasts.append(1.0 - a[i][part[i]].mean() / a[i][use[i]].mean())
    cnr = float(np.nanmean(cnrs)) if cnrs else float("nan")
    contrast = float(np.mean(contrasts)) if contrasts else float("nan")
    cfg = load_simulation_config(base)
    o = cfg.optics
    ps = float(pixel_size_nm) if pixel_size_nm is not None else _mid(o.pixel_size_nm)
    liq = _mid(o.liquid_thickness_nm)
    T_bg = np.exp(-(liq / o.liquid_mfp_nm + 2 * o.sin_thickness_nm / o.sin_mfp_nm))
    dose = n_e / T_bg / (100.0 * ps * ps * o.exposure_s)
    idx = np.unique(np.linspace(0, len(freq) - 1, min(n_mtf_points, len(freq))).astype(int))
    new_optics = o.model_copy(
        update={
            "image_size_px": int(min(ny, nx)),
            "pixel_size_nm": ps,
            "liquid_thickness_nm": liq,
            "dose_rate_e_per_A2_s": float(dose),
            "gain_counts_per_e": float(gain),
            "read_noise_e": 0.0,
            "correlated_noise_rel": 0.0,
            "mtf": "table",
            "mtf_table_freq": tuple(float(f) for f in freq[idx]),
            "mtf_table_values": tuple(float(v) for v in mtf[idx]),
            "quantisation": "none",
            "offset_counts": 0.0,
            "drift_rel": 0.0,
        }
    )
    rel = float(np.mean(rels))
    corr = float(np.nanmean(corrs)) if np.isfinite(corrs).any() else 64.0
    new_bg = cfg.background.model_copy(
        update={
            "liquid_variation_nm": rel * o.liquid_mfp_nm,
            "liquid_correlation_px": max(corr, 1.0),
            "illumination_gradient": float(np.mean(grads)),
        }
    )
    new_cfg = SimulationConfig.model_validate(
        {
            **cfg.model_dump(),
            "optics": new_optics.model_dump(),
            "background": new_bg.model_dump(),
            "target_cnr": None,
        }
    )
    return CalibrationResult(
        mean_counts=mean,
        noise_std_counts=float(np.sqrt(white_var) * kf),
        residual_std_counts=float(np.sqrt(noise_var)),
        white_noise_std_counts=float(np.sqrt(white_var)),
        noise_std_factor=kf,
        gain_counts_per_e=float(gain),
        electrons_per_px=float(n_e),
        mtf_freq=freq,
        mtf=mtf,
        illumination_gradient=float(np.mean(grads)),
        background_rel_std=rel,
        liquid_variation_nm=rel * o.liquid_mfp_nm,
        liquid_correlation_px=corr,
        cnr=cnr,
        particle_contrast=contrast,
        config=new_cfg,
    )


def _mid(spec) -> float:
    if isinstance(spec, tuple):
        return float(np.sqrt(spec[0] * spec[1]))
    return float(spec)


def residual_nps(
    frame: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    background_sigma_px: float = 16.0,
    corners: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise power spectrum of one frame's background residual (see :func:`calibrate_to`)."""
    _, R, use, _ = background_residual(frame, mask=mask, background_sigma_px=background_sigma_px)
    return noise_power_spectrum(R, mask=use, corners=corners)
