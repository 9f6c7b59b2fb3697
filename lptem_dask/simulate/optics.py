"""Image formation: dose, Beer-Lambert attenuation, noise, detector MTF, blur.

Conventions: frequencies in cycles per pixel; MTFs are radial (isotropic),
normalised to 1 at zero frequency and zero beyond Nyquist (0.5 cycles/px).

References
----------
Yao, L. et al. ACS Cent. Sci. 6, 1421 (2020); simulator chenlabUIUC/simulatedLPTEM.
Egerton, R. F. Electron Energy-Loss Spectroscopy in the Electron Microscope
(log-ratio thickness, inelastic mean free paths).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..errors import InputError

__all__ = [
    "MTF_TABLES",
    "electrons_per_pixel",
    "background_transmission",
    "mtf_radial",
    "mtf_2d",
    "noise_std_factor",
    "mtf_squared_kernel_rfft",
    "apply_mtf",
    "mtf_from_noise",
    "noise_power_spectrum",
    "disk_kernel",
    "path_kernel",
    "brownian_path",
    "measure_cnr",
    "measure_snr",
    "background_region",
]

#: Radial values of the authors' measured MTFs (PHYSICS.md); (0, 1) added,
#: linear in between, zero beyond 0.5 cycles/px.
MTF_TABLES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "camera512": ((0.0, 0.05, 0.10, 0.25, 0.50), (1.0, 0.90, 0.82, 0.52, 0.28)),
    "camera1024": ((0.0, 0.05, 0.10, 0.25, 0.50), (1.0, 0.75, 0.50, 0.17, 0.09)),
    "rods": ((0.0, 0.05, 0.10, 0.25, 0.50), (1.0, 0.87, 0.64, 0.31, 0.15)),
}


def electrons_per_pixel(
    *, dose_rate_e_per_A2_s: float, pixel_size_nm: float, exposure_s: float
) -> float:
    """Electrons per pixel per frame before attenuation.

    ``N_e = dose_rate [e/Å²/s] * 100 [Å²/nm²] * pixel_size_nm² * exposure_s``.

    >>> round(electrons_per_pixel(dose_rate_e_per_A2_s=100, pixel_size_nm=2.09, exposure_s=0.1))
    4368
    """
    return float(dose_rate_e_per_A2_s) * 100.0 * float(pixel_size_nm) ** 2 * float(exposure_s)


def background_transmission(
    *, liquid_thickness_nm: float, liquid_mfp_nm: float, sin_thickness_nm: float, sin_mfp_nm: float
) -> float:
    """Beer-Lambert transmission of liquid plus two SiN windows, no particle."""
    return float(
        np.exp(-(liquid_thickness_nm / liquid_mfp_nm + 2.0 * sin_thickness_nm / sin_mfp_nm))
    )


def mtf_radial(
    freq,
    kind: str = "parametric",
    *,
    cutoff_cycles_per_px: float = 0.25,
    table_freq=(),
    table_values=(),
) -> np.ndarray:
    """Radial MTF at frequencies ``freq`` (cycles/px); zero beyond 0.5.

    Kinds: ``"none"`` (1 up to Nyquist... and beyond: no filtering),
    ``"parametric"`` (``1 / (1 + (f/fc)^2)``), the measured tables
    ``"camera512"``, ``"camera1024"``, ``"rods"`` (:data:`MTF_TABLES`), and
    ``"table"`` (``table_freq``/``table_values``, linear, (0, 1) assumed;
    a table reaching beyond 0.5 is used up to its last frequency).
    """
    f = np.asarray(freq, dtype=np.float64)
    if kind == "none":
        return np.ones_like(f)
    if kind == "parametric":
        m = 1.0 / (1.0 + (f / cutoff_cycles_per_px) ** 2)
    elif kind in MTF_TABLES or kind == "table":
        tf, tv = MTF_TABLES[kind] if kind in MTF_TABLES else (table_freq, table_values)
        tf = np.asarray(tf, dtype=np.float64)
        tv = np.asarray(tv, dtype=np.float64)
        if tf[0] > 0:
            tf = np.concatenate([[0.0], tf])
            tv = np.concatenate([[1.0], tv])
        m = np.interp(f, tf, tv, right=0.0)
        if tf[-1] > 0.5:  # a table that extends into the corners of the spectrum
            return np.where(f <= tf[-1] + 1e-12, m, 0.0)
    else:
        raise InputError(
            f"`mtf` must be one of none, parametric, camera512, camera1024, rods, table; got {kind!r}"
        )
    return np.where(f <= 0.5 + 1e-12, m, 0.0)


def _freq_grid(shape: tuple[int, int], rfft: bool) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = (np.fft.rfftfreq(shape[1]) if rfft else np.fft.fftfreq(shape[1]))[None, :]
    return np.sqrt(fy * fy + fx * fx)


@functools.lru_cache(maxsize=64)
def _mtf_cached(shape, kind, cutoff, table_freq, table_values, rfft, dtype="float64"):
    m = mtf_radial(
        _freq_grid(shape, rfft),
        kind,
        cutoff_cycles_per_px=cutoff,
        table_freq=table_freq,
        table_values=table_values,
    ).astype(dtype)
    m.setflags(write=False)
    return m


def mtf_2d(
    shape: tuple[int, int],
    kind: str = "parametric",
    *,
    cutoff_cycles_per_px: float = 0.25,
    table_freq=(),
    table_values=(),
    rfft: bool = True,
    dtype: str = "float64",
) -> np.ndarray:
    """The MTF on the (r)FFT frequency grid of an image of ``shape`` (cached, read-only)."""
    return _mtf_cached(
        tuple(int(s) for s in shape),
        kind,
        float(cutoff_cycles_per_px),
        tuple(float(x) for x in table_freq),
        tuple(float(x) for x in table_values),
        bool(rfft),
        str(np.dtype(dtype)),
    )


@functools.lru_cache(maxsize=32)
def _h2_cached(shape, kind, cutoff, table_freq, table_values):
    mtf_r = _mtf_cached(shape, kind, cutoff, table_freq, table_values, True)
    # the radial MTF is real and even: its point-spread kernel is irfft2 of the half spectrum
    h = sfft.irfft2(mtf_r, s=shape)
    h2 = h * h
    out = sfft.rfft2(h2).astype(np.complex64)
    out.setflags(write=False)
    return out, float(h2.sum())  # Parseval: sum h^2 = mean of MTF^2 over the full grid


def mtf_squared_kernel_rfft(
    shape: tuple[int, int],
    kind: str,
    *,
    cutoff_cycles_per_px: float = 0.25,
    table_freq=(),
    table_values=(),
) -> tuple[np.ndarray, float]:
    """rFFT of ``h**2`` (``h`` the MTF's point-spread kernel) and ``<MTF^2>`` (cached).

    Convolving a Poisson mean map with ``h**2`` gives the exact per-pixel
    variance of the MTF-filtered shot noise.
    """
    return _h2_cached(
        tuple(int(s) for s in shape),
        kind,
        float(cutoff_cycles_per_px),
        tuple(float(x) for x in table_freq),
        tuple(float(x) for x in table_values),
    )


def noise_std_factor(mtf_full: np.ndarray) -> float:
    """``sqrt(<MTF^2>)`` over a full FFT grid: the factor on white-noise std."""
    return float(np.sqrt(np.mean(np.asarray(mtf_full, dtype=np.float64) ** 2)))


def apply_mtf(image: np.ndarray, mtf_rfft: np.ndarray) -> np.ndarray:
    """Multiply the image's spectrum by the MTF (rfft grid).

    The transform runs in the precision of ``image`` (float32 is twice as
    fast; pass a float32 MTF with it to stay in single precision).
    """
    return sfft.irfft2(sfft.rfft2(image) * mtf_rfft, s=image.shape)


def noise_power_spectrum(
    frames: np.ndarray, *, mask: np.ndarray | None = None, corners: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Rotationally averaged noise power spectrum of zero-mean residuals.

    Without ``mask``: the periodogram ``|FFT|^2 / n_pixels``, averaged over
    frames and 1-px rings. With ``mask``: the masked autocovariance
    ``C(r) = sum w(x) w(x+r) n(x) n(x+r) / sum w(x) w(x+r)`` (unbiased by the
    holes, unlike the periodogram of ``w n``, which leaks power from high to
    low frequencies), tapered by a Hann window to lags < N/4, then Fourier
    transformed. Both give ``s2`` at every frequency for white noise of
    variance ``s2``.

    Parameters
    ----------
    frames : ndarray, (y, x) or (frame, y, x)
        Featureless background (or residuals after removing the background).
    mask : ndarray of bool, same (y, x) or full shape, optional
        True where the pixel is background to use.
    corners : bool
        Also return the bins beyond Nyquist along the diagonals, up to
        ``sqrt(2)/2`` cycles/px (the corners of the 2-D spectrum).

    Returns
    -------
    freq : ndarray (n,)
        Bin centres, cycles/px, ``k / N`` for ``k = 0 .. N/2`` (or up to
        ``N/sqrt(2)`` with ``corners``; 1-px radial bins, N the smaller side).
    nps : ndarray (n,)
        Noise power per unit bandwidth (variance = its mean over the 2-D
        frequency grid).
    """
    a = np.asarray(frames, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"`frames` must be (y, x) or (frame, y, x), got shape {a.shape}")
    ny, nx = a.shape[1:]
    n = min(ny, nx)
    if mask is None:
        power = np.zeros((ny, nx))
        for k in range(a.shape[0]):
            r = a[k] - a[k].mean()
            power += np.abs(sfft.fft2(r)) ** 2 / (ny * nx)
        power /= a.shape[0]
        f = _freq_grid((ny, nx), rfft=False)
        scale = n
    else:
        w = np.broadcast_to(np.asarray(mask, dtype=bool), a.shape).astype(np.float64)
        py, px = 2 * ny, 2 * nx  # zero padding: no circular wrap of lags
        num_f = np.zeros((py, px // 2 + 1))
        den_f = np.zeros((py, px // 2 + 1))
        for k in range(a.shape[0]):
            wk = w[k]
            if wk.sum() <= 0:
                continue
            r = (a[k] - (a[k] * wk).sum() / wk.sum()) * wk
            num_f += np.abs(sfft.rfft2(r, s=(py, px))) ** 2
            den_f += np.abs(sfft.rfft2(wk, s=(py, px))) ** 2
        num = sfft.irfft2(num_f, s=(py, px))
        den = sfft.irfft2(den_f, s=(py, px))
        if den[0, 0] <= 0:
            raise InputError("`mask` selects no pixel; pass True where the background is")
        ok = den > 0.05 * den[0, 0]
        C = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
        ly = np.minimum(np.arange(py), py - np.arange(py))[:, None]
        lx = np.minimum(np.arange(px), px - np.arange(px))[None, :]
        rmax = n / 4.0
        rr = np.sqrt(ly * ly + lx * lx) / rmax
        C *= np.where(rr < 1.0, 0.5 * (1.0 + np.cos(np.pi * rr)), 0.0)
        power = sfft.fft2(C).real
        f = _freq_grid((py, px), rfft=False)
        scale = n
    kbin = np.rint(f * scale).astype(np.int64)
    nb = int(np.floor(n / np.sqrt(2.0))) + 1 if corners else n // 2 + 1
    sel = kbin < nb
    sums = np.bincount(kbin[sel], weights=power[sel], minlength=nb)
    cnt = np.bincount(kbin[sel], minlength=nb)
    freq = np.arange(nb) / n
    return freq, sums / np.maximum(cnt, 1)


def mtf_from_noise(
    frames: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    low_frequency: str = "linear",
    corners: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Measure a detector MTF from featureless background (the authors' method).

    The rotationally averaged noise power spectrum (1-px radial bins) is
    square-rooted; values below 0.05 cycles/px are replaced by a line fitted
    over 0.05-0.10 and extrapolated to zero frequency; the curve is normalised
    to 1 at zero frequency. Valid for shot noise that is white before the
    detector.

    Parameters
    ----------
    frames : ndarray, (y, x) or (frame, y, x)
        Background frames or residuals, any intensity unit.
    mask : ndarray of bool, optional
        True for background pixels to use (see :func:`noise_power_spectrum`).
    low_frequency : {"linear", "quadratic"}
        "linear" (the authors'): a line ``a + b f`` fitted over 0.05-0.10;
        "quadratic": ``a + b f^2`` (even in f, as the MTF of a symmetric
        point-spread function; less biased for smooth MTFs).
    corners : bool
        Keep the radial MTF beyond Nyquist (the diagonal corners of the 2-D
        spectrum, up to 0.707 cycles/px) instead of the authors' zero there;
        needed to reproduce the total noise variance of real frames.

    Returns
    -------
    freq : ndarray (n,), cycles/px, 0 to 0.5
    mtf : ndarray (n,), 1 at zero frequency
    """
    freq, mtf, _ = _mtf_and_white_level(
        frames, mask=mask, low_frequency=low_frequency, corners=corners
    )
    return freq, mtf


def _mtf_and_white_level(frames, *, mask, low_frequency, corners):
    """MTF as :func:`mtf_from_noise`, and the white noise power it implies (NPS at f = 0)."""
    freq, nps = noise_power_spectrum(frames, mask=mask, corners=corners)
    amp = np.sqrt(np.maximum(nps, 0.0))
    fit = (freq >= 0.05) & (freq <= 0.10)
    if fit.sum() < 2:
        raise InputError(
            f"`frames` too small to measure an MTF: need >= 40 px per side, got {np.shape(frames)}"
        )
    if low_frequency not in ("linear", "quadratic"):
        raise InputError(f"`low_frequency` must be 'linear' or 'quadratic', got {low_frequency!r}")
    x = freq if low_frequency == "linear" else freq**2
    slope, icpt = np.polyfit(x[fit], amp[fit], 1)
    low = freq < 0.05
    amp = amp.copy()
    amp[low] = icpt + slope * x[low]
    if icpt <= 0:
        raise InputError("noise power spectrum extrapolates to <= 0 at zero frequency")
    return freq, amp / icpt, float(icpt) ** 2


def disk_kernel(radius_px: float, *, supersample: int = 8) -> np.ndarray:
    """Normalised disk (defocus "bokeh") kernel with anti-aliased edge, odd size."""
    r = float(radius_px)
    if r <= 0:
        return np.ones((1, 1))
    R = int(np.ceil(r))
    o = (np.arange(supersample) + 0.5) / supersample - 0.5
    g = np.arange(-R, R + 1, dtype=np.float64)
    yy = (g[:, None, None, None] + o[None, None, :, None]) ** 2
    xx = (g[None, :, None, None] + o[None, None, None, :]) ** 2
    k = ((yy + xx) <= r * r).mean(axis=(2, 3))
    if k.sum() <= 0:  # radius below the sub-sampling: no blur
        return np.ones((1, 1))
    return k / k.sum()


def brownian_path(
    n_steps: int,
    *,
    diffusion_nm2_s: float,
    exposure_s: float,
    pixel_size_nm: float,
    rng: np.random.Generator,
    centre: bool = True,
) -> np.ndarray:
    """A 2-D Brownian path sampled at ``n_steps`` instants over the exposure.

    Steps are Gaussian with variance ``2 D dt`` per axis, ``dt = exposure_s /
    n_steps``, so the path's MSD at lag tau is ``4 D tau``. With ``centre`` the
    time-averaged position is subtracted (the particle's truth centre is its
    mean position during the exposure).

    Returns
    -------
    ndarray (n_steps, 2) float64: (dy, dx) in px.
    """
    dt = exposure_s / n_steps
    sd = np.sqrt(2.0 * diffusion_nm2_s * dt) / pixel_size_nm
    steps = rng.standard_normal((n_steps, 2)) * sd
    steps[0] = 0.0
    path = np.cumsum(steps, axis=0)
    if centre:
        path -= path.mean(axis=0)
    return path


def path_kernel(path_px: np.ndarray) -> np.ndarray:
    """Kernel averaging an image along a path of (dy, dx) offsets (bilinear splat).

    Convolving a thickness map with it gives the map averaged over the
    positions of the path. Odd size, centre = zero offset.
    """
    p = np.asarray(path_px, dtype=np.float64).reshape(-1, 2)
    R = int(np.ceil(np.abs(p).max())) + 1 if p.size else 1
    size = 2 * R + 1
    k = np.zeros((size, size))
    y = p[:, 0] + R
    x = p[:, 1] + R
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy = y - y0
    fx = x - x0
    for oy, ox, wt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (1, 0, fy * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 1, fy * fx),
    ):
        np.add.at(k, (y0 + oy, x0 + ox), wt)
    return k / k.sum()


def background_region(
    mask: np.ndarray, *, margin_px: int = 2, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Background pixels for CNR: farther than ``margin_px`` from the mask, outside ``exclude``.

    The distance is the Chebyshev (chessboard) distance: the mask is grown by a
    ``(2 margin_px + 1)`` square.
    """
    m = np.asarray(mask, dtype=bool)
    if margin_px > 0 and m.any():
        m = ndimage.maximum_filter(m, size=2 * int(margin_px) + 1, mode="constant")
    bg = ~m
    if exclude is not None:
        bg &= ~np.asarray(exclude, dtype=bool)
    return bg


def measure_cnr(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    margin_px: int = 2,
    exclude: np.ndarray | None = None,
    polarity: str = "dark",
    background: np.ndarray | None = None,
) -> float:
    """Per-pixel contrast-to-noise ratio of particles on the final image.

    ``CNR = (background mean - particle mean) / background std`` (``polarity``
    "dark"; "bright" flips the sign of the contrast). Particle pixels are
    ``mask``; background pixels lie outside ``mask`` grown by ``margin_px`` and
    outside ``exclude`` (e.g. ghost particles' footprints), or are given
    directly as ``background``.

    Parameters
    ----------
    image : ndarray (y, x)
    mask : ndarray of bool (y, x)
    margin_px : int
    exclude : ndarray of bool (y, x), optional
    polarity : {"dark", "bright"}

    Returns
    -------
    float (NaN when there are no particle or no background pixels)
    """
    img = np.asarray(image, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if img.shape != m.shape:
        raise InputError(f"`image` {img.shape} and `mask` {m.shape} must have the same shape")
    bg = (
        background_region(m, margin_px=margin_px, exclude=exclude)
        if background is None
        else np.asarray(background, dtype=bool)
    )
    if not m.any() or not bg.any():
        return float("nan")
    b = img[bg]
    c = b.mean() - img[m].mean()
    if polarity == "bright":
        c = -c
    sd = b.std()
    return float(c / sd) if sd > 0 else float(np.copysign(np.inf, c) if c else np.nan)


def measure_snr(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    margin_px: int = 2,
    exclude: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> float:
    """The authors' SNR: background mean / background std (not a difficulty measure)."""
    img = np.asarray(image, dtype=np.float64)
    if background is not None:
        bg = np.asarray(background, dtype=bool)
    else:
        m = np.zeros(img.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
        bg = background_region(m, margin_px=margin_px, exclude=exclude)
    if not bg.any():
        return float("nan")
    b = img[bg]
    sd = b.std()
    return float(b.mean() / sd) if sd > 0 else float("inf")
